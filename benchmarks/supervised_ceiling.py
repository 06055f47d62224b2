"""How far the default architecture can go on the digit domains when labels ARE used.

A reference for reading ``quality.py``, not a method of the library: the retrievers'
default image encoder (``build_encoder("cnn")`` + ``EmbeddingNet``, 128-d) and
augmentation (``ImageAugment``, with the amplitude mix of up to ``0.5``, the default when
the committed results were measured) are trained *with labels*, by a supervised contrastive
loss over both domains (Khosla et al., 2020; every same-class image of either domain is a
positive), on a seeded stratified half of each domain; cross-domain mAP@All is measured on
the other halves, both directions. Raw pixels on the same held-out halves are the
baseline of the same run.

If this ceiling is high where the unsupervised methods are low, the architecture and the
training budget are not what holds them back: the missing labels are.

Usage::

    python benchmarks/supervised_ceiling.py                  # both pairs, seeds 0 and 1
    python benchmarks/supervised_ceiling.py --pairs mnist_m --seeds 0 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from skucdr.datasets import load_digit_domains
from skucdr.datasets._digits import _stratified_halves
from skucdr.metrics import mean_average_precision
from skucdr.nn.augment import ImageAugment
from skucdr.nn.encoders import EmbeddingNet, build_encoder

RESULTS = Path(__file__).resolve().parent / "results"


def stratified_halves(y, rng):
    """Boolean mask of a stratified half of ``y`` (the training half).

    The rule of the library's own domain splits (:mod:`skucdr.datasets`): rows shuffled,
    then the first ``ceil(n_c / 2)`` of every class.
    """
    train = np.zeros(len(y), dtype=bool)
    train[_stratified_halves(y, rng)[0]] = True
    return train


def supervised_contrastive_loss(z, labels, temperature=0.1):
    """SupCon loss: mean log-probability of each anchor's same-label items."""
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (labels[:, None] == labels[None]) & ~self_mask
    log_prob = F.log_softmax(logits, dim=1).masked_fill(~positives, 0.0)
    return -(log_prob.sum(1) / positives.sum(1).clamp(min=1)).mean()


def train_ceiling(X, y, *, epochs, seed, batch_size=64, lr=1e-3):
    """Train the default encoder + head with labels; return the fitted network."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    encoder = build_encoder("cnn", image_shape=X.shape[1:], n_features=int(np.prod(X.shape[1:])))
    net = EmbeddingNet(encoder, 128)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
    # the default augmentation when the committed results were measured (the default's
    # amplitude_mix_eta became 1 afterwards)
    augment = ImageAugment(amplitude_mix_eta=0.5)
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            rows = order[start:start + batch_size]
            views = torch.cat([augment(X[rows], gen), augment(X[rows], gen)])
            loss = supervised_contrastive_loss(net(views), torch.cat([y[rows], y[rows]]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def run_pair(data, other, seed, epochs):
    rng = np.random.default_rng(seed)
    (Xa, ya), (Xb, yb) = data["mnist"], data[other]
    train_a, train_b = stratified_halves(ya, rng), stratified_halves(yb, rng)
    start = time.perf_counter()
    net = train_ceiling(np.concatenate([Xa[train_a], Xb[train_b]]),
                        np.concatenate([ya[train_a], yb[train_b]]), epochs=epochs, seed=seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        A = net(torch.as_tensor(Xa[~train_a])).numpy()
        B = net(torch.as_tensor(Xb[~train_b])).numpy()
    qa, qb = ya[~train_a], yb[~train_b]
    raw_a, raw_b = Xa[~train_a].reshape(len(qa), -1), Xb[~train_b].reshape(len(qb), -1)
    return {
        "pair": f"mnist-{other}", "seed": seed, "epochs": epochs, "fit_seconds": seconds,
        "ceiling": [mean_average_precision(A, qa, B, qb), mean_average_precision(B, qb, A, qa)],
        "raw_pixels": [mean_average_precision(raw_a, qa, raw_b, qb),
                       mean_average_precision(raw_b, qb, raw_a, qa)],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="+", default=["optdigits", "mnist_m"],
                        choices=["optdigits", "mnist_m"], help="the domain paired with MNIST")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS / "supervised_ceiling.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_digit_domains()
    rows = []
    for other in args.pairs:
        for seed in args.seeds:
            row = run_pair(data, other, seed, args.epochs)
            rows.append(row)
            print(json.dumps(row, default=lambda v: round(float(v), 4)), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, default=float))
    lines = ["| pair | direction | seeds | supervised ceiling mAP@All | raw pixels mAP@All |",
             "|---|---|---|---|---|"]
    for other in args.pairs:
        mine = [r for r in rows if r["pair"] == f"mnist-{other}"]
        for i, direction in enumerate((f"mnist→{other}", f"{other}→mnist")):
            ceil = [r["ceiling"][i] for r in mine]
            raw = [r["raw_pixels"][i] for r in mine]
            lines.append(f"| mnist-{other} | {direction} | {len(mine)} | {np.mean(ceil):.3f} ± "
                         f"{np.std(ceil):.3f} | {np.mean(raw):.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
