import numpy as np
import pytest
from sklearn.base import BaseEstimator

from skucdr import pack_domains, unpack_domains
from skucdr._domains import check_domain_input


class _Est(BaseEstimator):
    pass


def test_pack_and_unpack_keep_domain_order():
    X, d = pack_domains({"sketch": np.zeros((2, 3)), "art": np.ones((3, 3))})
    assert X.shape == (5, 3)
    assert d.tolist() == ["sketch"] * 2 + ["art"] * 3
    back = unpack_domains(X, d)
    assert list(back) == ["sketch", "art"]
    np.testing.assert_array_equal(back["art"], np.ones((3, 3)))


def test_pack_domains_with_labels_and_int_names():
    X, y, d = pack_domains({0: (np.zeros((2, 1, 2, 2)), [1, 2]), 1: (np.ones((1, 1, 2, 2)), [3])})
    assert X.shape == (3, 1, 2, 2)
    assert y.tolist() == [1, 2, 3]
    assert d.dtype.kind == "i"


@pytest.mark.parametrize(
    "mapping, match",
    [
        ({}, "empty mapping"),
        ({"a": np.zeros((0, 3))}, "is empty"),
        ({"a": np.zeros((2, 3)), "b": np.zeros((2, 4))}, "share one row shape"),
        ({"a": np.zeros(3)}, "2-D"),
    ],
)
def test_pack_domains_errors(mapping, match):
    with pytest.raises(ValueError, match=match):
        pack_domains(mapping)


def test_check_domain_input_images_flattened_and_shapes():
    imgs = np.random.rand(4, 3, 5, 5)
    data = check_domain_input(_Est(), imgs, ["a", "a", "b", "b"])
    assert data.X.shape == (4, 75) and data.X.dtype == np.float32
    assert data.image_shape == (3, 5, 5)
    assert data.domain_order == ["a", "b"]
    flat = check_domain_input(_Est(), imgs.reshape(4, -1), None, image_shape=(3, 5, 5))
    np.testing.assert_array_equal(flat.X, data.X)
    assert flat.sample_domain.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(X=np.zeros((3, 4)), sample_domain=["a", "b"]), "one domain label per row"),
        (dict(X=np.zeros((3, 4)), sample_domain=None, image_shape=(1, 3, 3)), "holds 9 values"),
        (dict(X=np.zeros((3, 2, 2)), sample_domain=None), "channel axis"),
        (dict(X={"a": np.zeros((2, 2))}, sample_domain=["a", "a"]), "not both"),
        (dict(X=np.zeros((3, 4)), sample_domain=None, require_images=True), "needs images"),
        (dict(X=np.zeros((2, 8, 8, 3)), sample_domain=None), r"channels-last.*transpose"),
        (dict(X=np.zeros((2, 8, 8, 1)), sample_domain=None), r"channels-last"),
        (dict(X=np.zeros((2, 192)), sample_domain=None, image_shape=(8, 8, 3)),
         r"channels-last.*image_shape=\(3, 8, 8\)"),
    ],
)
def test_check_domain_input_errors(kwargs, match):
    X = kwargs.pop("X")
    sd = kwargs.pop("sample_domain")
    with pytest.raises(ValueError, match=match):
        check_domain_input(_Est(), X, sd, **kwargs)


@pytest.mark.parametrize("shape", [(1, 8, 3), (3, 8, 4), (4, 4, 4), (13, 16, 16)])
def test_check_domain_input_keeps_channels_first_images(shape):
    # a colour-sized first axis is channels-first whatever the last axis; so is any
    # channel count with an image-sized width
    data = check_domain_input(_Est(), np.zeros((2, *shape)), None)
    assert data.image_shape == shape


def test_check_domain_input_rejects_float_domains():
    with pytest.raises(TypeError, match="domain names"):
        check_domain_input(_Est(), np.zeros((2, 2)), np.array([0.5, 1.5]))


def test_a_list_of_arrays_is_told_a_mapping_is_expected():
    from skucdr import UniversalCDRRetriever

    X = np.random.RandomState(0).rand(7, 3).astype(np.float32)
    for given in ([X[:3], X[3:]], (X[:3], X[:3]), [[1.0, 2.0], [3.0]]):
        with pytest.raises(TypeError, match="a mapping of domains is expected"):
            check_domain_input(UniversalCDRRetriever(), given)
    # the rows, or the images, of one array stay array-likes
    assert check_domain_input(UniversalCDRRetriever(), list(X)).X.shape == (7, 3)
    images = [np.zeros((1, 4, 4), dtype=np.float32)] * 3
    assert check_domain_input(UniversalCDRRetriever(), images).image_shape == (1, 4, 4)
