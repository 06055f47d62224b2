"""``skucdr index MODEL ROOT``: make image folders the model's gallery (the catalogue
to search), replacing it or, with ``--append``, after it; writers take the model's lock."""

from __future__ import annotations

import numpy as np

from .common import add_workers_option, as_fitted_type, scan_folders
from .model_dir import load_model, locked_model, save_model

__all__ = ["add_parser", "run_index"]


def run_index(args):
    load_model(args.model)  # a clear error before the catalogue is scanned
    folders = scan_folders(args.root, args.domains)
    with locked_model(args.model):  # a second writer waits, then appends to our result
        _index_locked(args, folders)


def _index_locked(args, folders):
    from skucdr.datasets import ImageFileDataset

    bundle = load_model(args.model)
    retriever = bundle["retriever"]
    paths, sample_domain, _ = folders.flat()
    sample_domain = as_fitted_type(retriever, sample_domain)
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


def add_parser(sub):
    index = sub.add_parser(
        "index", help="make image folders the model's gallery (the catalogue to search)",
        description="Embed ROOT/<domain>/<image> with the model, batch by batch, and save "
                    "them as its gallery (replacing it, or after it with --append).")
    index.add_argument("model", help="model directory written by `skucdr fit`")
    index.add_argument("root", help="folder holding one subfolder per catalogue domain")
    index.add_argument("--domains", nargs="+", default=None, metavar="DOMAIN")
    index.add_argument("--append", action="store_true",
                       help="add to the current gallery instead of replacing it")
    add_workers_option(index)
    index.set_defaults(run=run_index)
