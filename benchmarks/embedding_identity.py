"""Embeddings of short default fits, for checking that a change leaves results identical.

Fits, on 300 rows of MNIST and MNIST-M, with one torch thread: UniversalCDRRetriever on
images (6 epochs: both stages), on feature vectors (the MLP and per-domain
standardisation), and TextPhaseRetriever (9 epochs: warm-up, prompts and stage 2); saves
their embeddings, a ``kneighbors`` result and the bytes of a saved model directory. Run
it on two commits and compare:

    python benchmarks/embedding_identity.py before.npz      # on the old commit
    python benchmarks/embedding_identity.py after.npz       # on the new one
    python benchmarks/embedding_identity.py --compare before.npz after.npz
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def embeddings():
    import torch

    from skucdr import TextPhaseRetriever, UniversalCDRRetriever
    from skucdr.datasets import load_digit_domains

    torch.set_num_threads(1)
    data = load_digit_domains(("mnist", "mnist_m"))
    images = {k: v[0][:300] for k, v in data.items()}
    features = {k: v.reshape(len(v), -1)[:, ::7].astype(np.float32) for k, v in images.items()}
    out = {}
    fits = (("uem", UniversalCDRRetriever(max_epochs=6, random_state=0), images),
            ("uemf", UniversalCDRRetriever(max_epochs=6, random_state=1), features),
            ("tps", TextPhaseRetriever(max_epochs=9, prompt_epochs=2, random_state=0), images))
    for name, model, X in fits:
        for domain, Z in model.fit(X).transform(X).items():
            out[f"{name}_{domain}"] = Z
    out["tps_knn"] = model.kneighbors(images["mnist"][:20], sample_domain=["mnist"] * 20,
                                      return_distance=False)
    out["tps_saved"] = _saved_bytes(model)
    return out


def _saved_bytes(model):
    """The bytes of ``model``'s model directory (config.json, weights.pt), as uint8."""
    import tempfile
    from pathlib import Path

    from skucdr.persistence import save_retriever

    def timeless(value):  # epoch durations change from run to run
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if k != "dur"}
        return [timeless(v) for v in value] if isinstance(value, list) else value

    with tempfile.TemporaryDirectory() as directory:
        save_retriever(model, directory)
        config = json.loads((Path(directory) / "config.json").read_text())
        parts = [json.dumps(timeless(config)).encode(),
                 (Path(directory) / "weights.pt").read_bytes()]
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", help="file to save the embeddings in")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = parser.parse_args(argv)
    if args.compare:
        a, b = (np.load(path) for path in args.compare)
        same = {k: bool(k in b and np.array_equal(a[k], b[k])) for k in a}
        for key, equal in same.items():
            print(f"{key}: {'identical' if equal else 'DIFFERENT'}")
        return 0 if all(same.values()) and set(a) == set(b) else 1
    if not args.out:
        parser.error("give a file to save the embeddings in, or --compare A B")
    np.savez(args.out, **embeddings())
    return 0


if __name__ == "__main__":
    sys.exit(main())
