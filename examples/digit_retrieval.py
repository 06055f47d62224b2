"""Cross-domain retrieval between two unlabeled digit domains.

Fits UniversalCDRRetriever on MNIST and UCI optdigits without labels, prints the
retrieval report (labels are used only to score), and looks up the nearest optdigits
images of a few MNIST queries.

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
X, y, domains = pack_domains(data)  # flat form: X, labels (scoring only), domain per row

params = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
retriever = UniversalCDRRetriever(random_state=0, verbose=1, **params)
retriever.fit(X, sample_domain=domains)  # y is not passed: training is unsupervised

print(retrieval_report(retriever.gallery_embedding_, y, domains))

queries = X[domains == "mnist"][:5]
dist, idx = retriever.kneighbors(queries, n_neighbors=5, sample_domain=["mnist"] * 5)
print("query labels:", y[domains == "mnist"][:5])
print("labels of the top-5 optdigits hits:\n", y[idx])
