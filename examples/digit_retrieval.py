"""
Cross-domain retrieval between two unlabeled digit domains
==========================================================

Fits UniversalCDRRetriever on MNIST and UCI optdigits without labels, prints the
retrieval report (labels are used only to score), looks up the nearest optdigits
images of MNIST queries, and draws three pictures: the training losses from
``history_``, one query of every class with its hits, and a 2-D map (t-SNE) of the
rows before training (raw pixels) and after (the learned embedding), coloured by class
and marked by domain.

Run: python examples/digit_retrieval.py [--max-epochs N] [--n-per-domain N]
"""

import argparse

import numpy as np

from skucdr import UniversalCDRRetriever, pack_domains
from skucdr.datasets import load_digit_domains
from skucdr.metrics import retrieval_report

parser = argparse.ArgumentParser()
parser.add_argument("--max-epochs", type=int, default=None)
parser.add_argument("--n-per-domain", type=int, default=None,
                    help="a random subset of each domain, for a quick run")
args = parser.parse_args()

data = load_digit_domains(("mnist", "optdigits"))
if args.n_per_domain:
    rng = np.random.default_rng(0)
    data = {name: (X[idx], y[idx]) for name, (X, y) in data.items()
            for idx in [rng.choice(len(X), min(args.n_per_domain, len(X)), replace=False)]}
params = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
retriever = UniversalCDRRetriever(random_state=0, verbose=1, **params)
# a mapping of domains to their images: no labels, training is unsupervised
retriever.fit({name: X for name, (X, _) in data.items()})

# the flat form of the same rows (the mapping's domains joined in its order), with the
# labels, which only score: X, y, one domain name per row
X, y, domains = pack_domains(data)

print(retrieval_report(retriever.gallery_embedding_, y, domains))

queries = X[domains == "mnist"][:5]
dist, idx = retriever.kneighbors(queries, n_neighbors=5, sample_domain=["mnist"] * 5)
print("query labels:", y[domains == "mnist"][:5])
print("labels of the top-5 optdigits hits:\n", y[idx])

# %%
# Pictures (skipped without matplotlib: ``pip install "skucdr[examples]"``)
try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None

if plt is not None:
    from sklearn.manifold import TSNE

    # the losses of every epoch, as the fit recorded them
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name in sorted({k for row in retriever.history_ for k in row if k.startswith("loss_")}):
        epochs = [row["epoch"] for row in retriever.history_ if name in row]
        ax.plot(epochs, [row[name] for row in retriever.history_ if name in row], "o-",
                label=name[5:], markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("UniversalCDRRetriever: training losses (history_)")
    ax.legend(fontsize=8)
    fig.tight_layout()

    # one MNIST query of every class, and its five nearest optdigits images
    mnist, optdigits = np.flatnonzero(domains == "mnist"), np.flatnonzero(domains == "optdigits")
    firsts = [mnist[y[mnist] == c][0] for c in np.unique(y[mnist])]
    _, hits = retriever.kneighbors(X[firsts], n_neighbors=5, sample_domain=["mnist"] * len(firsts))
    fig, axes = plt.subplots(len(firsts), 6, figsize=(6, 1.05 * len(firsts)), squeeze=False)
    for i, (q, row) in enumerate(zip(firsts, hits)):
        axes[i, 0].imshow(X[q].transpose(1, 2, 0))
        axes[i, 0].set_ylabel(f"MNIST {y[q]}", fontsize=7, rotation=0, labelpad=22)
        for j, hit in enumerate(row):
            axes[i, j + 1].imshow(X[hit].transpose(1, 2, 0))
            axes[i, j + 1].set_title(str(y[hit]), fontsize=7,
                                     color="green" if y[hit] == y[q] else "red")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("MNIST queries (left) and their nearest optdigits images", fontsize=9)
    fig.tight_layout()

    # a 2-D map of 300 rows of each domain, before and after training
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(mnist, min(300, len(mnist)), replace=False),
                           rng.choice(optdigits, min(300, len(optdigits)), replace=False)])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, (title, Z) in zip(axes, [("before: raw pixels", X[rows].reshape(len(rows), -1)),
                                     ("after: the learned embedding",
                                      retriever.gallery_embedding_[rows])]):
        xy = TSNE(init="pca", perplexity=30, random_state=0).fit_transform(Z)
        for domain, marker in (("mnist", "o"), ("optdigits", "^")):
            mask = domains[rows] == domain
            points = ax.scatter(xy[mask, 0], xy[mask, 1], c=y[rows][mask], cmap="tab10",
                                vmin=0, vmax=9, marker=marker, s=10, label=domain)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.5)
    fig.colorbar(points, ax=axes, label="digit (colour)", shrink=0.8)
    fig.suptitle("t-SNE of MNIST (o) and optdigits (^) rows, coloured by digit", fontsize=9)
    plt.show()
