"""Speed of the retrieval metrics of :mod:`skucdr.metrics` against a naive loop.

Times :func:`~skucdr.metrics.mean_average_precision` (mAP@All, both variants) and
:func:`~skucdr.metrics.precision_at_k` on synthetic clustered embeddings (10,000 queries x
10,000 gallery items, 128-d, 65 classes as in Office-Home by default), and a naive
per-query NumPy loop (one similarity row, one stable ``argsort`` and one ``cumsum`` per
query) in the same run. Prints wall-clock and CPU times, the speed-up and the difference
between the two mAP values (~1e-7: same definition, float32 similarities).

Run::

    python benchmarks/metrics_speed.py
    python benchmarks/metrics_speed.py --n-queries 2000 --n-gallery 2000
"""

import argparse
import json
import time

import numpy as np

from skucdr.metrics import mean_average_precision, precision_at_k


def make_data(n_queries, n_gallery, n_features, n_classes, noise, seed=0):
    """Clustered Gaussian embeddings (float32), one cluster per class."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, n_features)).astype(np.float32)
    qy = rng.integers(n_classes, size=n_queries)
    gy = rng.integers(n_classes, size=n_gallery)
    Q = centers[qy] + noise * rng.normal(size=(n_queries, n_features)).astype(np.float32)
    G = centers[gy] + noise * rng.normal(size=(n_gallery, n_features)).astype(np.float32)
    return Q, qy, G, gy


def naive_map(Q, qy, G, gy):
    """Per-query loop: the usual way mAP@All is written (e.g. CoDA's eval_AP_inner)."""
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    G = G / np.linalg.norm(G, axis=1, keepdims=True)
    aps = []
    for q, label in zip(Q, qy):
        relevant = gy[np.argsort(-(G @ q), kind="stable")] == label
        n_relevant = relevant.sum()
        if n_relevant == 0:
            continue
        hits = np.cumsum(relevant)
        aps.append(np.sum(hits[relevant] / (np.flatnonzero(relevant) + 1)) / n_relevant)
    return float(np.mean(aps))


def timed(fn, repeat):
    """Best wall-clock and process CPU time (all threads) of ``repeat`` calls, and the value.

    On a shared machine the CPU time is the steadier number: wall time grows with the
    load that other processes put on the cores.
    """
    best_wall = best_cpu = np.inf
    value = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-queries", type=int, default=10_000)
    parser.add_argument("--n-gallery", type=int, default=10_000)
    parser.add_argument("--n-features", type=int, default=128)
    parser.add_argument("--n-classes", type=int, default=65)
    parser.add_argument("--noise", type=float, default=2.0, help="within-class spread")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    Q, qy, G, gy = make_data(
        args.n_queries, args.n_gallery, args.n_features, args.n_classes, args.noise
    )
    print(
        f"{args.n_queries} queries x {args.n_gallery} gallery, {args.n_features}-d, "
        f"{args.n_classes} classes"
    )
    results = {
        "n_queries": args.n_queries,
        "n_gallery": args.n_gallery,
        "n_features": args.n_features,
        "n_classes": args.n_classes,
    }
    cases = {
        "mAP@All (mean_average_precision)": lambda: mean_average_precision(Q, qy, G, gy),
        "mAP@All class, interpolated (CoDA)": lambda: mean_average_precision(
            Q, qy, G, gy, average="class", interpolated=True
        ),
        "P@1/5/15 (precision_at_k)": lambda: precision_at_k(Q, qy, G, gy),
        "naive per-query loop (mAP@All)": lambda: naive_map(Q, qy, G, gy),
    }
    timings = {name: timed(fn, args.repeat) for name, fn in cases.items()}
    width = max(map(len, timings))
    print(f"{'':<{width}}  {'wall':>8}  {'cpu':>8}   value")
    for name, (wall, cpu, value) in timings.items():
        shown = (
            ", ".join(f"P@{k}={v:.4f}" for k, v in value.items())
            if isinstance(value, dict)
            else f"{value:.6f}"
        )
        print(f"{name:<{width}}  {wall:7.2f}s  {cpu:7.2f}s   {shown}")
    fast_wall, fast_cpu, fast_value = timings["mAP@All (mean_average_precision)"]
    naive_wall, naive_cpu, naive_value = timings["naive per-query loop (mAP@All)"]
    print(
        f"speed-up of mean_average_precision over the naive loop: {naive_wall / fast_wall:.1f}x "
        f"wall, {naive_cpu / fast_cpu:.1f}x cpu"
    )
    print(f"|mAP@All - naive| = {abs(fast_value - naive_value):.2e}")
    results["cases"] = {
        name: {"wall_s": wall, "cpu_s": cpu, "value": value}
        for name, (wall, cpu, value) in timings.items()
    }
    results["speedup_wall"] = naive_wall / fast_wall
    results["speedup_cpu"] = naive_cpu / fast_cpu
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
