"""Model selection without labels: do label-free scores rank fits as mAP@All does?

For every digit pair (MNIST<->optdigits, MNIST<->MNIST-M and the held-out
optdigits<->MNIST-M), UniversalCDRRetriever is fitted with every setting of ``GRID`` on a
seeded subsample of both domains (transductive, as ``quality.py``). Each fit's
embeddings get their labelled cross-domain mAP@All (mean of both directions) and the
label-free score of :func:`skucdr.label_free.mutual_neighbor_rate` (``mutual_nn``). The
table gives, per pair, the Spearman rank correlation between the score and mAP@All over
the grid: how well choosing by the score would have chosen by mAP. Columns of scores
measured and not adopted (``cycle``, ``snd``) stay in the committed results.

Results are appended to the JSON after every fit (resumable); a markdown table is written
next to it.

Usage::

    python benchmarks/label_free_selection.py --threads 1
    python benchmarks/label_free_selection.py --pairs mnist-optdigits --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = (("mnist", "optdigits"), ("mnist", "mnist_m"), ("optdigits", "mnist_m"))
N_PER_DOMAIN = 1000
# settings that spread quality: training length, the paper's stage 2, ablations, and
# hyper-parameters pushed away from their defaults (the default is "epochs90")
GRID = {
    "epochs5": dict(max_epochs=5),
    "epochs20": dict(max_epochs=20),
    "epochs45": dict(max_epochs=45),
    "epochs90": dict(),
    "no_augment": dict(augment=None),
    "paper_stage2": dict(alignment="spda", matching="sn2m"),
    "no_merge": dict(merge_prototypes=False),
    "width16": dict(n_components=16),
    "tau0.5": dict(tau=0.5),
    "lr1e-2": dict(lr=1e-2),
}


def subsample(data, pair, n, seed):
    """``n`` seeded rows of each domain of ``pair`` (all of a smaller domain)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in pair:
        X, y = data[name]
        rows = np.sort(rng.choice(len(X), size=min(n, len(X)), replace=False))
        out[name] = (X[rows], y[rows])
    return out


def run_one(setting, pair, seed, data, n=N_PER_DOMAIN, cache=None):
    """Fit ``GRID[setting]`` on the pair's subsample; mAP@All and every label-free score.

    With ``cache`` (a folder), the embeddings, labels and domains are also saved there
    (``<setting>|<pair>|<seed>.npz``), so that new scores can be measured without fits.
    """
    from skucdr import UniversalCDRRetriever, pack_domains
    from skucdr.metrics import cross_domain_map

    X, y, domains = pack_domains(subsample(data, pair, n, seed))
    start = time.perf_counter()
    model = UniversalCDRRetriever(random_state=seed, device="cpu", **GRID[setting])
    Z = model.fit(X, sample_domain=domains).gallery_embedding_
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        np.savez(Path(cache) / f"{setting}|{'-'.join(pair)}|{seed}.npz", Z=Z, y=y,
                 domains=domains.astype(str))
    row = {"fit_seconds": time.perf_counter() - start,
           "map_all": cross_domain_map(Z, y, domains)}
    row.update(_scores(Z, domains))
    return row


def _scores(Z, domains):
    from skucdr.label_free import mutual_neighbor_rate

    return {"mutual_nn": mutual_neighbor_rate(Z, domains)}


def rescore(results, cache):
    """Recompute the label-free score of every row from the cached embeddings (no fit)."""
    for key, row in results.items():
        saved = np.load(Path(cache) / f"{key}.npz")
        row.update(_scores(saved["Z"], saved["domains"]))
    return results


def spearman(results, pair_name, score):
    """Rank correlation of ``score`` with mAP@All over the grid settings of a pair."""
    from scipy.stats import spearmanr

    rows = [r for key, r in results.items() if key.split("|")[1] == pair_name]
    if len(rows) < 3:
        return None
    return float(spearmanr([r[score] for r in rows], [r["map_all"] for r in rows])[0])


def markdown(results):
    """Spearman per pair for every score column, then every fit."""
    names = [k for k in next(iter(results.values())) if k not in ("fit_seconds", "map_all")]
    pairs = sorted({key.split("|")[1] for key in results})
    lines = ["Spearman rank correlation with cross-domain mAP@All over the grid "
             "(label_free_selection.py).", "",
             "| pair | fits | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for pair in pairs:
        n = sum(key.split("|")[1] == pair for key in results)
        cells = [spearman(results, pair, s) for s in names]
        lines.append(f"| {pair} | {n} | "
                     + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    lines += ["", "| setting | pair | mAP@All | " + " | ".join(names) + " | fit s |",
              "|---" * (len(names) + 4) + "|"]
    for key in sorted(results):
        setting, pair, _ = key.split("|")
        r = results[key]
        lines.append(f"| {setting} | {pair} | {r['map_all']:.3f} | "
                     + " | ".join(f"{r[s]:.3f}" if s in r else "–" for s in names)
                     + f" | {r['fit_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="+", choices=["-".join(p) for p in PAIRS])
    parser.add_argument("--settings", nargs="+", choices=list(GRID))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "label_free_selection.json"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache", default=None,
                        help="folder to save every fit's embeddings in (not committed)")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the scores of every row from --cache, fit nothing")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from skucdr.datasets import load_digit_domains

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.rescore:
        if args.cache is None:
            parser.error("--rescore needs --cache")
        results = rescore(results, args.cache)
        out.write_text(json.dumps(results, indent=1))
        out.with_suffix(".md").write_text(markdown(results))
        return
    data = load_digit_domains()
    pairs = [p for p in PAIRS if args.pairs is None or "-".join(p) in args.pairs]
    for pair in pairs:
        for setting in args.settings or GRID:
            key = f"{setting}|{'-'.join(pair)}|{args.seed}"
            if key in results:
                continue
            results[key] = run_one(setting, pair, args.seed, data, cache=args.cache)
            tmp = out.with_suffix(".partial.json")
            tmp.write_text(json.dumps(results, indent=1))
            os.replace(tmp, out)
            out.with_suffix(".md").write_text(markdown(results))
            r = results[key]
            print(f"{key}: mAP {r['map_all']:.3f}, mutual {r['mutual_nn']:.3f} "
                  f"({r['fit_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
