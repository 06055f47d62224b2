"""Peak memory of ``skucdr fit`` / ``index`` on image folders of growing size.

Writes two domains of random PNG files (``--sizes`` images per domain), then runs, each
in a fresh process, ``skucdr fit`` (which reads the folders lazily, a batch at a time)
and ``skucdr index``, and, as the baseline, the same fit on the arrays of
``load_image_folder_domains`` (every image in memory). Records every process's peak
resident memory (``ru_maxrss``) and time.

    python benchmarks/folder_memory.py --sizes 500 2000 --image-size 96 --threads 2

Writes ``benchmarks/results/folder_memory.{json,md}``.
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

RESULTS = Path(__file__).parent / "results"

EAGER = """
import torch
torch.set_num_threads({threads})
from skucdr import UniversalCDRRetriever
from skucdr.datasets import load_image_folder_domains
data = load_image_folder_domains({root!r}, image_size={size})
UniversalCDRRetriever(max_epochs=1, random_state=0, device="cpu").fit(
    {{d: X for d, (X, _) in data.items()}})
"""


def write_folders(root, n_per_domain, image_size, seed=0):
    from PIL import Image

    rng = np.random.RandomState(seed)
    for domain in ("photos", "sketches"):
        folder = root / domain
        folder.mkdir(parents=True)
        for i in range(n_per_domain):
            pixels = (rng.rand(image_size, image_size, 3) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:06d}.png")


# runs a command and prints its peak RSS (KiB, Linux): one fresh parent per measurement
_MEASURE = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], "
            "stdout=subprocess.DEVNULL); print(resource.getrusage("
            "resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)")


def peak_of(command, threads):
    """Run ``command`` in a fresh process; its peak RSS in MiB and its seconds."""
    import os

    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True,
                          text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.split()[-1]) / 1024, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "folders"
            write_folders(root, n, args.image_size)
            model = Path(tmp) / "model"
            cli = [sys.executable, "-m", "skucdr.cli"]
            common = ["--image-size", str(args.image_size), "--quiet"]
            lazy_fit = peak_of(cli + ["fit", str(root), "--out", str(model), "--max-epochs",
                                      "1", "--device", "cpu"] + common, args.threads)
            index = peak_of(cli + ["index", str(model), str(root), "--quiet"], args.threads)
            eager_fit = peak_of([sys.executable, "-c", EAGER.format(
                threads=args.threads, root=str(root), size=args.image_size)], args.threads)
        array_mib = 2 * n * 3 * args.image_size ** 2 * 4 / 2**20
        rows.append({"images_per_domain": n, "image_size": args.image_size,
                     "array_mib": round(array_mib, 1),
                     "lazy_fit_peak_mib": round(lazy_fit[0]), "lazy_fit_s": round(lazy_fit[1], 1),
                     "index_peak_mib": round(index[0]), "index_s": round(index[1], 1),
                     "eager_fit_peak_mib": round(eager_fit[0]),
                     "eager_fit_s": round(eager_fit[1], 1)})
        print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "folder_memory.json").write_text(json.dumps(
        {"threads": args.threads, "rows": rows}, indent=1))
    lines = ["| images per domain | images as arrays (MiB) | `skucdr fit` peak (MiB) | "
             "`skucdr index` peak (MiB) | fit on arrays peak (MiB) |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['images_per_domain']} | {r['array_mib']} | {r['lazy_fit_peak_mib']} | "
              f"{r['index_peak_mib']} | {r['eager_fit_peak_mib']} |" for r in rows]
    (RESULTS / "folder_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
