"""Small folders through the ``skucdr`` command: mAP@All and fit time (not a test).

For each digit pair, ``--n`` images per domain (a seeded draw of
``load_digit_domains``) are written as ``ROOT/<domain>/<digit>/<i>.png`` at their own 28
pixels; then, as a user would run it, ``skucdr fit ROOT --out MODEL`` with default
options (the class folders are not used for training) and ``skucdr evaluate MODEL ROOT
--json``. Rows:

* ``default``: ``skucdr fit`` with its defaults (``max_epochs="auto"``: epochs of at
  least 50 steps; images read at their own size);
* ``passes``: ``--max-epochs 90``: 90 plain passes over the data (the schedule before
  ``"auto"``), at the same image size.

Reports mAP@All per direction and the seconds of ``skucdr fit`` (the whole process).
Results go to ``results/small_folders.json`` and ``.md``. Run benchmarks one at a time.

Usage::

    python benchmarks/small_folders.py                       # MNIST<->MNIST-M, 1,000 each
    python benchmarks/small_folders.py --pairs mnist-optdigits optdigits-mnist_m --n 500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = {"default": (), "passes": ("--max-epochs", "90")}


def write_folder(root, pair, n, seed=0):
    """``n`` images per domain of ``pair`` as PNG files under ``root/<domain>/<digit>``."""
    from PIL import Image

    from skucdr.datasets import load_digit_domains

    rng = np.random.default_rng(seed)
    for domain, (X, y) in load_digit_domains(pair, random_state=seed).items():
        for i in rng.permutation(len(X))[:n]:
            path = root / domain / str(y[i]) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = (X[i].transpose(1, 2, 0) * 255).round().astype(np.uint8)
            grey = np.ptp(pixels, axis=2).max() == 0
            Image.fromarray(pixels[..., 0] if grey else pixels).save(path)


def _skucdr(*args):
    return subprocess.run([sys.executable, "-m", "skucdr.cli", *map(str, args)],
                          check=True, capture_output=True, text=True).stdout


def run_one(row, pair, n, seed=0):
    with tempfile.TemporaryDirectory() as tmp:
        root, model, report = Path(tmp) / "folders", Path(tmp) / "model", Path(tmp) / "r.json"
        write_folder(root, pair, n, seed)
        start = time.perf_counter()
        _skucdr("fit", root, "--out", model, "--quiet", "--device", "cpu", *ROWS[row])
        seconds = time.perf_counter() - start
        _skucdr("evaluate", model, root, "--json", report, "--quiet")
        directions = json.loads(report.read_text())["directions"]
    return [{"row": row, "pair": "-".join(pair), "n": n, "query": d["query_domain"],
             "gallery": d["gallery_domain"], "map_all": d["map_all"],
             "fit_seconds": seconds} for d in directions]


def write_markdown(results, path):
    lines = ["| row | images per domain | direction | mAP@All | `skucdr fit` seconds |",
             "|---|---|---|---|---|"]
    for entry in results.values():
        for r in entry:
            lines.append(f"| {r['row']} | {r['n']} | {r['query']}→{r['gallery']} | "
                         f"{r['map_all']:.3f} | {r['fit_seconds']:.0f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="+", default=["mnist-mnist_m"],
                        choices=["mnist-mnist_m", "mnist-optdigits", "optdigits-mnist_m"])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--n", type=int, default=1000, help="images per domain")
    parser.add_argument("--out", default=str(RESULTS / "small_folders.json"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for pair in args.pairs:
        for row in args.rows:
            key = f"{row}|{pair}|{args.n}"
            if key not in results:
                results[key] = run_one(row, tuple(pair.split("-")), args.n)
                print(json.dumps(results[key]), flush=True)
                out.write_text(json.dumps(results, indent=1))
                write_markdown(results, out.with_suffix(".md"))


if __name__ == "__main__":
    main()
