"""``skucdr query MODEL IMAGE...``: the nearest gallery files of query images."""

from __future__ import annotations

from pathlib import Path

from .common import as_fitted_type, positive_int
from .figures import save_hit_grid
from .model_dir import load_model

__all__ = ["add_parser", "run_query"]


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
        sample_domain = as_fitted_type(retriever, [query_domain] * len(X))
    gallery = None if args.gallery_domain is None else as_fitted_type(
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


def add_parser(sub):
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
    query.add_argument("-k", type=positive_int, default=5, help="hits per query (default: 5)")
    query.add_argument("--figure", default=None, help="PNG file of queries and hits")
    query.set_defaults(run=run_query)
