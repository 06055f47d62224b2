"""
Choosing hyper-parameters without labels
========================================

``make_label_free_scorer()`` scores a fitted retriever from its embeddings alone: how
often a row and its nearest neighbour in another domain are each other's nearest
neighbours. It plugs into ``GridSearchCV`` with no ``y``. Here the same grid is also
scored with labels (``make_map_scorer``, which unsupervised users do not have) to show
how the two rank the settings.

The grid compares settings of one kind, as the score is meant to: fits of three lengths
(``--max-epochs`` is the longest), with and without merging prototypes across domains.
Do not let it choose between fits with and without augmentation: fits without any keep
neighbourhoods of single images that match across domains without matching digits, and
score higher without labels than their mAP deserves (a run of this example whose grid
also held fits without augmentation chose one of them). ``benchmarks/label_free_selection.py``
measures the rank correlation on full fits of every digit pair (``docs/methods.md``,
"Model selection without labels").

Run: python examples/label_free_selection.py [--max-epochs N] [--n-per-domain N]
"""

import argparse

import numpy as np
import sklearn
from scipy.stats import spearmanr
from sklearn.model_selection import GridSearchCV

from skucdr import UniversalCDRRetriever, pack_domains
from skucdr.datasets import load_digit_domains
from skucdr.metrics import make_label_free_scorer, make_map_scorer
from skucdr.model_selection import DomainStratifiedKFold

parser = argparse.ArgumentParser()
parser.add_argument("--max-epochs", type=int, default=30, help="the grid's longest fit")
parser.add_argument("--n-per-domain", type=int, default=400)
args = parser.parse_args()

data = load_digit_domains(("mnist", "optdigits"))
rng = np.random.default_rng(0)
subset = {k: (X[idx], y[idx]) for k, (X, y) in data.items()
          for idx in [rng.choice(len(X), min(args.n_per_domain, len(X)), replace=False)]}
X, y, domains = pack_domains(subset)

sklearn.set_config(enable_metadata_routing=True)  # sample_domain reaches fit and scorers
search = GridSearchCV(
    UniversalCDRRetriever(random_state=0),
    {"max_epochs": sorted({max(1, args.max_epochs // 9), max(1, args.max_epochs // 3),
                           args.max_epochs}),
     "merge_prototypes": [True, False]},
    scoring={"label_free": make_label_free_scorer(), "map": make_map_scorer()},
    refit="label_free",  # choose without labels
    cv=DomainStratifiedKFold(n_splits=2, shuffle=True, random_state=0),
)
search.fit(X, y, sample_domain=domains)  # y reaches the mAP scorer only
label_free = search.cv_results_["mean_test_label_free"]
mean_ap = search.cv_results_["mean_test_map"]
print("chosen without labels:", search.best_params_)
print(f"Spearman rank correlation, label-free score vs mAP@All: "
      f"{spearmanr(label_free, mean_ap).statistic:.2f} over {len(mean_ap)} settings")

# %%
# The two scores of every setting
try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(label_free, mean_ap)
    for score, ap, params in zip(label_free, mean_ap, search.cv_results_["params"]):
        ax.annotate(f"{params['max_epochs']} epochs"
                    + ("" if params["merge_prototypes"] else ", no merging"),
                    (score, ap), fontsize=7, textcoords="offset points",
                    xytext=(4, 2) if params["merge_prototypes"] else (4, -9))
    ax.set_xlabel("label-free score (no labels)")
    ax.set_ylabel("mAP@All (with labels)")
    ax.set_title("Every setting of the grid, scored both ways", fontsize=9)
    fig.tight_layout()
    plt.show()
