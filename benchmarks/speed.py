"""skucdr's overhead against bare faiss and bare torch, measured in one run.

Every ratio compares skucdr with a baseline doing the same work on the same data in the
same process, run in alternation and each timed as the best of ``--repeats`` rounds:

* ``search``: ``FaissCosineIndex.search`` (the search under ``kneighbors``) against a bare
  ``faiss.IndexFlatIP`` on the same normalised vectors (100k x 128 gallery, 10k queries,
  exact);
* ``kneighbors``: ``UniversalCDRRetriever.kneighbors`` end to end (validate and embed
  the 10k queries, then search the 100k gallery) against a bare torch forward of the
  same module (same batches, same per-domain input scaling) plus bare faiss;
* ``transform``: throughput of ``transform`` on 10k images against a bare torch forward
  of the same module in the same batches;
* ``train step``: the training loop of ``fit`` (skorch, callbacks, loss history)
  against a bare torch loop (same module, objective, optimizer and schedule);
* ``mAP``: ``mean_average_precision`` on 10k x 10k against a plain NumPy computation
  (values checked equal).

With ``--scaling``, also the fit time (2 epochs) and peak memory of a default image fit
at 1k ... 20k images per domain, each in a fresh process (table and plot).

    python benchmarks/speed.py --threads 2 --scaling

Writes ``benchmarks/results/speed.{json,md}`` (and ``fit_scaling.png``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

RESULTS = Path(__file__).parent / "results"


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def paired(repeats, ours, baseline):
    """Best times of ``ours`` and ``baseline``, run in alternation (a busy moment of the
    machine hits both), each the minimum over ``repeats`` rounds."""
    times = [(best_of(1, ours), best_of(1, baseline)) for _ in range(repeats)]
    return min(t[0] for t in times), min(t[1] for t in times)


def clusters(rng, n, dim, n_clusters=500, shift=0.0, noise=0.4):
    centers = np.random.RandomState(1).randn(n_clusters, dim).astype(np.float32)
    labels = rng.randint(n_clusters, size=n)
    return (centers[labels] + noise * rng.randn(n, dim) + shift).astype(np.float32), labels


def search_ratio(rng, repeats):
    import faiss

    from skucdr.neighbors import FaissCosineIndex

    gallery, _ = clusters(rng, 100_000, 128)
    queries, _ = clusters(rng, 10_000, 128)
    ours = FaissCosineIndex("Flat").fit(gallery)
    unit = lambda X: X / np.linalg.norm(X, axis=1, keepdims=True)  # noqa: E731
    bare = faiss.IndexFlatIP(128)
    bare.add(unit(gallery))
    t_ours, t_bare = paired(repeats, lambda: ours.search(queries, 10),
                            lambda: bare.search(unit(queries), 10))
    return {"skucdr_s": t_ours, "baseline_s": t_bare, "ratio": t_ours / t_bare}


def bare_forward(retriever, X, codes):
    """The fitted module on ``X`` as a user would run it: eval mode, no_grad, the same
    batches and per-domain input scaling, L2-normalised."""
    import torch

    from skucdr.nn.domain_norm import domain_codes

    module = retriever.net_.module_.eval()
    step = retriever._inference_batch_size()
    out = []
    with torch.no_grad():
        for start in range(0, len(X), step):
            x = X[start:start + step]
            c = codes[start:start + step]
            if getattr(retriever, "input_mean_", None) is not None:
                x = (x - retriever.input_mean_[c]) / retriever.input_scale_[c]
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            if retriever.image_shape_ is not None:
                x = x.view(-1, *retriever.image_shape_)
            c = torch.from_numpy(c)
            with domain_codes(module, c):
                z = module.embedder(x)
            out.append(torch.nn.functional.normalize(z, dim=1).numpy())
    return np.concatenate(out)


def kneighbors_ratio(rng, repeats):
    import faiss

    from skucdr import UniversalCDRRetriever

    photo, _ = clusters(rng, 3000, 128)
    catalogue, _ = clusters(rng, 3000, 128, shift=0.5)
    retriever = UniversalCDRRetriever(n_components=128, max_epochs=2, random_state=0,
                                      device="cpu").fit({"photo": photo, "catalogue": catalogue})
    gallery, _ = clusters(rng, 100_000, 128, shift=0.5)
    retriever.index_gallery({"catalogue": gallery})
    queries, _ = clusters(rng, 10_000, 128)
    domains = np.full(len(queries), "photo")
    retriever.kneighbors(queries[:5], sample_domain=domains[:5])  # builds the index once
    bare = faiss.IndexFlatIP(128)
    bare.add(retriever.gallery_embedding_)
    photo_code = np.zeros(len(queries), dtype=np.int64)  # "photo" is fitted domain 0
    t_ours, t_bare = paired(
        repeats, lambda: retriever.kneighbors(queries, sample_domain=domains, n_neighbors=10),
        lambda: bare.search(bare_forward(retriever, queries, photo_code), 10))
    ours = retriever.kneighbors(queries[:200], sample_domain=domains[:200], n_neighbors=10)[1]
    same = (ours == bare.search(bare_forward(retriever, queries[:200], photo_code[:200]),
                                10)[1]).mean()
    return {"skucdr_s": t_ours, "baseline_s": t_bare, "ratio": t_ours / t_bare,
            "same_neighbours": float(same)}


def transform_ratio(rng, repeats):
    from skucdr import UniversalCDRRetriever

    images = {d: rng.rand(1000, 3, 28, 28).astype(np.float32) for d in ("a", "b")}
    retriever = UniversalCDRRetriever(max_epochs=1, random_state=0, device="cpu").fit(images)
    X = rng.rand(10_000, 3, 28, 28).astype(np.float32)
    domains = np.full(len(X), "a")
    codes = np.zeros(len(X), dtype=np.int64)
    t_ours, t_bare = paired(repeats, lambda: retriever.transform(X, sample_domain=domains),
                            lambda: bare_forward(retriever, X.reshape(len(X), -1), codes))
    np.testing.assert_allclose(retriever.transform(X[:100], sample_domain=domains[:100]),
                               bare_forward(retriever, X[:100].reshape(100, -1), codes[:100]),
                               atol=1e-6)
    # throughput ratio: rows per second of skucdr over rows per second of bare torch
    return {"skucdr_s": t_ours, "baseline_s": t_bare, "throughput_ratio": t_bare / t_ours}


class _Captured(Exception):
    pass


def _captured_training(images, max_epochs):
    """The module, objective and training arguments a fit hands to the engine."""
    import skucdr._base as base
    from skucdr import UniversalCDRRetriever

    seen = {}
    original = base.train_objective

    def capture(module, objective, **kwargs):
        seen.update(module=module, objective=objective, kwargs=kwargs)
        raise _Captured

    base.train_objective = capture
    try:
        UniversalCDRRetriever(max_epochs=max_epochs, random_state=0, device="cpu").fit(images)
    except _Captured:
        pass
    finally:
        base.train_objective = original
    return seen


def bare_training(module, objective, max_epochs, lr, weight_decay):
    """The same training as a plain torch loop: epoch refresh, domain-balanced batches,
    the objective's losses, backward, Adam, cosine schedule."""
    import torch

    net = SimpleNamespace(module_=module, device="cpu",
                          history=SimpleNamespace(record=lambda *a: None))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay,
                                 foreach=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    for epoch in range(max_epochs):
        objective.on_epoch_begin(net, epoch)
        module.train()
        for batch in objective.batches():
            optimizer.zero_grad()
            losses = objective.losses(net, batch)
            losses["loss"].backward()
            objective.after_backward(net)
            optimizer.step()
        schedule.step()


def train_ratio(rng, repeats, max_epochs=6):
    from skucdr._base import WEIGHT_DECAY
    from skucdr.nn.training import train_objective

    images = {d: rng.rand(600, 3, 28, 28).astype(np.float32) for d in ("a", "b")}

    def ours():
        seen = _captured_training(images, max_epochs)
        return lambda: train_objective(seen["module"], seen["objective"], **seen["kwargs"])

    def bare():
        seen = _captured_training(images, max_epochs)
        return lambda: bare_training(seen["module"], seen["objective"], max_epochs,
                                     seen["kwargs"]["lr"], WEIGHT_DECAY)

    # a fresh module and objective for every run (training changes them)
    t_ours, t_bare = [min(t) for t in zip(*[(best_of(1, ours()), best_of(1, bare()))
                                            for _ in range(repeats)])]
    return {"skucdr_s": t_ours, "baseline_s": t_bare, "ratio": t_ours / t_bare,
            "epochs": max_epochs, "rows_per_domain": 600}


def numpy_map(Q, yq, G, yg):
    """mAP@All as a textbook: full similarity matrix, full sort, cumulative precision."""
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    G = G / np.linalg.norm(G, axis=1, keepdims=True)
    order = np.argsort(-(Q @ G.T), axis=1, kind="stable")
    relevant = yg[order] == yq[:, None]
    hits = np.cumsum(relevant, axis=1)
    precision = hits / np.arange(1, G.shape[0] + 1)
    ap = (precision * relevant).sum(axis=1) / np.maximum(relevant.sum(axis=1), 1)
    return float(ap[relevant.any(axis=1)].mean())


def map_ratio(rng, repeats):
    from skucdr.metrics import mean_average_precision

    # overlapping classes: mAP well below 1, so the two computations are compared on
    # rankings that interleave the classes
    Q, yq = clusters(rng, 10_000, 128, n_clusters=50, noise=1.5)
    G, yg = clusters(rng, 10_000, 128, n_clusters=50, noise=1.5)
    ours = mean_average_precision(Q, yq, G, yg)
    plain = numpy_map(Q, yq, G, yg)
    t_ours = best_of(repeats, lambda: mean_average_precision(Q, yq, G, yg))
    t_bare = best_of(1, lambda: numpy_map(Q, yq, G, yg))
    return {"skucdr_s": t_ours, "baseline_s": t_bare, "ratio": t_ours / t_bare,
            "skucdr_map": ours, "numpy_map": plain}


SCALING_FIT = """
import time, numpy as np, torch
torch.set_num_threads({threads})
from skucdr import UniversalCDRRetriever
rng = np.random.RandomState(0)
X = {{d: rng.rand({n}, 3, 28, 28).astype(np.float32) for d in ("a", "b")}}
start = time.perf_counter()
UniversalCDRRetriever(max_epochs=2, random_state=0, device="cpu").fit(X)
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork and exec)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(time.perf_counter() - start, hwm.split()[1])
"""


def scaling(sizes, threads):
    rows = []
    for n in sizes:
        done = subprocess.run([sys.executable, "-c", SCALING_FIT.format(n=n, threads=threads)],
                              capture_output=True, text=True, check=True)
        seconds, kib = done.stdout.split()[-2:]
        rows.append({"images_per_domain": n, "fit_s": round(float(seconds), 1),
                     "peak_mib": round(int(kib) / 1024)})
        print(rows[-1], flush=True)
    return rows


def plot_scaling(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["images_per_domain"] for r in rows]
    fig, left = plt.subplots(figsize=(6, 3.6))
    left.plot(n, [r["fit_s"] for r in rows], "o-", color="tab:blue")
    left.set_xlabel("images per domain (two domains, 3x28x28)")
    left.set_ylabel("fit time, 2 epochs (s)", color="tab:blue")
    right = left.twinx()
    right.plot(n, [r["peak_mib"] for r in rows], "s--", color="tab:orange")
    right.set_ylabel("peak memory (MiB)", color="tab:orange")
    left.set_title("UniversalCDRRetriever fit: time and memory by domain size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


MEASURES = {"search": search_ratio, "kneighbors": kneighbors_ratio,
            "transform": transform_ratio, "train_step": train_ratio, "map": map_ratio}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000])
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), choices=list(MEASURES),
                        help="measure these again, keeping the others of speed.json")
    args = parser.parse_args(argv)

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.RandomState(0)
    result = {}
    if set(args.measures) != set(MEASURES) and (RESULTS / "speed.json").exists():
        result = json.loads((RESULTS / "speed.json").read_text())
    result.update(threads=args.threads, repeats=args.repeats)
    for name in args.measures:
        result[name] = MEASURES[name](rng, args.repeats)
        print(name, result[name], flush=True)
    if args.scaling:
        result["scaling"] = scaling(args.sizes, args.threads)
        plot_scaling(result["scaling"], RESULTS / "fit_scaling.png")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(result, indent=1))
    lines = ["| measure | skucdr (s) | baseline (s) | ratio | target |", "|---|---:|---:|---:|---|",
             "| `kneighbors` search vs bare faiss (100k x 128, 10k queries, exact) | "
             f"{result['search']['skucdr_s']:.3f} | {result['search']['baseline_s']:.3f} | "
             f"{result['search']['ratio']:.3f}x | <= 1.10x |",
             "| `kneighbors` end to end vs bare torch + bare faiss | "
             f"{result['kneighbors']['skucdr_s']:.3f} | {result['kneighbors']['baseline_s']:.3f}"
             f" | {result['kneighbors']['ratio']:.3f}x | <= 1.15x |",
             "| `transform` throughput vs bare torch forward (10k images 3x28x28) | "
             f"{result['transform']['skucdr_s']:.3f} | {result['transform']['baseline_s']:.3f}"
             f" | {result['transform']['throughput_ratio']:.3f}x | >= 0.9x |",
             "| training loop vs bare torch loop (6 epochs, 2 x 600 images) | "
             f"{result['train_step']['skucdr_s']:.2f} | {result['train_step']['baseline_s']:.2f}"
             f" | {result['train_step']['ratio']:.3f}x | <= 1.15x |",
             "| mAP@All 10k x 10k vs plain NumPy | "
             f"{result['map']['skucdr_s']:.3f} | {result['map']['baseline_s']:.3f} | "
             f"{result['map']['ratio']:.3f}x | (faster is better) |"]
    if "scaling" in result:
        lines += ["", "| images per domain | fit, 2 epochs (s) | peak memory (MiB) |",
                  "|---:|---:|---:|"]
        lines += [f"| {r['images_per_domain']} | {r['fit_s']} | {r['peak_mib']} |"
                  for r in result["scaling"]]
    (RESULTS / "speed.md").write_text("\n".join(lines) + f"\n\n{args.threads} threads.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
