"""End-to-end check of ``device="cuda"`` on a GPU machine (not a test: CI has no GPU).

For each check, a retriever is fitted on the digit domains with ``device="cuda"``, then
``transform``, ``kneighbors``, ``detect_private`` and ``score`` run; a joblib round trip
must give identical ``transform`` and ``kneighbors``; and the saved model is loaded and
used in a second Python process that sees no GPU (``CUDA_VISIBLE_DEVICES=""``), which
must load it on the CPU and give embeddings within float tolerance of the GPU's.

Checks (``--checks``): ``uem`` and ``tpsnet`` (default settings, MNIST<->optdigits: fit
time and mAP@All per direction), ``resnet`` (``encoder="resnet18"`` with weights from a
local file, both retrievers, 6 epochs; needs torchvision), ``clip`` (TextPhaseRetriever
with the text and visual towers of a small randomly initialised open_clip CLIP, 6
epochs; needs open_clip), ``repro`` (two seeded 4-epoch fits: GPU kernels are not
bit-reproducible, the maximal difference is reported). Results: a JSON file.

Usage::

    python benchmarks/cuda_check.py --out cuda_check.json
    python benchmarks/cuda_check.py --checks uem repro --out cuda_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import torch

from skucdr import TextPhaseRetriever, UniversalCDRRetriever
from skucdr.datasets import load_digit_domains
from skucdr.metrics import mean_average_precision

CHECKS = ("uem", "tpsnet", "resnet", "clip", "repro")

_LOAD_WITHOUT_GPU = """
import sys, warnings
import joblib, numpy as np
path = sys.argv[1]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = joblib.load(path)
X, d, Z = np.load(path + ".X.npy"), np.load(path + ".d.npy"), np.load(path + ".Z.npy")
Z_cpu = model.transform(X, sample_domain=d)
model.kneighbors(X[:3], n_neighbors=2, sample_domain=d[:3])
print(model.device_, float(np.abs(Z_cpu - Z).max()),
      any("fitted on device" in str(w.message) for w in caught))
"""


def _pair(a, b, n=None):
    data = load_digit_domains((a, b))
    (Xa, ya), (Xb, yb) = data[a], data[b]
    if n is not None:
        Xa, ya, Xb, yb = Xa[:n], ya[:n], Xb[:n], yb[:n]
    X = np.concatenate([Xa, Xb]).astype(np.float32)
    return X, np.concatenate([ya, yb]), np.array([a] * len(Xa) + [b] * len(Xb))


def check_model(model, X, y, d, device):
    """Fit on ``device`` and exercise the whole estimator surface; a dict of findings."""
    a, b = dict.fromkeys(d.tolist())
    start = time.perf_counter()
    model.fit(X, sample_domain=d)
    fit_seconds = time.perf_counter() - start
    on_device = next(model.net_.module_.parameters()).device.type
    Z = model.transform(X, sample_domain=d)
    qa, qb = d == a, d == b
    maps = [mean_average_precision(Z[qa], y[qa], Z[qb], y[qb]),
            mean_average_precision(Z[qb], y[qb], Z[qa], y[qa])]
    _, idx = model.kneighbors(X[:50], n_neighbors=5, sample_domain=d[:50])
    private = model.detect_private(X[:200], sample_domain=d[:200])
    path = os.path.join(tempfile.mkdtemp(), "model.joblib")
    joblib.dump(model, path)
    back = joblib.load(path)
    identical = (np.array_equal(back.transform(X, sample_domain=d), Z)
                 and np.array_equal(back.kneighbors(X[:50], 5, sample_domain=d[:50])[1], idx))
    for suffix, array in ((".X.npy", X), (".d.npy", d), (".Z.npy", Z)):
        np.save(path + suffix, array)
    loaded = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_GPU, path],
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
                            capture_output=True, text=True)
    cpu_device, max_diff, warned = (loaded.stdout.split() + [None] * 3)[:3]
    return {
        "device_": model.device_, "parameters_on": on_device,
        "fit_seconds": round(fit_seconds, 1),
        "epoch_seconds": [round(row["dur"], 2) for row in model.history_],
        "map_all": [round(m, 4) for m in maps],
        "score": round(model.score(X, y, sample_domain=d), 4),
        "private_fraction": float(private.mean()),
        "joblib_round_trip_identical": bool(identical),
        "load_without_gpu": {"returncode": loaded.returncode, "device_": cpu_device,
                             "max_abs_embedding_diff": max_diff, "warned": warned,
                             "stderr_tail": loaded.stderr[-600:] if loaded.returncode else ""},
    }


def run(checks, device):
    yield "versions", {"torch": torch.__version__, "cuda": torch.version.cuda,
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    X, y, d = _pair("mnist", "optdigits")
    if "uem" in checks:
        yield "uem_default", check_model(
            UniversalCDRRetriever(device=device, random_state=0), X, y, d, device)
    if "tpsnet" in checks:
        yield "tpsnet_default", check_model(
            TextPhaseRetriever(device=device, random_state=0), X, y, d, device)
    small = _pair("mnist", "mnist_m", n=600)
    if "resnet" in checks:
        import torchvision

        weights = os.path.join(tempfile.mkdtemp(), "resnet18.pt")
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
        for name, cls in (("uem", UniversalCDRRetriever), ("tpsnet", TextPhaseRetriever)):
            yield f"{name}_resnet18", check_model(
                cls(encoder="resnet18", encoder_weights=weights, max_epochs=6, device=device,
                    random_state=0), *small, device)
    if "clip" in checks:
        import open_clip

        from skucdr.tpsnet.text import OpenCLIPTextTower

        torch.manual_seed(0)
        clip = open_clip.CLIP(
            embed_dim=16,
            vision_cfg={"image_size": 28, "layers": 1, "width": 32, "patch_size": 7,
                        "head_width": 16},
            text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                      "layers": 2},
        ).eval()
        yield "tpsnet_open_clip", check_model(
            TextPhaseRetriever(text_tower=OpenCLIPTextTower(clip), encoder=clip.visual,
                               max_epochs=6, device=device, random_state=0), *small, device)
    if "repro" in checks:
        fits = [UniversalCDRRetriever(max_epochs=4, device=device, random_state=3)
                .fit_transform(X[:1000], sample_domain=d[:1000]) for _ in range(2)]
        yield "repro_max_abs_diff", float(np.abs(fits[0] - fits[1]).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="cuda_check.json")
    args = parser.parse_args(argv)
    report = {}
    for name, finding in run(args.checks, args.device):
        report[name] = finding
        print(name, json.dumps(finding), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1))  # kept if a later check fails


if __name__ == "__main__":
    main()
