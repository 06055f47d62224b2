"""How good TPSNet's pseudo-labels are when stage 1 clusters them (a diagnosis, not a test).

TPSNet's stage 2 trains on the pseudo-labels that DPG's per-domain k-means gives the
warm-up's image features (``TPSNetObjective._cluster``). This script fits a TPSNet row of
``quality.py`` on domains of the digit benchmark, stops the fit right after that
clustering (so a row costs its warm-up only) and scores the pseudo-labels against the
true labels, which training never sees:

* ``ari_<domain>``: adjusted Rand index of every domain's pseudo-labels;
* ``cross_consistency``: the share of rows whose shared pseudo-class holds, in each other
  domain, a majority of their own true category (the cross-domain alignment of ids);
* ``n_classes``: the number of shared pseudo-classes.

Usage::

    python benchmarks/pseudo_labels.py --methods tpsnet tpsnet_long_randconv \\
        --domains mnist mnist_m --seeds 0 --threads 1

Results are keyed ``method|domain-domain|seed`` and appended after every fit (an
interrupted run resumes); a markdown table is written next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DOMAINS = ("mnist", "mnist_m", "optdigits")


class _Clustered(Exception):
    """Raised to end a fit once DPG has clustered."""


def pseudo_labels(model, X, sample_domain):
    """Fit ``model`` (a TextPhaseRetriever) until DPG clusters; its pseudo-labels.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
        Shared pseudo-class of every row (ids aligned across domains).
    codes : ndarray of shape (n_samples,)
        Domain code of every row.
    names : list
        The domain of every code (their order of first appearance, as ``domains_``).
    """
    from skucdr.tpsnet.objective import TPSNetObjective

    cluster = TPSNetObjective._cluster
    seen = {}

    def cluster_and_stop(objective, net):
        cluster(objective, net)
        seen["labels"] = objective.labels.cpu().numpy()
        seen["codes"] = np.asarray(objective.codes)
        raise _Clustered

    with mock.patch.object(TPSNetObjective, "_cluster", cluster_and_stop):
        try:
            model.fit(X, sample_domain=sample_domain)
        except _Clustered:
            pass
    if not seen:
        raise RuntimeError("The fit ended before DPG clustered (no stage-1 epochs?).")
    # the interrupted fit left the model unfitted: codes follow first appearance
    return seen["labels"], seen["codes"], list(dict.fromkeys(np.asarray(sample_domain).tolist()))


def score(labels, codes, y, names):
    """ARI per domain, cross-domain consistency and the number of pseudo-classes."""
    from sklearn.metrics import adjusted_rand_score

    row = {f"ari_{name}": float(adjusted_rand_score(y[codes == k], labels[codes == k]))
           for k, name in enumerate(names)}
    majority = {}
    for k in range(len(names)):
        for c in np.unique(labels[codes == k]):
            majority[k, c] = np.bincount(y[(codes == k) & (labels == c)]).argmax()
    agree = total = 0
    for (k, c) in majority:
        members = (codes == k) & (labels == c)
        for j in range(len(names)):
            if j != k and (j, c) in majority:
                agree += int((y[members] == majority[j, c]).sum())
                total += int(members.sum())
    row["cross_consistency"] = agree / total if total else float("nan")
    row["n_classes"] = int(len(np.unique(labels)))
    return row


def markdown(results):
    """One line per method, domains and seed."""
    metrics = sorted({k for row in results.values() for k in row
                      if k.startswith("ari_")}) + ["cross_consistency", "n_classes"]
    lines = ["| method | domains | seed | " + " | ".join(metrics) + " | warm-up s |",
             "|---" * (len(metrics) + 4) + "|"]
    for key in sorted(results):
        method, domains, seed = key.split("|")
        row = results[key]
        cells = [("–" if m not in row else f"{row[m]:.3f}" if m != "n_classes"
                  else str(row[m])) for m in metrics]
        lines.append(f"| {method} | {domains} | {seed} | " + " | ".join(cells)
                     + f" | {row['seconds']:.0f} |")
    return ("Pseudo-labels of TPSNet's DPG against the true labels (adjusted Rand index "
            "per domain; see pseudo_labels.py).\n\n" + "\n".join(lines) + "\n")


def _methods():
    from functools import partial

    from quality import ROWS, _model  # next to this script: on sys.path when it runs

    return {name: partial(_model, name) for name, (method, _, _) in ROWS.items()
            if method == "tpsnet"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    methods = _methods()
    parser.add_argument("--methods", nargs="+", choices=sorted(methods), default=["tpsnet"])
    parser.add_argument("--domains", nargs="+", choices=DOMAINS, default=["mnist", "mnist_m"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default=str(RESULTS / "pseudo_labels.json"))
    args = parser.parse_args(argv)
    if len(set(args.domains)) < 2:
        parser.error("--domains needs at least two different domains")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from skucdr import pack_domains
    from skucdr.datasets import load_digit_domains

    X, y, sample_domain = pack_domains(load_digit_domains(tuple(args.domains)))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for seed in args.seeds:
        for method in args.methods:
            key = f"{method}|{'-'.join(args.domains)}|{seed}"
            if key in results:
                continue
            model = methods[method](seed).set_params(verbose=0)
            start = time.perf_counter()
            labels, codes, names = pseudo_labels(model, X, sample_domain)
            row = score(labels, codes, np.asarray(y), names)
            row["seconds"] = round(time.perf_counter() - start, 1)
            results[key] = row
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
            out.with_suffix(".md").write_text(markdown(results))
            print(key, {k: round(v, 3) for k, v in row.items()}, flush=True)


if __name__ == "__main__":
    main()
