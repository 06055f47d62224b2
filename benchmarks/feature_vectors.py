"""UniversalCDRRetriever on feature vectors (the MLP encoder path), not a test.

``quality.py`` feeds images; users with a frozen backbone feed its feature vectors
instead (2-D input without ``image_shape``), which the retriever maps through its
:class:`~skucdr.nn.encoders.MLPEncoder` with :class:`~skucdr.nn.augment.FeatureAugment`
as the only source of two views. This script measures that path on two kinds of features
of the digit domains, computed offline here:

* ``hog``: histograms of oriented gradients of the grey-scale image (scikit-image's
  ``hog``: 9 orientations, 7x7-pixel cells, 2x2-cell blocks; 324-d) — hand-made
  features;
* ``backbone``: the library's default CNN trained *with labels* on optdigits alone (15
  epochs, the default image augmentation without amplitude mix, seed 0), its pooled
  128-d features — a stand-in for a pretrained network that has seen one domain (as an
  ImageNet backbone has seen photos);
* ``mnist_backbone``: the same, trained on MNIST alone — strong features for MNIST and
  optdigits, weak ones for MNIST-M.

Rows, each on the closed-set pairs MNIST<->optdigits and MNIST<->MNIST-M (and the
held-out optdigits<->MNIST-M when named with ``--pairs``), both directions, cross-domain
mAP@All: the input features themselves (``raw``), the input standardised per domain
(``standardized``: per-domain mean and standard deviation of every feature), the
retriever with its defaults (``uem``: the input standardised per domain, then the MLP)
and without domain-specific batch norm (``uem_no_domain_norm``). Results are appended
to the JSON after every fit (resumable); a markdown table is written next to it.

Usage::

    python benchmarks/feature_vectors.py --threads 1 --out results/feature_vectors.json
    python benchmarks/feature_vectors.py --features hog --seeds 0 --methods raw uem
    python benchmarks/feature_vectors.py --pairs optdigits-mnist_m --methods raw uem
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = (("mnist", "optdigits"), ("mnist", "mnist_m"))
# Never used to choose a default: run only when named (--pairs optdigits-mnist_m).
HOLDOUT_PAIRS = (("optdigits", "mnist_m"),)
FEATURES = ("hog", "backbone", "mnist_backbone")


def _uem(**overrides):
    def make(seed):
        from skucdr import UniversalCDRRetriever

        return UniversalCDRRetriever(random_state=seed, device="cpu", **overrides)

    return make


# name -> factory(seed) of an estimator, or None for the unlearned rows
METHODS = {
    "raw": None,
    "standardized": None,
    "uem": _uem(),
    "uem_no_domain_norm": _uem(domain_norm=False),
}


def hog_features(images):
    """324-d HOG features of ``(n, C, H, W)`` images (grey-scale: mean of the channels)."""
    from skimage.feature import hog

    grey = images.mean(axis=1)
    return np.stack([hog(im, orientations=9, pixels_per_cell=(7, 7), cells_per_block=(2, 2))
                     for im in grey]).astype(np.float32)


def backbone_features(data, source="optdigits", epochs=15, seed=0):
    """Pooled features of the default CNN trained with labels on domain ``source`` alone."""
    import torch
    from torch.nn import functional as F

    from skucdr.nn.augment import ImageAugment
    from skucdr.nn.encoders import build_encoder

    torch.manual_seed(seed)
    X = torch.as_tensor(data[source][0], dtype=torch.float32)
    y = torch.as_tensor(data[source][1]).long()
    encoder = build_encoder("cnn", image_shape=tuple(X.shape[1:]), n_features=None)
    head = torch.nn.Linear(encoder.feature_dim, int(y.max()) + 1)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    augment, gen = ImageAugment(amplitude_mix_p=0.0), torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(X))
        for start in range(0, len(X), 64):
            batch = order[start:start + 64]
            loss = F.cross_entropy(head(encoder(augment(X[batch], gen))), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    encoder.eval()
    with torch.no_grad():
        return {name: torch.cat([encoder(torch.as_tensor(images[i:i + 500], dtype=torch.float32))
                                 for i in range(0, len(images), 500)]).numpy()
                for name, (images, _) in data.items()}


def _features(kind, data):
    if kind == "hog":
        return {name: hog_features(X) for name, (X, _) in data.items()}
    return backbone_features(data, source="mnist" if kind == "mnist_backbone" else "optdigits")


def _standardize(X, domains):
    out = np.empty_like(X)
    for d in np.unique(domains):
        rows = domains == d
        out[rows] = (X[rows] - X[rows].mean(0)) / (X[rows].std(0) + 1e-6)
    return out


def run_one(method, pair, seed, feats, labels):
    from skucdr import pack_domains
    from skucdr.metrics import cross_domain_map

    X, y, domains = pack_domains({d: (feats[d], labels[d]) for d in pair})
    start = time.perf_counter()
    if method == "raw":
        Z = X
    elif method == "standardized":
        Z = _standardize(X, domains)
    else:
        Z = METHODS[method](seed).fit(X, sample_domain=domains).transform(
            X, sample_domain=domains)
    seconds = time.perf_counter() - start
    rows = []
    for query, gallery in (pair, pair[::-1]):
        score = cross_domain_map(Z, y, domains, query_domain=query, gallery_domain=gallery)
        rows.append({"method": method, "query": query, "gallery": gallery, "seed": seed,
                     "map_all": float(score), "fit_seconds": seconds})
    return rows


def write_markdown(results, path):
    """Mean over seeds; one line per features, method and direction."""
    groups = {}
    for key, entry in results.items():
        features = key.split("|")[0]
        for row in entry["rows"]:
            direction = f"{row['query']}→{row['gallery']}"
            groups.setdefault((features, row["method"], direction), []).append(row["map_all"])
    lines = ["| features | method | direction | seeds | mAP@All |", "|---|---|---|---|---|"]
    for (features, method, direction), vals in sorted(groups.items()):
        spread = f" ± {np.std(vals):.3f}" if len(vals) > 1 else ""
        lines.append(f"| {features} | {method} | {direction} | {len(vals)} | "
                     f"{np.mean(vals):.3f}{spread} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", nargs="+", choices=FEATURES, default=list(FEATURES))
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--pairs", nargs="+", default=None,
                        choices=["-".join(p) for p in PAIRS + HOLDOUT_PAIRS],
                        help="default: the tuning pairs (the held-out pair only when named)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default=str(RESULTS / "feature_vectors.json"))
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from skucdr.datasets import load_digit_domains

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    data = load_digit_domains()
    labels = {name: y for name, (_, y) in data.items()}
    pairs = PAIRS if args.pairs is None else [p for p in PAIRS + HOLDOUT_PAIRS
                                               if "-".join(p) in args.pairs]
    for kind in args.features:
        feats = None
        for pair in pairs:
            for method in args.methods:
                for seed in [0] if METHODS[method] is None else args.seeds:
                    key = f"{kind}|{method}|{'-'.join(pair)}|{seed}"
                    if key in results:
                        continue
                    if feats is None:
                        feats = _features(kind, data)
                    rows = run_one(method, pair, seed, feats, labels)
                    results[key] = {"rows": rows, "threads": args.threads}
                    tmp = out.with_suffix(".partial.json")
                    tmp.write_text(json.dumps(results, indent=1))
                    os.replace(tmp, out)
                    write_markdown(results, out.with_suffix(".md"))
                    summary = ", ".join(f"{r['query']}→{r['gallery']} {r['map_all']:.3f}"
                                        for r in rows)
                    print(f"{key}: {summary} ({rows[0]['fit_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
