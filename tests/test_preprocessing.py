"""Tests of the phase prior: phase_only_images, PhasePriorExtractor and the torch twin."""

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from skucdr import PhasePriorExtractor, preprocessing
from skucdr.nn.phase import phase_only
from skucdr.preprocessing import LUMA_WEIGHTS, phase_only_images


def _images(n=3, c=3, h=8, w=10, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w))


@parametrize_with_checks(
    [
        PhasePriorExtractor(),
        PhasePriorExtractor(2.0, grayscale=False, output="concat", rescale=None),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# --- the defining property ----------------------------------------------------------------


@pytest.mark.parametrize("amplitude", [1.0, 3.5])
def test_fourier_magnitude_is_the_constant_amplitude(amplitude):
    images = _images(c=1)
    raw = phase_only_images(images, amplitude=amplitude, rescale=None)
    magnitude = np.abs(np.fft.fft2(raw, norm="ortho"))
    np.testing.assert_allclose(magnitude, amplitude, rtol=1e-10)
    # Parseval: the RMS value of the raw phase image is the amplitude.
    np.testing.assert_allclose(np.sqrt((raw**2).mean(axis=(-2, -1))), amplitude)


def test_phase_is_kept():
    images = _images(c=1)
    raw = phase_only_images(images, rescale=None)
    np.testing.assert_allclose(
        np.angle(np.fft.fft2(raw) * np.conj(np.fft.fft2(images))), 0.0, atol=1e-8
    )


@pytest.mark.parametrize("scale, shift", [(0.1, 0.0), (7.0, 0.0), (0.5, 0.3)])
def test_invariant_to_contrast_and_brightness(scale, shift):
    # a*x + b (a, b > 0) changes the amplitude spectrum only: phases (and the positive DC
    # coefficient's phase 0) stay, so the phase image is unchanged.
    images = _images()
    np.testing.assert_allclose(
        phase_only_images(scale * images + shift), phase_only_images(images), atol=1e-10
    )


def test_invariant_to_swapping_in_another_amplitude_spectrum():
    x1, x2 = _images(n=2, c=1, seed=1)[:, 0]
    f1, f2 = np.fft.fft2(x1), np.fft.fft2(x2)
    hybrid = np.fft.ifft2(np.abs(f2) * np.exp(1j * np.angle(f1)))
    assert np.abs(hybrid.imag).max() < 1e-12  # amplitude of a real image: still real
    out_hybrid = phase_only_images(hybrid.real[None, None])
    np.testing.assert_allclose(out_hybrid, phase_only_images(x1[None, None]), atol=1e-9)
    assert not np.allclose(out_hybrid, phase_only_images(x2[None, None]), atol=1e-3)


def test_known_answers_impulses():
    # A constant image has no meaningful non-DC phase: its phase image is an impulse at
    # the origin. An impulse has a flat spectrum already: it is its own phase image.
    constant = np.full((1, 1, 6, 6), 0.7)
    expected = np.zeros((1, 1, 6, 6))
    expected[0, 0, 0, 0] = 1.0
    np.testing.assert_allclose(phase_only_images(constant), expected, atol=1e-12)
    impulse = np.zeros((1, 1, 6, 6))
    impulse[0, 0, 2, 3] = 5.0
    np.testing.assert_allclose(phase_only_images(impulse), impulse / 5.0, atol=1e-12)


def test_single_pixel_constant_output_becomes_zero():
    out = phase_only_images(np.array([[[[3.0]]], [[[-2.0]]]]))
    np.testing.assert_array_equal(out, 0.0)


def test_minmax_range_per_image_and_channel():
    out = phase_only_images(_images(c=3), grayscale=False)
    assert out.shape == (3, 3, 8, 10)
    np.testing.assert_allclose(out.min(axis=(-2, -1)), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.max(axis=(-2, -1)), 1.0)


def test_grayscale_is_itu_601_luma():
    images = _images()
    luma = np.tensordot(np.asarray(LUMA_WEIGHTS), images, axes=([0], [1]))[:, None]
    np.testing.assert_allclose(phase_only_images(images), phase_only_images(luma), atol=1e-12)
    np.testing.assert_allclose(
        phase_only_images(luma), phase_only_images(luma, grayscale=False), atol=1e-12
    )


def test_dtypes_and_errors():
    assert phase_only_images(_images().astype(np.float32)).dtype == np.float32
    assert phase_only_images((_images() * 255).astype(np.uint8)).dtype == np.float64
    with pytest.raises(ValueError, match="1 or 3"):
        phase_only_images(_images(c=2))
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        phase_only_images(_images()[0])
    with pytest.raises(ValueError, match="NaN"):
        phase_only_images(np.full((1, 1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="amplitude"):
        phase_only_images(_images(), amplitude=0.0)


# --- torch twin ---------------------------------------------------------------------------


@pytest.mark.parametrize("grayscale", [True, False])
@pytest.mark.parametrize("rescale", ["minmax", None])
def test_torch_twin_agrees_with_numpy(grayscale, rescale):
    images = _images(n=4, h=16, w=12, seed=3).astype(np.float32)
    expected = phase_only_images(images, amplitude=2.0, grayscale=grayscale, rescale=rescale)
    got = phase_only(torch.from_numpy(images), amplitude=2.0, grayscale=grayscale, rescale=rescale)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-5)
    got64 = phase_only(
        torch.from_numpy(images).double(), amplitude=2.0, grayscale=grayscale, rescale=rescale
    )
    np.testing.assert_allclose(got64.numpy(), expected, atol=1e-6)


def test_torch_twin_special_cases():
    constant = torch.full((2, 3, 5, 5), 0.25)
    out = phase_only(constant)
    assert out.shape == (2, 1, 5, 5)
    assert out[:, 0, 0, 0].eq(1).all() and out.sum().item() == 2.0
    assert phase_only(torch.randint(0, 255, (1, 3, 4, 4), dtype=torch.uint8)).dtype == torch.float32
    x = torch.rand(1, 1, 6, 6, requires_grad=True)
    assert not phase_only(x).requires_grad
    with pytest.raises(ValueError, match="1 or 3"):
        phase_only(torch.rand(1, 4, 3, 3))
    with pytest.raises(TypeError, match="Tensor"):
        phase_only(np.zeros((1, 1, 3, 3)))


# --- the transformer ----------------------------------------------------------------------


def test_layout_follows_input():
    images = _images()
    out4 = PhasePriorExtractor().fit_transform(images)
    assert out4.shape == (3, 1, 8, 10) and out4.dtype == np.float32
    np.testing.assert_allclose(out4, phase_only_images(images), atol=1e-6)

    ext = PhasePriorExtractor(image_shape=(3, 8, 10)).fit(images.reshape(3, -1))
    flat = ext.transform(images.reshape(3, -1))
    assert flat.shape == (3, 80)
    np.testing.assert_array_equal(flat, out4.reshape(3, -1))
    # Fitted on flat rows, it also takes 4-D images (and returns 4-D).
    np.testing.assert_array_equal(ext.transform(images), out4)
    assert ext.image_shape_ == (3, 8, 10) and ext.output_shape_ == (1, 8, 10)


def test_concat_keeps_original_channels_first():
    images = _images()
    ext = PhasePriorExtractor(output="concat", grayscale=False).fit(images)
    out = ext.transform(images)
    assert ext.output_shape_ == (6, 8, 10) and out.shape == (3, 6, 8, 10)
    np.testing.assert_allclose(out[:, :3], images, rtol=1e-6)
    np.testing.assert_allclose(out[:, 3:], phase_only_images(images, grayscale=False), atol=1e-6)
    assert len(ext.get_feature_names_out()) == 6 * 8 * 10


def test_rows_without_image_shape_are_1d_signals():
    X = _images(n=5, c=1, h=1, w=12).reshape(5, 12)
    out = PhasePriorExtractor(rescale=None).fit_transform(X)
    spectrum = np.fft.fft(X, axis=1, norm="ortho")
    expected = np.fft.ifft(spectrum / np.abs(spectrum), axis=1, norm="ortho").real
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_mapping_in_mapping_out():
    images = _images(n=5)
    out = PhasePriorExtractor().fit_transform({"art": images[:2], "photo": images[2:]})
    assert list(out) == ["art", "photo"]
    np.testing.assert_allclose(out["photo"], phase_only_images(images[2:]), atol=1e-6)


def test_chunked_transform_matches(monkeypatch):
    images = _images(n=7)
    expected = PhasePriorExtractor().fit_transform(images)
    monkeypatch.setattr(preprocessing, "_CHUNK_VALUES", 2 * 3 * 8 * 10)
    np.testing.assert_array_equal(PhasePriorExtractor().fit_transform(images), expected)


def test_clear_errors():
    images = _images()
    with pytest.raises(ValueError, match="1 or 3"):
        PhasePriorExtractor().fit(_images(c=2))
    PhasePriorExtractor(grayscale=False).fit(_images(c=2))
    with pytest.raises(ValueError, match="image_shape"):
        PhasePriorExtractor(image_shape=(3, 8, 8)).fit(images.reshape(3, -1))
    ext = PhasePriorExtractor().fit(images)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        ext.transform(images.reshape(3, 3, 10, 8))
    with pytest.raises(TypeError, match="dense"):
        from scipy.sparse import dok_matrix

        PhasePriorExtractor().fit(dok_matrix((3, 4)))


class _RecordsDomains(BaseEstimator):
    """A final pipeline step that consumes sample_domain."""

    __metadata_request__fit = {"sample_domain": True}

    def fit(self, X, y=None, *, sample_domain=None):
        self.seen_domain_ = sample_domain
        self.seen_shape_ = X.shape
        return self


def test_pipeline_routes_sample_domain(recwarn):
    images = _images(n=4)
    domains = np.array(["a", "a", "b", "b"])
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline([("phase", PhasePriorExtractor()), ("model", _RecordsDomains())])
        pipe.fit(images, sample_domain=domains)
        PhasePriorExtractor().fit_transform(images, sample_domain=domains)
    np.testing.assert_array_equal(pipe[-1].seen_domain_, domains)
    assert pipe[-1].seen_shape_ == (4, 1, 8, 10)
    assert not [w for w in recwarn if "metadata" in str(w.message)]
