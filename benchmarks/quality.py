"""Retrieval quality of skucdr's methods on the embedded digit domains (not a test).

Protocol (DESIGN.md §3): transductive — each run fits on the unlabeled rows of both
domains and retrieves among the same rows; labels are used only for scoring; the last
epoch is reported. For every pair, both directions, in three settings:

* ``closed``: all classes on both sides (one fit serves both directions);
* ``partial``: the query domain keeps a seeded half of the classes;
* ``open_set``: the gallery keeps a seeded half; we report the shared-class mAP@All and
  the private-query detection accuracy (binary accuracy over all queries of
  ``detect_private`` against "the query's class is absent from the gallery").

The rows are declared as data in ``ROWS``: the two methods' defaults, the papers'
ablations (one component off, from the default), the trade-offs a docstring names, and
the non-learned baselines (cosine on raw pixels; PCA with 64 components fitted on both
domains). The ablations and trade-offs run closed-set on MNIST<->optdigits unless named
with ``--pairs`` and ``--settings``.

Pairs: MNIST<->optdigits and MNIST<->MNIST-M, on which the defaults were chosen; the
held-out optdigits<->MNIST-M runs only when named (``--pairs optdigits-mnist_m``).

Results are appended to a JSON file after every run, so an interrupted benchmark resumes
where it stopped; a markdown table is written next to it.

Usage::

    python benchmarks/quality.py --quick              # one seed, closed set, the main rows
    python benchmarks/quality.py                      # everything, 2 seeds (hours on 2 cores)
    python benchmarks/quality.py --methods uem raw --settings closed --seeds 0
    python benchmarks/quality.py --methods uem --pairs mnist-mnist_m   # one pair
    python benchmarks/quality.py --quick --device cuda --out gpu.json   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from skucdr import pack_domains
from skucdr.datasets import load_digit_domains, make_category_shift
from skucdr.metrics import mean_average_precision, precision_at_k
from skucdr.nn.augment import ImageAugment

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = (("mnist", "optdigits"), ("mnist", "mnist_m"))
# Never used to choose a default: run only when named (--pairs optdigits-mnist_m), as a
# check that the defaults carry over to a pair they were not tuned on.
HOLDOUT_PAIRS = (("optdigits", "mnist_m"),)
SETTINGS = ("closed", "partial", "open_set")
ABLATION_PAIR = ("mnist", "optdigits")

# name -> (method, parameters changed from its defaults, what the row is)
ROWS = {
    "raw": ("baseline", {}, "cosine similarity of raw pixels"),
    "pca": ("baseline", {}, "PCA with 64 components fitted on both domains"),
    "uem": ("uem", {}, "UniversalCDRRetriever's defaults"),
    "uem_paper_stage2": ("uem", dict(alignment="spda", matching="sn2m"),
                         "the paper's stage 2: adversarial alignment, SPR and SN2M"),
    "uem_spda": ("uem", dict(alignment="spda"), "alignment and SPR, no matching"),
    "uem_dann": ("uem", dict(alignment="dann"), "alignment without SPR"),
    "uem_nn": ("uem", dict(alignment="spda", matching="nn"), "plain NN matching"),
    "uem_no_merge": ("uem", dict(merge_prototypes=False), "prototypes not merged"),
    "uem_no_sel": ("uem", dict(semantic_enhanced=False), "no semantic-enhanced loss"),
    "uem_no_domain_norm": ("uem", dict(domain_norm=False), "one set of batch-norm statistics"),
    "uem_no_randconv": ("uem", dict(augment=ImageAugment()),
                        "augment=ImageAugment(): no random convolutions"),
    "uem_mutual": ("uem", dict(merge_rule="mutual"), "merge_rule='mutual'"),
    "tpsnet": ("tpsnet", {}, "TextPhaseRetriever's defaults"),
    "tpsnet_no_text": ("tpsnet", dict(text_prior=False), "no text prior"),
    "tpsnet_no_phase": ("tpsnet", dict(phase_prior=False), "no phase prior"),
    "tpsnet_concat": ("tpsnet", dict(fusion="concat"), "fusion by concatenation"),
    "tpsnet_no_uem_terms": ("tpsnet", dict(gamma=0.0), "gamma=0: the paper's losses alone"),
    "tpsnet_no_domain_norm": ("tpsnet", dict(domain_norm=False),
                              "one set of batch-norm statistics"),
}
# rows that run on every pair and setting; the others on ABLATION_PAIR, closed set,
# unless --pairs / --settings name more
FULL_ROWS = ("raw", "pca", "uem", "uem_no_randconv", "tpsnet")
QUICK_METHODS = ("raw", "pca", "uem", "tpsnet")


def _model(name, seed):
    """The estimator of row ``name``, seeded."""
    from skucdr import TextPhaseRetriever, UniversalCDRRetriever

    method, params, _ = ROWS[name]
    Estimator = UniversalCDRRetriever if method == "uem" else TextPhaseRetriever
    return Estimator(random_state=seed, device="cpu", **params)


def _embed(method, seed, X, sample_domain, device="cpu"):
    """Fit ``method`` transductively on ``device``; return embeddings, model, seconds."""
    start = time.perf_counter()
    flat = X.reshape(len(X), -1)
    if method == "raw":
        return flat, None, 0.0
    if method == "pca":
        from sklearn.decomposition import PCA

        Z = PCA(n_components=64, random_state=seed).fit_transform(flat)
        return Z, None, time.perf_counter() - start
    model = _model(method, seed).set_params(device=device)
    model.fit(X, sample_domain=sample_domain)
    return model.gallery_embedding_, model, time.perf_counter() - start


def _direction_scores(Z, y, domains, query, gallery, model, shift, X):
    q, g = domains == query, domains == gallery
    row = {
        "query": query,
        "gallery": gallery,
        "map_all": mean_average_precision(Z[q], y[q], Z[g], y[g]),
        "map_class_interp": mean_average_precision(Z[q], y[q], Z[g], y[g], average="class",
                                                   interpolated=True),
    }
    row.update({f"p@{k}": v for k, v in precision_at_k(Z[q], y[q], Z[g], y[g]).items()})
    if shift is not None and shift.setting == "open_set":
        private = np.isin(y[q], shift.private_classes)
        if model is not None and hasattr(model, "detect_private"):
            flagged = model.detect_private(X[q], sample_domain=domains[q],
                                           gallery_domain=gallery)
        else:  # non-learned baselines: the same appendix-B.1 detector on their features
            from skucdr.open_set import detect_private_queries

            # k scanned up to 20 (the digits have 10 classes): the full scan on 784-d raw
            # pixels costs minutes per direction
            flagged = detect_private_queries(Z[q], Z[g], max_prototypes=20, random_state=0)
        row["open_set_acc"] = float((flagged == private).mean())
        row["private_recall"] = float(flagged[private].mean()) if private.any() else None
    return row


def run_one(method, pair, setting, seed, data, device="cpu"):
    a, b = pair
    directions = [(a, b), (b, a)]
    rows = []
    fits = [(None, directions)] if setting == "closed" else [(d, [d]) for d in directions]
    for query_pair, dirs in fits:
        subset = {a: data[a], b: data[b]}
        shift = None
        if setting != "closed":
            shift = make_category_shift({k: v[1] for k, v in subset.items()}, setting,
                                        query_domain=query_pair[0], seed=2024 + seed)
            subset = shift.apply(subset)
        X, y, domains = pack_domains({a: subset[a], b: subset[b]})
        Z, model, seconds = _embed(method, seed, X, domains, device)
        for query, gallery in dirs:
            row = _direction_scores(Z, y, domains, query, gallery, model, shift, X)
            row.update(method=method, setting=setting, seed=seed, fit_seconds=seconds,
                       device=device)
            rows.append(row)
    return rows


def _pair_name(pair):
    """``"mnist-optdigits"``: a pair as named in the JSON keys and by ``--pairs``."""
    return "-".join(pair)


def _key(method, pair, setting, seed):
    return f"{method}|{_pair_name(pair)}|{setting}|{seed}"


def _plan(methods, settings, seeds, pairs=None):
    """(row, pair, setting, seed) to run: the full rows on the tuning pairs (and the
    held-out pair when ``pairs`` names it) in ``settings``; the other rows on
    ``ABLATION_PAIR``, closed set, unless ``pairs`` / ``settings`` were given."""
    for method in methods:
        full = method in FULL_ROWS
        if pairs is not None:
            chosen = [p for p in PAIRS + HOLDOUT_PAIRS if _pair_name(p) in pairs]
        else:
            chosen = PAIRS if full else (ABLATION_PAIR,)
        for pair in chosen:
            for setting in settings if (full or settings != SETTINGS) else ("closed",):
                for seed in seeds:
                    yield method, pair, setting, seed


def write_markdown(results, path):
    """Average over seeds; one line per method, setting and direction."""
    groups = {}
    for entry in results.values():
        for row in entry["rows"]:
            key = (row["method"], row["setting"], f"{row['query']}→{row['gallery']}")
            groups.setdefault(key, []).append(row)
    cols = ["map_all", "map_class_interp", "p@1", "p@5", "p@15", "open_set_acc", "fit_seconds"]
    lines = ["| method | setting | direction | seeds | " + " | ".join(cols) + " |",
             "|" + "---|" * (4 + len(cols))]
    for (method, setting, direction), rows in sorted(groups.items()):
        cells = []
        for c in cols:
            vals = [r[c] for r in rows if r.get(c) is not None]
            spread = f" ± {np.std(vals):.3f}" if len(vals) > 1 else ""
            cells.append(f"{np.mean(vals):.3f}{spread}" if vals else "")
        head = f"| {method} | {setting} | {direction} | {len(rows)} | "
        lines.append(head + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, closed set, the main methods")
    parser.add_argument("--methods", nargs="+", choices=list(ROWS), metavar="ROW",
                        help="rows of ROWS (default: all)")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS)
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--pairs", nargs="+",
                        choices=[_pair_name(p) for p in PAIRS + HOLDOUT_PAIRS],
                        help="domain pairs to run (default: the tuning pairs for the "
                             f"full rows, {_pair_name(ABLATION_PAIR)} for the others)")
    parser.add_argument("--out", default=None,
                        help="JSON file (default: results/quality[_quick].json)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 when several benchmarks share the cores)")
    parser.add_argument("--device", default="cpu",
                        help="torch device of the learned methods (committed results: cpu)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = args.methods or (QUICK_METHODS if args.quick else list(ROWS))
    settings = args.settings or (("closed",) if args.quick else SETTINGS)
    seeds = args.seeds or ((0,) if args.quick else (0, 1))
    default_out = RESULTS / ("quality_quick.json" if args.quick else "quality.json")
    out = Path(args.out) if args.out else default_out
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    data = load_digit_domains()
    for method, pair, setting, seed in _plan(methods, settings, seeds, args.pairs):
        key = _key(method, pair, setting, seed)
        if key in results:
            continue
        rows = run_one(method, pair, setting, seed, data, args.device)
        results[key] = {"rows": rows, "threads": args.threads, "device": args.device}
        tmp = out.with_suffix(".partial.json")
        tmp.write_text(json.dumps(results, indent=1, default=float))
        os.replace(tmp, out)
        write_markdown(results, out.with_suffix(".md"))
        summary = ", ".join(f"{r['query']}→{r['gallery']} mAP {r['map_all']:.3f}" for r in rows)
        print(f"{key}: {summary} ({rows[0]['fit_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
