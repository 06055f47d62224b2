"""``skucdr demo``: fit on two digit domains that ship offline, report, draw the hits."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .figures import save_hit_grid

METHODS = ("uem", "tpsnet", "raw")


def add_parser(sub):
    demo = sub.add_parser(
        "demo",
        help="train on the embedded digit domains, print the retrieval report, save a figure",
        description=(
            "Fit a retriever on two unlabeled digit domains (MNIST, UCI optdigits or an "
            "MNIST-M-style domain, all shipped offline), print mAP@All and P@1/5/15 for both "
            "directions, and save a picture of one query per class and its top hits."
        ),
    )
    demo.add_argument("--domains", nargs=2, default=["mnist", "optdigits"],
                      choices=["mnist", "optdigits", "mnist_m"], metavar="DOMAIN",
                      help="query and gallery domains (default: mnist optdigits)")
    demo.add_argument("--method", choices=METHODS, default="uem",
                      help="uem = UniversalCDRRetriever, tpsnet = TextPhaseRetriever, "
                           "raw = cosine on raw pixels (baseline)")
    demo.add_argument("--max-epochs", type=int, default=None,
                      help="training epochs (default: the estimator's default)")
    demo.add_argument("--seed", type=int, default=0, help="random_state (default: 0)")
    demo.add_argument("--out", default="skucdr_demo_out",
                      help="folder for the figure (default: ./skucdr_demo_out)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar or loss table")
    demo.set_defaults(run=run)


def make_retriever(method, *, max_epochs=None, seed=0, verbose=0, **params):
    """The retriever of ``method`` (``"uem"`` or ``"tpsnet"``) with the given settings."""
    from skucdr import TextPhaseRetriever, UniversalCDRRetriever

    kwargs = dict(random_state=seed, verbose=verbose, **params)
    if max_epochs is not None:
        kwargs["max_epochs"] = max_epochs
    Retriever = UniversalCDRRetriever if method == "uem" else TextPhaseRetriever
    return Retriever(**kwargs)


def one_query_per_class(y, rows, n_max=10):
    """Up to ``n_max`` rows of ``rows``: the first of each class, classes in order."""
    labels = y[rows]
    firsts = [rows[np.flatnonzero(labels == c)[0]] for c in np.unique(labels)]
    return np.asarray(firsts[:n_max])


def run(args):
    from skucdr import pack_domains
    from skucdr.datasets import load_digit_domains
    from skucdr.metrics import retrieval_report

    query, gallery = args.domains
    if query == gallery:
        raise ValueError("pick two different domains.")
    data = load_digit_domains((query, gallery), random_state=args.seed)
    X, y, domains = pack_domains(data)
    print(f"Domains: {query} ({len(data[query][0])} images), {gallery} "
          f"({len(data[gallery][0])} images); labels are used only for scoring.")
    start = time.perf_counter()
    if args.method == "raw":
        Z = X.reshape(len(X), -1)
        Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        retriever = None
        print("Baseline: cosine similarity on raw pixels (no training).")
    else:
        retriever = make_retriever(args.method, max_epochs=args.max_epochs, seed=args.seed,
                                   verbose=0 if args.quiet else 1)
        print(f"Training {type(retriever).__name__} (no labels) ...")
        retriever.fit(X, sample_domain=domains)
        Z = retriever.gallery_embedding_
        print(f"Fitted in {time.perf_counter() - start:.0f} s.")
    report = retrieval_report(Z, y, domains)
    print(report)

    q_rows = one_query_per_class(y, np.flatnonzero(domains == query))
    if retriever is not None:
        idx = retriever.kneighbors(X[q_rows], n_neighbors=6, sample_domain=domains[q_rows],
                                   gallery_domain=gallery, return_distance=False)
    else:
        g_rows = np.flatnonzero(domains == gallery)
        idx = g_rows[np.argsort(-(Z[q_rows] @ Z[g_rows].T), axis=1)[:, :6]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = save_hit_grid(
        out / f"demo_{args.method}_{query}_to_{gallery}.png", X[q_rows], X[idx],
        query_titles=[f"{query}: {c}" for c in y[q_rows]],
        hit_titles=[[str(c) for c in row] for row in y[idx]],
        hit_correct=y[idx] == y[q_rows][:, None],
        title=f"One query per class from {query}, its top hits in {gallery}",
    )
    if saved is not None:
        print(f"Queries and their top hits: {saved}")
    return report
