"""Plot of retrieval quality against the baselines, from ``results/quality.json``.

One panel per setting (closed, partial, open set); per retrieval direction, mAP@All of
raw pixels, PCA, UniversalCDRRetriever and TextPhaseRetriever at their
defaults (seed 0). Nothing is trained here: it reads what ``quality.py`` measured.

    python benchmarks/plot_quality.py

Writes ``benchmarks/results/quality.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
METHODS = {"raw": "raw pixels", "pca": "PCA (64)", "uem": "UniversalCDRRetriever()",
           "tpsnet": "TextPhaseRetriever()"}
SETTINGS = {"closed": "closed set", "partial": "partial", "open_set": "open set"}
NAMES = {"mnist": "MNIST", "mnist_m": "MNIST-M", "optdigits": "optdigits"}


def directions_and_scores(results, setting):
    """``(directions, {method: [mAP@All per direction]})`` of seed 0 in ``setting``."""
    scores = {}
    for key, value in results.items():
        method, _, key_setting, seed = key.split("|")
        if method in METHODS and key_setting == setting and seed == "0":
            for row in value["rows"]:
                direction = f"{NAMES[row['query']]}→{NAMES[row['gallery']]}"
                scores.setdefault(method, {})[direction] = row["map_all"]
    directions = sorted({d for per in scores.values() for d in per})
    return directions, {m: [scores[m].get(d, np.nan) for d in directions]
                        for m in METHODS if m in scores}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS / "quality.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.png")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(args.results.read_text())
    fig, axes = plt.subplots(len(SETTINGS), 1, figsize=(9, 9), sharey=True)
    for ax, (setting, title) in zip(axes, SETTINGS.items()):
        directions, scores = directions_and_scores(results, setting)
        width = 0.8 / max(1, len(scores))
        for i, (method, values) in enumerate(scores.items()):
            ax.bar(np.arange(len(directions)) + (i - (len(scores) - 1) / 2) * width, values,
                   width, label=METHODS[method])
        ax.set_xticks(np.arange(len(directions)), directions, fontsize=8)
        ax.set_ylabel("mAP@All")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=4, loc="lower center")
    fig.suptitle("Retrieval quality on the digit domains (benchmarks/quality.py, seed 0)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
