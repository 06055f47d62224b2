"""scikit-learn's own estimator checks over every skucdr estimator (tiny configurations)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skucdr import PhasePriorExtractor, PrototypeClusterer, UniversalCDRRetriever

TINY_TORCH = dict(n_components=4, max_epochs=1, batch_size=8, n_prototypes=2, device="cpu",
                  random_state=0)


def _estimators():
    estimators = [
        UniversalCDRRetriever(**TINY_TORCH),
        PrototypeClusterer(n_prototypes=3, random_state=0),
        PhasePriorExtractor(),
    ]
    try:
        from skucdr import TextPhaseRetriever
    except (ImportError, AttributeError):  # pragma: no cover - until it lands
        pass
    else:
        estimators.append(TextPhaseRetriever(**TINY_TORCH))
    return estimators


def _expected_failures(estimator):
    return getattr(estimator, "_expected_failed_checks", lambda: {})()


@parametrize_with_checks(_estimators(), expected_failed_checks=_expected_failures)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
