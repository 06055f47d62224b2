"""The ``skucdr`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

METHODS = ("uem", "tpsnet", "raw")


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="skucdr",
        description="Unsupervised cross-domain retrieval (UEM, TPSNet) with a scikit-learn API.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="train on the embedded digit domains, print the retrieval report, save a figure",
        description=(
            "Fit a retriever on two unlabeled digit domains (MNIST, UCI optdigits or an "
            "MNIST-M-style domain, all shipped offline), print mAP@All and P@1/5/15 for both "
            "directions, and save a picture of queries and their top hits."
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
    return parser


def _make_retriever(method, max_epochs, seed, verbose):
    kwargs = dict(random_state=seed, verbose=verbose)
    if max_epochs is not None:
        kwargs["max_epochs"] = max_epochs
    if method == "uem":
        from skucdr import UniversalCDRRetriever

        return UniversalCDRRetriever(**kwargs)
    from skucdr import TextPhaseRetriever

    return TextPhaseRetriever(**kwargs)


def _save_figure(path, X_query, hits_X, query_labels, hit_labels):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('(no figure: matplotlib is not installed; pip install "skucdr[examples]")')
        return None
    n_rows, n_hits = len(X_query), hits_X.shape[1]
    fig, axes = plt.subplots(n_rows, n_hits + 1, figsize=(1.2 * (n_hits + 1), 1.2 * n_rows))
    for i in range(n_rows):
        axes[i, 0].imshow(X_query[i].transpose(1, 2, 0).clip(0, 1))
        axes[i, 0].set_title(f"query {query_labels[i]}", fontsize=7)
        for j in range(n_hits):
            ok = hit_labels[i, j] == query_labels[i]
            ax = axes[i, j + 1]
            ax.imshow(hits_X[i, j].transpose(1, 2, 0).clip(0, 1))
            ax.set_title(str(hit_labels[i, j]), fontsize=7, color="green" if ok else "red")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_demo(args):
    from skucdr import pack_domains
    from skucdr.datasets import load_digit_domains
    from skucdr.metrics import retrieval_report

    query, gallery = args.domains
    if query == gallery:
        raise SystemExit("skucdr demo: pick two different domains.")
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
        retriever = _make_retriever(args.method, args.max_epochs, args.seed,
                                    verbose=0 if args.quiet else 1)
        print(f"Training {type(retriever).__name__} (no labels) ...")
        retriever.fit(X, sample_domain=domains)
        Z = retriever.gallery_embedding_
        print(f"Fitted in {time.perf_counter() - start:.0f} s.")
    report = retrieval_report(Z, y, domains)
    print(report)

    q_rows = np.flatnonzero(domains == query)[:8]
    if retriever is not None:
        idx = retriever.kneighbors(X[q_rows], n_neighbors=6, sample_domain=domains[q_rows],
                                   return_distance=False)
    else:
        g_rows = np.flatnonzero(domains == gallery)
        idx = g_rows[np.argsort(-(Z[q_rows] @ Z[g_rows].T), axis=1)[:, :6]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = _save_figure(out / f"demo_{args.method}_{query}_to_{gallery}.png", X[q_rows], X[idx],
                         y[q_rows], y[idx])
    if saved is not None:
        print(f"Queries and their top hits: {saved}")
    return report


def main(argv=None):
    """Entry point of the ``skucdr`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        run_demo(args)
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
