"""Three domains in one fit against the pairwise fits (not a test).

Both retrievers accept any number of domains: prototypes are clustered per domain and
merged across all of them, batches hold every domain in equal shares, and per-domain
batch norm keeps one set of statistics each. ``quality.py`` fits two domains at a time;
this script fits MNIST, MNIST-M and optdigits together with the defaults (closed set,
seeds 0 and 1) and scores all six directions with cross-domain mAP@All, next to the
same directions from the pairwise fits of ``results/quality_uem.json`` and
``results/quality_tpsnet.json`` (same seeds; the optdigits<->MNIST-M pair is the held-out
one there).

Results are keyed ``method|seed`` and appended after every fit, so an interrupted run
resumes; a markdown table is written next to the JSON.

Usage::

    python benchmarks/three_domains.py --threads 1                    # all methods, 2 seeds
    python benchmarks/three_domains.py --methods uem --seeds 0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DOMAINS = ("mnist", "mnist_m", "optdigits")
# quality.py's results, keyed method|pair|setting|seed: the pairwise fits to compare with
PAIRWISE = (RESULTS / "quality.json",)


# the retrievers of quality.py's rows of the same names, so that a name means one
# configuration in every benchmark
SHARED_METHODS = ("uem", "uem_no_randconv", "tpsnet")


def _methods():
    """Method name -> ``make(seed)`` building an unfitted retriever (None: raw pixels)."""
    from functools import partial

    from quality import _model  # next to this script: on sys.path when it runs

    return {"raw": None, **{name: partial(_model, name) for name in SHARED_METHODS}}


def directions(domains=DOMAINS):
    """Every ordered pair ``(query, gallery)`` of distinct domains."""
    return [(q, g) for q in domains for g in domains if q != g]


def run_one(make, data, seed=0):
    """Fit ``make(seed)`` on every domain of ``data`` at once; mAP@All per direction.

    Parameters
    ----------
    make : callable or None
        Builds the retriever; None scores raw pixels (no fit).
    data : Mapping
        ``{domain: (X, y)}``.
    seed : int, default=0

    Returns
    -------
    dict
        ``"query->gallery"`` -> mAP@All for every direction, and ``fit_seconds``.
    """
    from skucdr import pack_domains
    from skucdr.metrics import cross_domain_map

    X, y, domains = pack_domains(data)
    start = time.perf_counter()
    if make is None:
        Z = X.reshape(len(X), -1)
    else:
        Z = make(seed).fit(X, sample_domain=domains).transform(X, sample_domain=domains)
    row = {"fit_seconds": round(time.perf_counter() - start, 1)}
    for query, gallery in directions(list(data)):
        row[f"{query}->{gallery}"] = float(cross_domain_map(
            Z, y, domains, query_domain=query, gallery_domain=gallery))
    return row


def pairwise_map(results, method, query, gallery, seed):
    """The closed-set mAP@All of ``query -> gallery`` from ``quality.py``'s pairwise fit."""
    for pair in (f"{query}-{gallery}", f"{gallery}-{query}"):
        entry = results.get(f"{method}|{pair}|closed|{seed}")
        if entry is None:
            continue
        for row in entry["rows"]:
            if row["query"] == query and row["gallery"] == gallery:
                return row["map_all"]
    return None


def _fmt(values):
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.3f}" if values else "–"


def markdown(results, pairwise):
    """The mean over the seeds of every direction: three-domain fit (pairwise fit)."""
    lines = ["| method | seeds | " + " | ".join(f"{q}→{g}" for q, g in directions())
             + " | fit s |", "|---" * (len(directions()) + 3) + "|"]
    for method in sorted({key.split("|")[0] for key in results}):
        seeds = sorted(int(key.split("|")[1]) for key in results
                       if key.split("|")[0] == method)
        rows = [results[f"{method}|{seed}"] for seed in seeds]
        cells = []
        for query, gallery in directions():
            three = _fmt([row[f"{query}->{gallery}"] for row in rows])
            pair = _fmt([pairwise_map(pairwise, method, query, gallery, seed)
                         for seed in seeds])
            cells.append(f"{three} ({pair})")
        fit = f"{np.mean([row['fit_seconds'] for row in rows]):.0f}"
        lines.append(f"| {method} | {','.join(map(str, seeds))} | " + " | ".join(cells)
                     + f" | {fit} |")
    return ("mAP@All, mean over the seeds: one fit on all three domains "
            "(in brackets: the pairwise closed-set fits of quality.py, same seeds).\n\n"
            + "\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    methods = _methods()
    parser.add_argument("--methods", nargs="+", choices=sorted(methods),
                        default=list(methods))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default=str(RESULTS / "three_domains.json"))
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from skucdr.datasets import load_digit_domains

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    pairwise = {key: entry for path in PAIRWISE if path.exists()
                for key, entry in json.loads(path.read_text()).items()}
    data = load_digit_domains(DOMAINS)
    for seed in args.seeds:
        for method in args.methods:
            key = f"{method}|{seed}"
            if key in results or (methods[method] is None and seed != args.seeds[0]):
                continue  # done, or raw pixels (which do not depend on the seed)
            results[key] = run_one(methods[method], data, seed)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
            out.with_suffix(".md").write_text(markdown(results, pairwise))
            row = results[key]
            print(f"{key}: " + ", ".join(f"{q}→{g} {row[f'{q}->{g}']:.3f}"
                                         for q, g in directions())
                  + f" ({row['fit_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
