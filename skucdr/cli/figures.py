"""The picture of queries and their hits, shared by ``skucdr demo`` and ``skucdr query``."""

from __future__ import annotations


def save_hit_grid(path, X_query, hits_X, *, query_titles, hit_titles, hit_correct=None,
                  title=None):
    """One row per query: the query image, then its hits, left to right.

    Parameters
    ----------
    path : path-like
        PNG file to write.
    X_query : ndarray of shape (n_queries, C, H, W)
    hits_X : ndarray of shape (n_queries, n_hits, C, H, W)
    query_titles : list of str
    hit_titles : list of list of str
    hit_correct : ndarray of bool of shape (n_queries, n_hits), default=None
        Colours the hit titles green (True) or red (False) when given.
    title : str, default=None
        Figure title.

    Returns
    -------
    path or None
        None when matplotlib is not installed (a message says so).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('(no figure: matplotlib is not installed; pip install "skucdr[examples]")')
        return None
    n_rows, n_hits = len(X_query), hits_X.shape[1]
    fig, axes = plt.subplots(n_rows, n_hits + 1, squeeze=False,
                             figsize=(1.3 * (n_hits + 1), 1.3 * n_rows + 0.4))
    for i in range(n_rows):
        axes[i, 0].imshow(X_query[i].transpose(1, 2, 0).clip(0, 1))
        axes[i, 0].set_title(query_titles[i], fontsize=7, fontweight="bold")
        for j in range(n_hits):
            colour = "black" if hit_correct is None else (
                "green" if hit_correct[i, j] else "red")
            ax = axes[i, j + 1]
            ax.imshow(hits_X[i, j].transpose(1, 2, 0).clip(0, 1))
            ax.set_title(hit_titles[i][j], fontsize=7, color=colour)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
