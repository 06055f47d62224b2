"""Image folders in the Office-Home / DomainNet layout ``root/<domain>/<class>/<image>``."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np

__all__ = ["load_image_folder_domains"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _subfolders(path):
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder, extensions):
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def _read_image(path, image_size, Image):
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize(
                (image_size, image_size), Image.Resampling.BILINEAR
            )
            pixels = np.asarray(image, dtype=np.float32)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"Could not read image file {str(path)!r}: {exc}") from exc
    return pixels.transpose(2, 0, 1) / np.float32(255.0)


def load_image_folder_domains(
    root,
    domains=None,
    *,
    image_size=64,
    classes=None,
    extensions=IMAGE_EXTENSIONS,
    return_class_names=False,
):
    """Load image domains stored as ``root/<domain>/<class>/<image>``.

    This is the layout of Office-Home (``Art/Alarm_Clock/00001.jpg``, ...) and of
    DomainNet (``clipart/aircraft_carrier/...``). Images are read with Pillow, converted
    to RGB and resized (bilinear) to ``image_size x image_size``. Labels use ONE class
    index shared by every domain, so a label means the same class in all of them.

    Parameters
    ----------
    root : str or path-like
        The folder that holds one subfolder per domain.
    domains : sequence of str, default=None
        Domain subfolders to load, in the order of the returned mapping. ``None`` loads
        every subfolder of ``root`` (sorted; hidden folders are skipped).
    image_size : int, default=64
        Side of the square output images, in pixels.
    classes : sequence of str, default=None
        Class names defining the label index (label ``i`` is ``classes[i]``). Only those
        class folders are read; a class may be missing from some or all domains.
        ``None`` uses the sorted union of the class folder names of the loaded domains.
    extensions : sequence of str, default=(".jpg", ".jpeg", ".png", ".bmp", ".gif", \
".tif", ".tiff", ".webp")
        File name endings (case-insensitive) treated as images; other files are ignored.
    return_class_names : bool, default=False
        If True, also return the list of class names.

    Returns
    -------
    data : dict of str to tuple (X, y)
        Per domain, ``X`` float32 of shape ``(n, 3, image_size, image_size)`` with
        values in [0, 1] and ``y`` int64 of shape ``(n,)``. Rows are sorted by class
        name, then by file name.
    class_names : list of str
        Only when ``return_class_names=True``: ``class_names[label]`` is the class name.

    Raises
    ------
    FileNotFoundError
        If ``root`` or a requested domain folder does not exist.
    ValueError
        If a domain has no class folder, a class folder holds no image, no class folder
        of ``classes`` exists, or an image file cannot be decoded (the file is named).

    Notes
    -----
    Memory: the images are decoded into one float32 array per domain, i.e.
    ``12 * image_size**2`` bytes per image (49 KB at 64x64, about 760 MB for the
    15,588 Office-Home images).

    Examples
    --------
    >>> from skucdr.datasets import load_image_folder_domains
    >>> data, names = load_image_folder_domains(
    ...     "OfficeHome", ["Art", "Clipart"], image_size=96, return_class_names=True
    ... )  # doctest: +SKIP
    >>> X_art, y_art = data["Art"]  # doctest: +SKIP
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder root {str(root)!r} does not exist.")
    if isinstance(image_size, bool) or not isinstance(image_size, Integral) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    if isinstance(extensions, str):
        extensions = (extensions,)
    extensions = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}

    if domains is None:
        domains = _subfolders(root)
        if not domains:
            raise ValueError(
                f"{str(root)!r} holds no domain folder (expected root/<domain>/<class>/<image>)."
            )
    elif isinstance(domains, str):
        domains = [domains]
    domains = list(domains)
    if len(set(domains)) != len(domains):
        raise ValueError(f"domains contains duplicates: {domains}.")
    found = {}
    for domain in domains:
        folder = root / domain
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Domain folder {str(folder)!r} does not exist; domains under "
                f"{str(root)!r}: {_subfolders(root)}."
            )
        found[domain] = _subfolders(folder)
        if not found[domain]:
            raise ValueError(f"Domain folder {str(folder)!r} holds no class folder.")

    if classes is None:
        class_names = sorted(set().union(*found.values()))
    else:
        class_names = [str(c) for c in classes]
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"classes contains duplicates: {class_names}.")
        if not set(class_names) & set().union(*found.values()):
            raise ValueError(
                f"None of the classes {class_names} has a folder in domains {domains}."
            )
    label_of = {name: label for label, name in enumerate(class_names)}

    data = {}
    for domain in domains:
        files, labels = [], []
        names = sorted(set(found[domain]) & set(label_of))
        if not names:
            raise ValueError(
                f"Domain folder {str(root / domain)!r} holds none of the classes {class_names}."
            )
        for name in names:
            folder = root / domain / name
            images = _image_files(folder, extensions)
            if not images:
                raise ValueError(
                    f"Class folder {str(folder)!r} holds no image with an extension in "
                    f"{sorted(extensions)}."
                )
            files.extend(images)
            labels.extend([label_of[name]] * len(images))
        X = np.empty((len(files), 3, image_size, image_size), dtype=np.float32)
        for row, path in enumerate(files):  # decoding is per file; the array is preallocated
            X[row] = _read_image(path, image_size, Image)
        data[domain] = (X, np.asarray(labels, dtype=np.int64))
    return (data, class_names) if return_class_names else data
