"""Speed and recall of the faiss cosine indexes of :mod:`skucdr.neighbors`.

Exact ``Flat`` search against the approximate ``HNSW32`` and ``IVF1024,Flat`` indexes on
a synthetic gallery of clustered vectors (100,000 x 128 by default, 1,000 Gaussian
clusters, 10,000 queries). Prints build and search times, the search speed-up over
``Flat`` and recall@10 against the exact ``Flat`` neighbours. ``--noise`` sets how much
clusters overlap (larger is harder for the approximate indexes).

Run::

    python benchmarks/neighbors_speed.py
    python benchmarks/neighbors_speed.py --n-gallery 20000 --n-queries 2000 --n-jobs 2
"""

import argparse
import time

import numpy as np

from skucdr.neighbors import FaissCosineIndex


def make_data(n_gallery, n_queries, n_features, n_clusters, noise, seed=0):
    """Clustered Gaussian data: embeddings of real images are clustered, not uniform."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, n_features)).astype(np.float32)
    n = n_gallery + n_queries
    X = centers[rng.integers(n_clusters, size=n)]
    X += noise * rng.normal(size=(n, n_features)).astype(np.float32)
    return X[:n_gallery], X[n_gallery:]


def recall_at_k(indices, exact):
    """Fraction of the exact top-k neighbours that the approximate top-k contains."""
    hits = (indices[:, :, None] == exact[:, None, :]).any(axis=2)
    return hits.mean()


def run(spec, knobs, gallery, queries, k, n_jobs):
    index = FaissCosineIndex(spec, n_jobs=n_jobs, **knobs)
    t0 = time.perf_counter()
    index.fit(gallery)
    t1 = time.perf_counter()
    _, indices = index.search(queries, k)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, indices


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-gallery", type=int, default=100_000)
    parser.add_argument("--n-queries", type=int, default=10_000)
    parser.add_argument("--n-features", type=int, default=128)
    parser.add_argument("--n-clusters", type=int, default=1_000)
    parser.add_argument("--noise", type=float, default=1.5, help="within-cluster spread")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--n-jobs", type=int, default=None)
    args = parser.parse_args(argv)

    gallery, queries = make_data(
        args.n_gallery, args.n_queries, args.n_features, args.n_clusters, args.noise
    )
    configs = [
        ("Flat", {}),
        ("HNSW32", {"ef_search": args.ef_search}),
        ("IVF1024,Flat", {"nprobe": args.nprobe}),
    ]
    print(
        f"gallery {args.n_gallery} x {args.n_features}, {args.n_queries} queries, "
        f"k={args.k}, n_jobs={args.n_jobs}"
    )
    header = f"{'index':<14}{'knobs':<16}{'build s':>9}{'search s':>10}"
    header += f"{'search speed-up':>17}{'recall@' + str(args.k):>11}"
    print(header)
    flat_search, exact = None, None
    for spec, knobs in configs:
        build, search, indices = run(spec, knobs, gallery, queries, args.k, args.n_jobs)
        if exact is None:
            flat_search, exact = search, indices
        knob_text = ",".join(f"{key}={value}" for key, value in knobs.items()) or "-"
        print(
            f"{spec:<14}{knob_text:<16}{build:>9.2f}{search:>10.2f}"
            f"{flat_search / search:>16.1f}x{recall_at_k(indices, exact):>11.3f}"
        )


if __name__ == "__main__":
    main()
