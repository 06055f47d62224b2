"""The one place that imports private scikit-learn names.

scikit-learn's parameter-validation helpers and ``_fit_context`` are private API.
Third-party estimators rely on them widely, but an upgrade may move them; keeping every
such import here means a break touches one file (see skada issue #207).
"""

from sklearn.base import _fit_context  # noqa: F401
from sklearn.utils._param_validation import (  # noqa: F401
    HasMethods,
    Interval,
    Options,
    StrOptions,
)
from sklearn.utils.validation import validate_data  # noqa: F401  (public since 1.6)

__all__ = ["HasMethods", "Interval", "Options", "StrOptions", "_fit_context", "validate_data"]
