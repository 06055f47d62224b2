"""Fixtures shared by the test modules: two small domains of feature vectors and of
images, and tiny fitted retrievers of both methods.

Shared fixtures are read-only: their arrays cannot be written, and a test that changes a
fitted model works on ``copy.deepcopy`` of it (the ``fresh`` helper), so that no test
sees what another one did.
"""

import copy

import numpy as np
import pytest

#: settings of a UniversalCDRRetriever fit that takes a second on feature vectors
UEM_TINY = dict(n_components=8, max_epochs=2, batch_size=16, n_prototypes=3, device="cpu",
                random_state=0)
#: a TextPhaseRetriever fit of 3 epochs: one warm-up, one prompt epoch, one stage-2 epoch
TPSNET_TINY = {"n_components": 8, "max_epochs": 3, "prompt_epochs": 1, "batch_size": 16,
               "n_prototypes": 3, "device": "cpu", "random_state": 0}


def _read_only(*arrays):
    for array in arrays:
        array.flags.writeable = False
    return arrays


def class_images(rng, y, shift):
    """3x12x12 images: a bright bar whose position encodes the class, plus a domain tint."""
    X = rng.rand(len(y), 3, 12, 12).astype(np.float32) * 0.2
    for c in range(3):
        X[y == c, :, 2 + 3 * c : 4 + 3 * c, 2:10] += 0.8
    X[:, 0] += shift
    return np.clip(X, 0, 1)


@pytest.fixture(scope="session")
def feature_domains():
    """``(X, y, d)``: 120 feature vectors of 3 classes in domains "a" and "b" (shifted)."""
    rng = np.random.RandomState(0)
    centers = rng.randn(3, 10) * 3
    y = np.tile(np.arange(3), 20)
    Xa = centers[y] + rng.randn(60, 10) * 0.3
    Xb = centers[y] + 1.0 + rng.randn(60, 10) * 0.3
    X = np.vstack([Xa, Xb]).astype(np.float32)
    d = np.array(["a"] * 60 + ["b"] * 60)
    return _read_only(X, np.concatenate([y, y]), d)


@pytest.fixture(scope="session")
def image_domains():
    """``(X, y, d)``: 60 images of 3 classes in domains "a" and "b" (tinted)."""
    rng = np.random.RandomState(0)
    y = np.tile(np.arange(3), 10)
    X = np.concatenate([class_images(rng, y, 0.0), class_images(rng, y, 0.3)])
    d = np.array(["a"] * 30 + ["b"] * 30)
    return _read_only(X, np.concatenate([y, y]), d)


@pytest.fixture(scope="session")
def fitted_uem(feature_domains):
    from skucdr import UniversalCDRRetriever

    X, _, d = feature_domains
    return UniversalCDRRetriever(**UEM_TINY).fit(X, sample_domain=d)


@pytest.fixture(scope="session")
def fitted_tpsnet(image_domains):
    from skucdr import TextPhaseRetriever

    X, _, d = image_domains
    return TextPhaseRetriever(**TPSNET_TINY).fit(X, sample_domain=d)


def fresh(model):
    """A copy of a shared fitted model that a test may change."""
    return copy.deepcopy(model)
