"""The one place that imports private scikit-learn names.

scikit-learn's parameter-validation helpers and ``_fit_context`` are private API.
Third-party estimators rely on them widely, but an upgrade may move them; keeping every
such import here means a break touches one file (see skada issue #207).
"""

from sklearn.base import _fit_context  # noqa: F401
from sklearn.utils._set_output import _get_output_config
from sklearn.utils._param_validation import (  # noqa: F401
    HasMethods,
    Interval,
    Options,
    StrOptions,
    validate_params,
)
from sklearn.utils.validation import validate_data  # noqa: F401  (public since 1.6)

__all__ = [
    "HasMethods",
    "Interval",
    "Options",
    "StrOptions",
    "_fit_context",
    "check_tabular_output",
    "validate_data",
]


def check_tabular_output(estimator, *, from_mapping, ndim):
    """Refuse, with a clear message, outputs that ``set_output(transform="pandas")`` (or
    polars) cannot hold: a mapping of domains, or images (4-D)."""
    container = _get_output_config("transform", estimator)["dense"]
    if container == "default":
        return
    name = type(estimator).__name__
    if from_mapping:
        raise ValueError(
            f"{name}.set_output(transform={container!r}) gives one table, but X is a "
            "mapping of domains: pass the flat form (pack_domains(...) and sample_domain=), "
            "or set_output(transform='default') for a mapping of arrays."
        )
    if ndim > 2:
        raise ValueError(
            f"{name}.set_output(transform={container!r}) gives a table, but the output "
            "holds images (4-D): pass flattened images with image_shape=(C, H, W), or "
            "set_output(transform='default')."
        )
