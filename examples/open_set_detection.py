"""
Partial and open-set retrieval: galleries with more, or fewer, categories
=========================================================================

Two collections seldom hold the same categories. Both universal settings are built here
from MNIST (queries) and optdigits (gallery) with a seeded half of the digits
(``make_category_shift``):

* **partial**: the queries show only half of the digits, the gallery all ten; the other
  five are distractors. Nothing changes in how the retriever is used: it is measured by
  ``mAP@All`` over the queries, and the distractors cost it when they come first;
* **open set**: the gallery keeps only half of the digits, so MNIST queries of the other
  half have no match. ``detect_private`` flags them (UEM, appendix B.1) so that they can
  be answered "no match in this collection" instead of with wrong hits.

The retriever never sees a label: the same fit serves every setting, and the labels are
used for scoring only. The figure shows, digit by digit, the ``mAP@All`` of the partial
setting's queries and how often the open-set queries were flagged.

Run: python examples/open_set_detection.py [--max-epochs N] [--n-per-domain N]
"""

import argparse

import matplotlib.pyplot as plt
import numpy as np

from skucdr import UniversalCDRRetriever, pack_domains
from skucdr.datasets import load_digit_domains, make_category_shift
from skucdr.metrics import mean_average_precision

parser = argparse.ArgumentParser()
parser.add_argument("--max-epochs", type=int, default=None)
parser.add_argument("--n-per-domain", type=int, default=None,
                    help="a random subset of each domain, for a quick run")
args = parser.parse_args()
params = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}

data = load_digit_domains(("mnist", "optdigits"))
if args.n_per_domain:
    rng = np.random.default_rng(0)
    data = {name: (X[idx], y[idx]) for name, (X, y) in data.items()
            for idx in [rng.choice(len(X), min(args.n_per_domain, len(X)), replace=False)]}
labels = {name: y for name, (X, y) in data.items()}
digits = np.arange(10)

# %%
# Partial: the queries hold half of the digits, the gallery all of them
# ----------------------------------------------------------------------
partial = make_category_shift(labels, "partial", query_domain="mnist")
print("partial: the queries keep", partial.query_classes)
X, y, domains = pack_domains(partial.apply(data))
retriever = UniversalCDRRetriever(random_state=0, **params).fit(X, sample_domain=domains)
Z = retriever.gallery_embedding_
q = domains == "mnist"
partial_map = {}
for digit in partial.query_classes:
    rows = q & (y == digit)
    partial_map[digit] = mean_average_precision(Z[rows], y[rows], Z[~q], y[~q])
print(f"partial: mAP@All {mean_average_precision(Z[q], y[q], Z[~q], y[~q]):.3f} "
      "(the gallery's five other digits are distractors)")

# %%
# Open set: the gallery holds half of the digits; the other queries must be flagged
# ---------------------------------------------------------------------------------
shift = make_category_shift(labels, "open_set", query_domain="mnist")
print("open set: the gallery keeps", shift.gallery_classes,
      "- private query classes:", shift.private_classes)
X, y, domains = pack_domains(shift.apply(data))
retriever = UniversalCDRRetriever(random_state=0, **params).fit(X, sample_domain=domains)

q = domains == "mnist"
flagged = retriever.detect_private(X[q], sample_domain=domains[q])
private = np.isin(y[q], shift.private_classes)
# the mean of the accuracies on private and on shared queries: 0.5 for flagging all or none
accuracy = 0.5 * (flagged[private].mean() + (~flagged[~private]).mean())
print(f"detection accuracy: {(flagged == private).mean():.3f} (balanced: {accuracy:.3f})")
Z = retriever.gallery_embedding_
shared = q & ~np.isin(y, shift.private_classes)
print(f"shared-class mAP@All: {mean_average_precision(Z[shared], y[shared], Z[~q], y[~q]):.3f}")

# %%
# Digit by digit
# --------------
flag_rate = np.array([flagged[y[q] == digit].mean() for digit in digits])
is_private = np.isin(digits, shift.private_classes)
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
left.bar(list(partial_map), list(partial_map.values()), color="tab:blue")
left.set(xticks=digits, ylim=(0, 1.15), xlabel="query digit (MNIST)", ylabel="mAP@All",
         title="partial: queries of 5 digits, gallery of 10")
right.bar(digits[is_private], flag_rate[is_private], color="tab:red",
          label="private: no match in the gallery")
right.bar(digits[~is_private], flag_rate[~is_private], color="tab:green",
          label="shared: the gallery has it")
right.set(xticks=digits, ylim=(0, 1.15), xlabel="query digit (MNIST)",
          ylabel="share of queries flagged", title="open set: detect_private")
right.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
fig.tight_layout()
plt.show()
