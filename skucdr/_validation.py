"""The checks and small array helpers every skucdr module shares.

One L2 normaliser, one domain order, one domain-label check (domain labels are str or
int, never float, everywhere: fit, metrics, splitters, label-free scores) and the check
that labels compared with fitted domains are of the same kind.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_same_kind", "check_sample_domain", "domain_order", "l2_normalize"]


def l2_normalize(X, *, dtype=np.float32):
    """A new array of ``X``'s rows scaled to unit Euclidean norm (all-zero rows stay zero).

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
    dtype : numpy dtype or None, default=np.float32
        The dtype of the result, cast to before the division; None keeps a float32 or
        float64 input's dtype (float64 for anything else).

    Returns
    -------
    X_normalized : ndarray of shape (n_rows, n_features), C-contiguous
    """
    X = np.asarray(X)
    if dtype is None:
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    X = np.array(X, dtype=dtype, copy=True, order="C")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    X /= norms
    return X


def domain_order(sample_domain):
    """The distinct labels of ``sample_domain`` in order of first appearance, as a list of
    Python values."""
    sample_domain = np.asarray(sample_domain)
    _, first = np.unique(sample_domain, return_index=True)
    return [d.item() if isinstance(d, np.generic) else d for d in sample_domain[np.sort(first)]]


def check_sample_domain(sample_domain, n, rows_of="X"):
    """``sample_domain`` as a 1-D array of ``n`` str or int labels.

    Raises
    ------
    ValueError
        When its shape is not ``(n,)`` or a label is None or NaN.
    TypeError
        When it holds other types than str or int (floats included), or a mix of both.
    """
    if hasattr(sample_domain, "detach") and hasattr(sample_domain, "cpu"):
        sample_domain = sample_domain.detach().cpu().numpy()
    if sample_domain is None:
        raise ValueError(f"sample_domain is None: one domain label per row of {rows_of} "
                         "is needed.")
    sample_domain = np.asarray(sample_domain)
    if sample_domain.ndim != 1 or sample_domain.shape[0] != n:
        raise ValueError(
            f"sample_domain has shape {sample_domain.shape}; expected ({n},), one domain "
            f"label per row of {rows_of}."
        )
    if sample_domain.dtype.kind not in "iuUSO":
        raise TypeError(
            "sample_domain must hold domain names (str) or ints, got dtype "
            f"{sample_domain.dtype}."
        )
    if sample_domain.dtype.kind == "O":
        sample_domain = _labels_from_objects(sample_domain)
    return sample_domain


def _labels_from_objects(sample_domain):
    """An object array of domain labels as str or int labels; missing or mixed ones
    are named in an error."""
    values = sample_domain.tolist()
    missing = [i for i, v in enumerate(values)
               if v is None or (isinstance(v, float) and v != v)]
    if missing:
        raise ValueError(f"sample_domain holds no domain (None or NaN) at rows "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}.")
    kinds = {"str" if isinstance(v, (str, np.str_)) else "int"
             if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else
             type(v).__name__ for v in values}
    if kinds == {"int"}:
        return sample_domain.astype(np.int64)
    if kinds != {"str"}:
        raise TypeError(f"sample_domain must hold domain names (str) or ints, not a mix: "
                        f"found {sorted(kinds)}.")
    return sample_domain.astype(str)


def check_same_kind(labels, fitted, what):
    """Domain labels must be str where the fitted ones are str, ints where they are ints."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "O":
        values = labels.tolist()
        is_str = all(isinstance(v, (str, np.str_)) for v in values)
        is_int = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                     for v in values)
        kind = "str" if is_str else "int" if is_int else "mixed"
    else:
        kind = "str" if labels.dtype.kind in "US" else "int" if labels.dtype.kind in "iu" \
            else labels.dtype.kind
    fitted_kind = "str" if np.asarray(fitted).dtype.kind in "USO" else "int"
    if kind != fitted_kind:
        example = sorted(set(labels.tolist()), key=str)[:5]
        raise TypeError(
            f"{what} holds {kind} labels {example}, but the model's domains are "
            f"{fitted_kind}s {sorted(set(np.asarray(fitted).tolist()), key=str)}."
        )
