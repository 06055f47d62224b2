"""
Saving a model, adding to its catalogue, resuming a fit
=======================================================

A retriever is fitted on two digit domains, saved with
``skucdr.persistence.save_retriever`` (JSON and tensors: it loads without pickle, so it
is safe to share), loaded back, given a catalogue with ``index_gallery``, and the
catalogue grows with ``append=True`` (the rows already there are neither re-embedded
nor re-indexed). Last, ``checkpoint_dir`` makes a fit resumable: the same fit run again
picks up where the first stopped (here: where it ended, so it returns at once).

Run: python examples/persistence_and_catalogue.py [--max-epochs N] [--n-per-domain N]
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from skucdr import UniversalCDRRetriever
from skucdr.datasets import load_digit_domains
from skucdr.metrics import mean_average_precision
from skucdr.persistence import load_retriever, save_retriever

parser = argparse.ArgumentParser()
parser.add_argument("--max-epochs", type=int, default=10)
parser.add_argument("--n-per-domain", type=int, default=400)
args = parser.parse_args()

data = load_digit_domains(("mnist", "optdigits"))
(X_m, y_m), (X_o, y_o) = data["mnist"], data["optdigits"]
n = args.n_per_domain
work = Path(tempfile.mkdtemp(prefix="skucdr_example_"))

retriever = UniversalCDRRetriever(max_epochs=args.max_epochs, random_state=0,
                                  checkpoint_dir=work / "checkpoints")
retriever.fit({"mnist": X_m[:n], "optdigits": X_o[:n]})

# %%
# Save and load, without pickle
save_retriever(retriever, work / "model")
print("saved:", sorted(p.name for p in (work / "model").iterdir()))
loaded = load_retriever(work / "model")
same = np.array_equal(loaded.transform({"mnist": X_m[:5]})["mnist"],
                      retriever.transform({"mnist": X_m[:5]})["mnist"])
print("loaded model gives the same embeddings:", same)

# %%
# A catalogue, then more of it
catalogue, more = X_o[n:n + 600], X_o[n + 600:n + 1200]
loaded.index_gallery(catalogue, sample_domain=["optdigits"] * len(catalogue))
queries = X_m[n:n + 200]
loaded.kneighbors(queries, sample_domain=["mnist"] * len(queries))  # builds the index
start = time.perf_counter()
loaded.index_gallery(more, sample_domain=["optdigits"] * len(more), append=True)
print(f"appended {len(more)} rows in {time.perf_counter() - start:.2f} s; gallery now "
      f"{len(loaded.gallery_domain_)} rows")
dist, idx = loaded.kneighbors(queries, n_neighbors=10, sample_domain=["mnist"] * len(queries))
gallery_labels = np.concatenate([y_o[n:n + 600], y_o[n + 600:n + 1200]])
Z_q = loaded.transform(queries, sample_domain=["mnist"] * len(queries))
print(f"mAP@All of 200 MNIST queries on the grown catalogue: "
      f"{mean_average_precision(Z_q, y_m[n:n + 200], loaded.gallery_embedding_, gallery_labels):.3f}")

# %%
# The same fit again, with the same checkpoint directory
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    start = time.perf_counter()
    UniversalCDRRetriever(max_epochs=args.max_epochs, random_state=0,
                          checkpoint_dir=work / "checkpoints").fit(
        {"mnist": X_m[:n], "optdigits": X_o[:n]})
print([str(w.message) for w in caught if "Resuming" in str(w.message)][0])
print(f"returned in {time.perf_counter() - start:.1f} s")
