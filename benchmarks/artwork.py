"""Real artwork by different artists: category and item retrieval (not a test).

The data (``artwork_data.py``: how it is fetched, the licences, what is held out) are
the same ~1,530 emoji drawn by JoyPixels and by Microsoft's Fluent Emoji in a flat colour
style and a black high-contrast line-art style, at 64 pixels, in 8 categories (Unicode's
emoji groups). Two pairs:

* ``joypixels-fluent_flat``: colour against colour, two artists;
* ``joypixels-fluent_hc``: colour against black line art, two artists.

Protocol (as ``quality.py``): transductive, each row fits on the unlabeled images of
both domains and retrieves among them; labels and identities are used for scoring only.
Per direction:

* ``map_all``: category mAP@All;
* ``item_r1`` / ``item_r10``: recall@1 / @10 of the same emoji drawn by the other
  artist, among every image of the gallery domain;
* ``within_map``: category mAP@All of the query domain against itself (leave-one-out):
  how well the embedding groups categories within one artist's drawings, the most that
  aligning the two domains could give;
* ``fit_seconds``: the whole row, backbone passes included;
* in ``open_set``: ``open_set_acc``, the accuracy of flagging queries whose category is
  absent from the gallery (``detect_private``; for the rows without a model, the same
  detector on their features).

Settings by category subsets (``skucdr.datasets.make_category_shift``): ``closed``,
``partial`` (the query domain keeps half the categories), ``open_set`` (the gallery
keeps half).

Rows:

* ``raw``: cosine on the 64-pixel RGB pixels;
* ``lite0_features``: EfficientNet-Lite0's ImageNet features, no training, centred per
  domain;
* ``uem_default``: ``UniversalCDRRetriever()`` on the 64-pixel images (the small CNN);
* ``uem_frozen``: ``UniversalCDRRetriever(encoder="efficientnet_lite0",
  freeze_encoder=True)``.

Results are appended to ``results/artwork.json`` after every row (an interrupted run
resumes) and tabulated in ``results/artwork.md``. Run benchmarks one at a time.

Usage::

    python benchmarks/artwork.py                                  # everything
    python benchmarks/artwork.py --rows raw lite0_features --settings closed
    python benchmarks/artwork.py --pairs joypixels-fluent_hc --rows uem_frozen
    python benchmarks/artwork.py --figure docs/_static/artwork_hits.png
    python benchmarks/artwork.py --tpsnet-step-time      # TPSNet on the pretrained backbone
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from artwork_data import load_artwork  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = (("joypixels", "fluent_flat"), ("joypixels", "fluent_hc"))
SETTINGS = ("closed", "partial", "open_set")
ROWS = {
    "raw": "cosine on the 64-pixel RGB pixels",
    "lite0_features": "EfficientNet-Lite0 ImageNet features, no training, centred per domain",
    "uem_default": "UniversalCDRRetriever() (small CNN, 64 px)",
    "uem_frozen": 'UniversalCDRRetriever(encoder="efficientnet_lite0", freeze_encoder=True)',
}


def _l2(Z):
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def lite0_features(X, domains):
    """EfficientNet-Lite0's pooled features, centred per domain."""
    import torch

    from skucdr.nn.encoders import build_encoder, encode_frozen

    encoder = build_encoder("efficientnet_lite0", image_shape=X.shape[1:],
                            n_features=int(np.prod(X.shape[1:])))
    Z = encode_frozen(encoder, torch.from_numpy(X), device="cpu").numpy()
    for d in np.unique(domains):
        Z[domains == d] -= Z[domains == d].mean(axis=0)
    return Z


def embed(row, X, domains, seed=0):
    """Embeddings of the images ``X`` by ``row``, its model (or None) and seconds."""
    from skucdr import UniversalCDRRetriever

    start = time.perf_counter()
    model = None
    if row == "raw":
        Z = X.reshape(len(X), -1)
    elif row == "lite0_features":
        Z = lite0_features(X, domains)
    else:
        params = {"uem_default": {},
                  "uem_frozen": {"encoder": "efficientnet_lite0", "freeze_encoder": True}}[row]
        model = UniversalCDRRetriever(**params, random_state=seed, device="cpu")
        Z = model.fit(X, sample_domain=domains).gallery_embedding_
    return Z, model, time.perf_counter() - start


def item_recall(Q, q_items, G, g_items, ks=(1, 10)):
    """Recall@k of each query's own item (the same emoji by the other artist) among all
    gallery rows; queries whose item is not in the gallery are left out."""
    position = {item: i for i, item in enumerate(g_items)}
    keep = np.array([item in position for item in q_items])
    if not keep.any():
        return {k: None for k in ks}
    target = np.array([position[item] for item in q_items[keep]])
    S = _l2(Q[keep]) @ _l2(G).T
    rank = (S > S[np.arange(len(S)), target][:, None]).sum(axis=1)
    return {k: float((rank < k).mean()) for k in ks}


def within_domain_map(Z, labels):
    """Category mAP@All of every row against the other rows of its own domain
    (leave-one-out): how well the embedding groups a category within one artist's
    drawings, the most that aligning two domains' embeddings could give."""
    Z = _l2(Z)
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    order = np.argsort(-S, axis=1, kind="stable")[:, :-1]  # the row itself is last
    relevant = labels[order] == labels[:, None]
    precision = np.cumsum(relevant, axis=1) / np.arange(1, len(Z))
    has = relevant.any(axis=1)
    ap = (precision * relevant).sum(axis=1)[has] / relevant.sum(axis=1)[has]
    return float(ap.mean())


def direction_scores(Z, group, item, domains, query, gallery, model, X, shift):
    from skucdr.metrics import mean_average_precision
    from skucdr.open_set import detect_private_queries

    q, g = domains == query, domains == gallery
    row = {"query": query, "gallery": gallery,
           "map_all": float(mean_average_precision(Z[q], group[q], Z[g], group[g]))}
    recall = item_recall(Z[q], item[q], Z[g], item[g])
    row.update(item_r1=recall[1], item_r10=recall[10],
               within_map=within_domain_map(Z[q], group[q]))
    if shift is not None and shift.setting == "open_set":
        private = np.isin(group[q], shift.private_classes)
        if model is not None:
            flagged = model.detect_private(X[q], sample_domain=domains[q],
                                           gallery_domain=gallery)
        else:
            flagged = detect_private_queries(Z[q], Z[g], max_prototypes=20, random_state=0)
        row["open_set_acc"] = float((flagged == private).mean())
    return row


def run_one(row, pair, setting, data, seed=0):
    from skucdr import pack_domains
    from skucdr.datasets import make_category_shift

    a, b = pair
    directions = [(a, b), (b, a)]
    fits = [(None, directions)] if setting == "closed" else [(d, [d]) for d in directions]
    rows = []
    for query_pair, dirs in fits:
        subset = {d: data[d] for d in pair}
        shift = None
        if setting != "closed":
            shift = make_category_shift({d: subset[d][1] for d in pair}, setting,
                                        query_domain=query_pair[0], seed=2024 + seed)
            subset = {d: tuple(part[shift.masks[d]] for part in subset[d]) for d in pair}
        X, group, domains = pack_domains({d: (v[0], v[1]) for d, v in subset.items()})
        item = np.concatenate([subset[d][2] for d in pair])
        Z, model, seconds = embed(row, X, domains, seed)
        for query, gallery in dirs:
            scores = direction_scores(Z, group, item, domains, query, gallery, model, X,
                                      shift)
            scores.update(row=row, setting=setting, seed=seed, fit_seconds=seconds)
            rows.append(scores)
            print(json.dumps(scores), flush=True)
    return rows


def as_images(data):
    """uint8 (n, H, W, 3) images as float32 (n, 3, H, W) in [0, 1]."""
    return {name: (X.transpose(0, 3, 1, 2).astype(np.float32) / 255, group, item)
            for name, (X, group, item) in data.items()}


def draw_hits(data, path, n_hits=6):
    """A picture of hits by the frozen features: one line-art query of every category
    (Fluent high-contrast) and its nearest Fluent flat-colour images. Only Fluent's
    MIT-licensed artwork is drawn."""
    from skucdr import pack_domains
    from skucdr.cli.figures import save_hit_grid

    pair = ("fluent_hc", "fluent_flat")
    X, group, domains = pack_domains({d: data[d][:2] for d in pair})
    Z = _l2(lite0_features(X, domains))
    q, g = np.flatnonzero(domains == pair[0]), np.flatnonzero(domains == pair[1])
    rng = np.random.default_rng(0)
    queries = [rng.choice(q[group[q] == c]) for c in np.unique(group)]
    hits = g[np.argsort(-(Z[queries] @ Z[g].T), axis=1)[:, :n_hits]]
    return save_hit_grid(
        path, X[queries], X[hits], query_titles=[f"{group[i]}" for i in queries],
        hit_titles=[[group[j] for j in row] for row in hits],
        hit_correct=group[hits] == group[queries][:, None],
        title="Fluent line art (left) and its nearest Fluent colour emoji: EfficientNet-"
              "Lite0 features, no training")


def tpsnet_step_seconds(data, pair=PAIRS[1], n=64, epochs=2):
    """Seconds per optimiser step of ``TextPhaseRetriever(encoder="efficientnet_lite0")``
    (the backbone fine-tuned, as TPSNet trains its feature maps), from a short fit on
    ``n`` images per domain, and the steps of a default fit on the full pair: a default
    TPSNet fit on the pretrained backbone is estimated, not run, on a CPU."""
    import math

    from skucdr import TextPhaseRetriever, pack_domains
    from skucdr._base import AUTO_MIN_STEPS_PER_EPOCH

    X, domains = pack_domains({d: data[d][0][:n] for d in pair})
    model = TextPhaseRetriever(encoder="efficientnet_lite0", max_epochs=epochs,
                               random_state=0, device="cpu")
    start = time.perf_counter()
    model.fit(X, sample_domain=domains)
    seconds = time.perf_counter() - start
    steps = sum(len(e["batches"]) for e in model.history_)
    per_epoch = max(AUTO_MIN_STEPS_PER_EPOCH, math.ceil(len(data[pair[0]][0]) / 32))
    default_steps = TextPhaseRetriever._auto_epochs * per_epoch
    return {"seconds_per_step": seconds / steps, "steps": steps,
            "default_fit_steps": default_steps,
            "default_fit_hours": seconds / steps * default_steps / 3600}


def write_markdown(results, path):
    cols = ["map_all", "item_r1", "item_r10", "within_map", "open_set_acc", "fit_seconds"]
    lines = ["| row | setting | direction | " + " | ".join(cols) + " |",
             "|" + "---|" * (3 + len(cols))]
    order = {name: i for i, name in enumerate(ROWS)}
    entries = sorted((r for e in results.values() for r in e["rows"]),
                     key=lambda r: (SETTINGS.index(r["setting"]), r["query"], r["gallery"],
                                    order.get(r["row"], len(order))))
    for r in entries:
        cells = [("" if r.get(c) is None else f"{r[c]:.3f}" if c != "fit_seconds"
                  else f"{r[c]:.0f}") for c in cols]
        lines.append(f"| {r['row']} | {r['setting']} | {r['query']}→{r['gallery']} | "
                     + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--pairs", nargs="+", choices=["-".join(p) for p in PAIRS],
                        default=["-".join(p) for p in PAIRS])
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="where the packages are fetched "
                        "and rendered (default: ~/.cache/skucdr-artwork)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS / "artwork.json"))
    parser.add_argument("--figure", default=None,
                        help="only draw the picture of hits to this PNG file")
    parser.add_argument("--tpsnet-step-time", action="store_true",
                        help="only time TPSNet's steps on the pretrained backbone and "
                             "estimate a default fit")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = as_images(load_artwork(64, args.data_dir))
    if args.figure:
        draw_hits(data, args.figure)
        return
    if args.tpsnet_step_time:
        print(json.dumps(tpsnet_step_seconds(data)))
        return
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for pair_name in args.pairs:
        pair = tuple(pair_name.split("-"))
        for setting in args.settings:
            for row in args.rows:
                key = f"{row}|{pair_name}|{setting}|{args.seed}"
                if key in results:
                    continue
                results[key] = {"rows": run_one(row, pair, setting, data, args.seed)}
                out.write_text(json.dumps(results, indent=1))
                write_markdown(results, out.with_suffix(".md"))


if __name__ == "__main__":
    main()
