"""Datasets of images in place of arrays: rows decoded when needed, results unchanged."""

import numpy as np
import pytest

from skucdr import PrototypeClusterer, TextPhaseRetriever, UniversalCDRRetriever
from skucdr._lazy import LazyImages

rng = np.random.RandomState(0)
IMAGES = {"photos": rng.rand(40, 1, 8, 8).astype(np.float32),
          "sketches": rng.rand(30, 1, 8, 8).astype(np.float32)}
TINY = dict(n_components=4, max_epochs=2, batch_size=8, n_prototypes=2, device="cpu",
            random_state=0)


class ArrayDataset:
    """A map-style dataset over an array, recording every item read."""

    def __init__(self, images):
        self.images = images
        self.reads = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.reads += 1
        return self.images[i]


def _datasets():
    return {d: ArrayDataset(X) for d, X in IMAGES.items()}


@pytest.mark.parametrize("estimator", [
    UniversalCDRRetriever(**TINY),
    UniversalCDRRetriever(**TINY, encoder="cnn", freeze_encoder=True),
    TextPhaseRetriever(**TINY, prompt_epochs=1),
], ids=["uem", "uem-frozen", "tpsnet"])
def test_a_dataset_fits_and_answers_as_its_array(estimator):
    from sklearn.base import clone

    on_arrays = clone(estimator).fit(IMAGES)
    datasets = _datasets()
    on_datasets = clone(estimator).fit(datasets)
    assert all(d.reads > 0 for d in datasets.values())
    assert on_datasets.image_shape_ == (1, 8, 8) and on_datasets.n_features_in_ == 64
    for query in (IMAGES, _datasets()):
        Z, Z_ref = on_datasets.transform(query), on_arrays.transform(IMAGES)
        for d in IMAGES:
            np.testing.assert_array_equal(Z[d], Z_ref[d])
    flat = np.concatenate([IMAGES["photos"], IMAGES["sketches"]])
    domains = np.repeat(["photos", "sketches"], [40, 30])
    dist, idx = on_datasets.kneighbors(ArrayDataset(flat[:5]), sample_domain=domains[:5])
    ref = on_arrays.kneighbors(flat[:5], sample_domain=domains[:5])
    np.testing.assert_array_equal(idx, ref[1])
    on_datasets.index_gallery(ArrayDataset(flat), sample_domain=domains)
    np.testing.assert_array_equal(on_datasets.gallery_embedding_,
                                  np.concatenate([Z_ref["photos"], Z_ref["sketches"]]))


def test_rows_are_decoded_a_batch_at_a_time(monkeypatch):
    sizes = []
    images = LazyImages.images
    monkeypatch.setattr(LazyImages, "images",
                        lambda self, rows: sizes.append(len(self._row_numbers(rows)))
                        or images(self, rows))
    big = {"a": ArrayDataset(rng.rand(700, 1, 8, 8).astype(np.float32)),
           "b": ArrayDataset(rng.rand(650, 1, 8, 8).astype(np.float32))}
    est = UniversalCDRRetriever(**dict(TINY, max_epochs=1)).fit(big)
    est.transform(big)
    assert max(sizes) <= 512 < 1350  # never every image at once


def test_image_files_are_read_lazily(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    from skucdr.datasets import ImageFileDataset, load_image_folder_domains

    for domain in ("a", "b"):
        (tmp_path / domain).mkdir()
        for i in range(6):
            Image.fromarray((rng.rand(10, 10, 3) * 255).astype(np.uint8)).save(
                tmp_path / domain / f"{i}.png")
    eager = load_image_folder_domains(tmp_path, image_size=8)
    lazy = load_image_folder_domains(tmp_path, image_size=8, lazy=True, num_workers=2)
    assert isinstance(lazy["a"][0], ImageFileDataset) and lazy["a"][0].num_workers == 2
    fit_eager = UniversalCDRRetriever(**TINY).fit({d: X for d, (X, _) in eager.items()})
    fit_lazy = UniversalCDRRetriever(**TINY).fit({d: X for d, (X, _) in lazy.items()})
    np.testing.assert_array_equal(fit_lazy.train_embedding_, fit_eager.train_embedding_)


def test_bad_datasets_are_named():
    class Bad(ArrayDataset):
        def __getitem__(self, i):
            return self.images[i] if i != 3 else self.images[i][:, :4]

    with pytest.raises(ValueError, match=r"Item 3 of the image dataset has shape \(1, 4, 8\)"):
        UniversalCDRRetriever(**TINY).fit({"a": Bad(IMAGES["photos"]),
                                           "b": ArrayDataset(IMAGES["sketches"])})
    with pytest.raises(TypeError, match="mixes image datasets and arrays"):
        UniversalCDRRetriever(**TINY).fit({"a": ArrayDataset(IMAGES["photos"]),
                                           "b": IMAGES["sketches"]})
    with pytest.raises(TypeError, match="read lazily by the retrievers only"):
        PrototypeClusterer().fit(ArrayDataset(IMAGES["photos"]))
    with pytest.raises(ValueError, match="dataset is empty"):
        UniversalCDRRetriever(**TINY).fit(ArrayDataset(IMAGES["photos"][:0]))
    fitted = UniversalCDRRetriever(**TINY).fit(IMAGES)
    with pytest.raises(ValueError, match=r"images have shape \(1, 4, 4\)"):
        fitted.transform(ArrayDataset(rng.rand(3, 1, 4, 4).astype(np.float32)))
