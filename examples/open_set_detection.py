"""
Open-set retrieval: queries whose category is missing from the gallery
=======================================================================

The gallery (optdigits) keeps a seeded half of the digits; MNIST queries of the other
half have no match and should be flagged by ``detect_private`` (UEM, appendix B.1).

Run: python examples/open_set_detection.py [--max-epochs N] [--n-per-domain N]
"""

import argparse

import numpy as np

from skucdr import UniversalCDRRetriever, pack_domains
from skucdr.datasets import load_digit_domains, make_category_shift
from skucdr.metrics import mean_average_precision

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
shift = make_category_shift({k: v[1] for k, v in data.items()}, "open_set", query_domain="mnist")
print("gallery keeps", shift.gallery_classes, "- private query classes:", shift.private_classes)
X, y, domains = pack_domains(shift.apply(data))

params = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
retriever = UniversalCDRRetriever(random_state=0, **params).fit(X, sample_domain=domains)

q = domains == "mnist"
flagged = retriever.detect_private(X[q], sample_domain=domains[q])
private = np.isin(y[q], shift.private_classes)
print(f"detection accuracy: {(flagged == private).mean():.3f}")
Z = retriever.gallery_embedding_
shared = q & ~np.isin(y, shift.private_classes)
print(f"shared-class mAP@All: {mean_average_precision(Z[shared], y[shared], Z[~q], y[~q]):.3f}")
