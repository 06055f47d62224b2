"""``skucdr evaluate MODEL ROOT``: mAP@All and P@k of the model on labelled folders,
and with ``--open-set`` the accuracy of its open-set detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import add_workers_option, as_fitted_type, scan_folders
from .model_dir import load_model

__all__ = ["add_parser", "run_evaluate"]


def run_evaluate(args):
    from skucdr.datasets import ImageFileDataset
    from skucdr.metrics import retrieval_report

    bundle = load_model(args.model)
    retriever = bundle["retriever"]
    folders = scan_folders(args.root, args.domains, labelled=True)
    paths, sample_domain, y = folders.flat()
    verbose, retriever.verbose = retriever.verbose, 0 if args.quiet else 1  # a progress bar
    # decoded a batch at a time by --workers threads, as fit and index read folders
    Z = retriever.transform(
        ImageFileDataset(paths, bundle["image_size"], num_workers=args.workers),
        sample_domain=as_fitted_type(retriever, sample_domain))
    retriever.verbose = verbose
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
    fitted_domains = as_fitted_type(retriever, domains)
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


def add_parser(sub):
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
    add_workers_option(evaluate)
    evaluate.set_defaults(run=run_evaluate)
