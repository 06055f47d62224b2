"""Image folders, one subfolder per domain, with or without class subfolders.

Two layouts are read:

- labelled, the Office-Home / DomainNet layout ``root/<domain>/<class>/<image>``: the
  class folders give labels, which skucdr uses for evaluation only;
- unlabeled, ``root/<domain>/<image>``: what a user without labels has.

:func:`scan_image_folders` lists the files (nothing is decoded), :func:`read_image`
decodes one file, :class:`ImageFileDataset` decodes lazily for a torch ``DataLoader``,
and :func:`load_image_folder_domains` decodes everything into arrays.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

__all__ = [
    "ImageFileDataset",
    "ImageFolders",
    "load_image_folder_domains",
    "read_image",
    "read_images",
    "scan_image_folders",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_ON_ERROR = ("raise", "warn")


def _visible(path):
    return not path.name.startswith(".")


def _subfolders(path):
    return sorted(p.name for p in path.iterdir() if p.is_dir() and _visible(p))


def _image_files(folder, extensions):
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and _visible(p) and p.suffix.lower() in extensions
    )


def _check_name(name, what):
    """A domain or class name must be one path component: no separator, no ``..``."""
    name = str(name)
    parts = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if (not name or name in (".", "..") or any(s in name for s in parts)
            or Path(name).is_absolute()):
        raise ValueError(
            f"{what} {name!r} is not a folder name: names are single folder names under "
            "root (no path separator, no '..', not absolute)."
        )
    return name


def _check_image_size(image_size):
    if isinstance(image_size, bool) or not isinstance(image_size, Integral) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    return int(image_size)


@dataclass
class ImageFolders:
    """The image files of every domain under a root folder (nothing decoded).

    Attributes
    ----------
    root : Path
        The folder holding one subfolder per domain.
    domains : list of str
        Domain names, in the order asked for (sorted when all were loaded).
    paths : dict of str to ndarray of str
        Every image file of each domain, sorted by class then file name.
    labels : dict of str to ndarray of int64, or None
        Class index of every file (labelled layout), None for unlabeled folders.
    class_names : list of str or None
        ``class_names[label]`` is the class folder name; None for unlabeled folders.
    """

    root: Path
    domains: list
    paths: dict
    labels: dict | None = None
    class_names: list | None = field(default=None)

    @property
    def labelled(self):
        """Whether the files come with labels (``root/<domain>/<class>/<image>``)."""
        return self.labels is not None

    def flat(self):
        """``(paths, sample_domain, labels)`` of every file, domains in order (labels
        None for unlabeled folders): the flat form of :func:`skucdr.pack_domains`."""
        paths = np.concatenate([self.paths[d] for d in self.domains])
        sample_domain = np.concatenate(
            [np.full(len(self.paths[d]), d, dtype=object) for d in self.domains])
        labels = (np.concatenate([self.labels[d] for d in self.domains])
                  if self.labelled else None)
        return paths, sample_domain, labels


def scan_image_folders(root, domains=None, *, classes=None, extensions=IMAGE_EXTENSIONS):
    """List the image files of ``root/<domain>/...`` in either layout.

    A domain folder that holds class subfolders is read as ``<domain>/<class>/<image>``
    (labels from the class folders, one class index shared by every domain); one that
    holds image files directly as ``<domain>/<image>`` (no labels). All domains must use
    the same layout.

    Parameters
    ----------
    root : str or path-like
        The folder that holds one subfolder per domain.
    domains : sequence of str, default=None
        Domain folder names, in the order wanted. None takes every subfolder of ``root``
        (sorted; hidden folders skipped). Names are folder names, not paths: a name with
        a separator, ``..`` or an absolute path raises a ``ValueError``, so nothing
        outside ``root`` is read.
    classes : sequence of str, default=None
        Labelled layout only: the class names defining the label index (only those class
        folders are read). None uses the sorted union of the class folders found.
    extensions : sequence of str, default=(".jpg", ".jpeg", ".png", ".bmp", ".gif", \
".tif", ".tiff", ".webp")
        File name endings (case-insensitive) treated as images; other files are ignored.

    Returns
    -------
    folders : ImageFolders

    Raises
    ------
    FileNotFoundError
        If ``root`` or a requested domain folder does not exist.
    ValueError
        If a name is not a folder name, a domain holds neither images nor class folders
        (or both), the domains mix layouts, or a class folder holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder root {str(root)!r} does not exist.")
    if isinstance(extensions, str):
        extensions = (extensions,)
    extensions = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    if domains is None:
        domains = _subfolders(root)
        if not domains:
            raise ValueError(
                f"{str(root)!r} holds no domain folder (expected root/<domain>/<image> or "
                "root/<domain>/<class>/<image>)."
            )
    elif isinstance(domains, (str, os.PathLike)):
        domains = [domains]
    domains = [_check_name(d, "Domain") for d in domains]
    if len(set(domains)) != len(domains):
        raise ValueError(f"domains contains duplicates: {domains}.")

    layout = {}
    for domain in domains:
        folder = root / domain
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Domain folder {str(folder)!r} does not exist; domains under "
                f"{str(root)!r}: {_subfolders(root)}."
            )
        subfolders, files = _subfolders(folder), _image_files(folder, extensions)
        if subfolders and files:
            raise ValueError(
                f"Domain folder {str(folder)!r} holds both image files and subfolders: use "
                "root/<domain>/<image> (unlabeled) or root/<domain>/<class>/<image>."
            )
        if not subfolders and not files:
            raise ValueError(
                f"Domain folder {str(folder)!r} holds no image (extensions "
                f"{sorted(extensions)}) and no class folder."
            )
        layout[domain] = ("classes", subfolders) if subfolders else ("images", files)
    kinds = {kind for kind, _ in layout.values()}
    if len(kinds) > 1:
        raise ValueError(
            "The domains mix layouts: "
            + ", ".join(f"{d!r} {'has class folders' if k == 'classes' else 'has images'}"
                        for d, (k, _) in layout.items())
            + ". Give every domain the same layout."
        )

    if kinds == {"images"}:
        if classes is not None:
            raise ValueError("classes was given, but the domain folders hold no class folder.")
        paths = {d: np.array([str(p) for p in files], dtype=object)
                 for d, (_, files) in layout.items()}
        return ImageFolders(root, domains, paths)

    found = {d: names for d, (_, names) in layout.items()}
    if classes is None:
        class_names = sorted(set().union(*found.values()))
    else:
        class_names = [_check_name(c, "Class") for c in classes]
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"classes contains duplicates: {class_names}.")
        if not set(class_names) & set().union(*found.values()):
            raise ValueError(
                f"None of the classes {class_names} has a folder in domains {domains}."
            )
    label_of = {name: label for label, name in enumerate(class_names)}
    paths, labels = {}, {}
    for domain in domains:
        names = sorted(set(found[domain]) & set(label_of))
        if not names:
            raise ValueError(
                f"Domain folder {str(root / domain)!r} holds none of the classes {class_names}."
            )
        files, y = [], []
        for name in names:
            folder = root / domain / name
            images = _image_files(folder, extensions)
            if not images:
                raise ValueError(
                    f"Class folder {str(folder)!r} holds no image with an extension in "
                    f"{sorted(extensions)}."
                )
            files.extend(str(p) for p in images)
            y.extend([label_of[name]] * len(images))
        paths[domain] = np.array(files, dtype=object)
        labels[domain] = np.asarray(y, dtype=np.int64)
    return ImageFolders(root, domains, paths, labels, class_names)


def _to_float_rgb(image):
    """A decoded Pillow image as float32 RGB in [0, 1], whatever its mode and bit depth."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I"):
        # 16-bit grey: Pillow opens 16-bit PNG and TIFF files as "I;16*" or as 32-bit "I"
        grey = np.asarray(image, dtype=np.float64) / 65535.0
        grey = np.clip(grey, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[None], 3, axis=0)
    if mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[None], 3, axis=0)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # transparent pixels over white, as a viewer shows them
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    return rgb.transpose(2, 0, 1)


def read_image(path, image_size):
    """Decode one image file to float32 RGB ``(3, image_size, image_size)`` in [0, 1].

    8- and 16-bit, palette, RGBA (composited over white), grey-scale and CMYK files are
    read correctly, and the EXIF orientation is applied. The image is resized (bilinear,
    with antialiasing) to a square of ``image_size`` pixels.

    Parameters
    ----------
    path : str or path-like
    image_size : int

    Returns
    -------
    image : ndarray of shape (3, image_size, image_size), float32

    Raises
    ------
    ValueError
        If the file cannot be decoded; the message names the file.
    """
    from PIL import Image, ImageOps

    image_size = _check_image_size(image_size)
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            pixels = _to_float_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"Could not read image file {str(path)!r}: {exc}") from exc
    import torch
    from torch.nn import functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(pixels))[None]
    if tensor.shape[-2:] != (image_size, image_size):
        tensor = F.interpolate(tensor, size=(image_size, image_size), mode="bilinear",
                               align_corners=False, antialias=True)
    return tensor[0].clamp_(0.0, 1.0).numpy()


class ImageFileDataset(Dataset):
    """A ``torch.utils.data.Dataset`` of image files, decoded when an item is asked for.

    With a ``torch.utils.data.DataLoader`` (``num_workers > 0`` decodes in parallel), a
    folder of any size is read with the memory of one batch.

    Parameters
    ----------
    paths : sequence of str
        Image files.
    image_size : int
        Side of the square output images.
    on_error : {"raise", "warn"}, default="raise"
        An unreadable file raises a ``ValueError`` naming it, or (``"warn"``) gives an
        all-zero image and a ``UserWarning`` naming it; :attr:`failed` lists such files
        of the current process.
    num_workers : int, default=0
        Threads that decode images in parallel when a retriever reads this dataset
        (passed as ``X``); 0 decodes one image after the other.

    Examples
    --------
    A retriever reads the dataset itself, one batch of images at a time:

    >>> from skucdr import UniversalCDRRetriever
    >>> from skucdr.datasets import ImageFileDataset, scan_image_folders
    >>> folders = scan_image_folders("root")  # doctest: +SKIP
    >>> X = {d: ImageFileDataset(folders.paths[d], 224, num_workers=2)
    ...      for d in folders.domains}  # doctest: +SKIP
    >>> UniversalCDRRetriever(encoder="efficientnet_lite0").fit(X)  # doctest: +SKIP
    """

    def __init__(self, paths, image_size, *, on_error="raise", num_workers=0):
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}.")
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}.")
        self.paths = [str(p) for p in paths]
        self.image_size = _check_image_size(image_size)
        self.on_error = on_error
        self.num_workers = num_workers
        self.failed = []

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        try:
            return read_image(path, self.image_size)
        except ValueError as exc:
            if self.on_error == "raise":
                raise
            warnings.warn(f"{exc}; using a blank image in its place.", UserWarning,
                          stacklevel=2)
            self.failed.append(path)
            return np.zeros((3, self.image_size, self.image_size), dtype=np.float32)


def read_images(paths, image_size, *, on_error="raise"):
    """Decode image files into one float32 array ``(n, 3, image_size, image_size)``.

    Parameters
    ----------
    paths : sequence of str
    image_size : int
    on_error : {"raise", "warn"}, default="raise"
        ``"raise"``: the first unreadable file raises a ``ValueError`` naming it.
        ``"warn"``: unreadable files are skipped, with one ``UserWarning`` naming them.

    Returns
    -------
    X : ndarray of shape (n_read, 3, image_size, image_size)
    kept : ndarray of bool, shape (len(paths),)
        Which files were read.
    """
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}.")
    image_size = _check_image_size(image_size)
    X = np.empty((len(paths), 3, image_size, image_size), dtype=np.float32)
    kept = np.ones(len(paths), dtype=bool)
    failures = []
    for row, path in enumerate(paths):  # decoding is per file; the array is preallocated
        try:
            X[row] = read_image(path, image_size)
        except ValueError as exc:
            if on_error == "raise":
                raise
            kept[row] = False
            failures.append(f"{path} ({exc.__cause__ or exc})")
    if failures:
        warnings.warn(f"Skipped {len(failures)} unreadable image file(s): "
                      + "; ".join(failures), UserWarning, stacklevel=2)
    return X[kept] if not kept.all() else X, kept


def load_image_folder_domains(
    root,
    domains=None,
    *,
    image_size=64,
    classes=None,
    extensions=IMAGE_EXTENSIONS,
    on_error="raise",
    return_class_names=False,
    return_paths=False,
    lazy=False,
    num_workers=0,
):
    """Load image domains stored as ``root/<domain>/<class>/<image>`` or
    ``root/<domain>/<image>``.

    The first is the layout of Office-Home (``Art/Alarm_Clock/00001.jpg``, ...) and
    DomainNet: labels come from the class folders, with one class index shared by every
    domain. The second holds unlabeled images (labels are never needed for training).
    Files are listed by :func:`scan_image_folders` and decoded by :func:`read_image`.

    Parameters
    ----------
    root : str or path-like
        The folder that holds one subfolder per domain.
    domains : sequence of str, default=None
        Domain folder names to load, in the order of the returned mapping; None loads
        every subfolder (sorted). Names, not paths (see :func:`scan_image_folders`).
    image_size : int, default=64
        Side of the square output images, in pixels.
    classes : sequence of str, default=None
        Labelled layout: class names defining the label index (label ``i`` is
        ``classes[i]``); None uses the sorted union of the class folders.
    extensions : sequence of str, default=(".jpg", ".jpeg", ".png", ".bmp", ".gif", \
".tif", ".tiff", ".webp")
        File name endings (case-insensitive) treated as images; other files are ignored.
    on_error : {"raise", "warn"}, default="raise"
        An unreadable image file raises a ``ValueError`` naming it, or (``"warn"``) is
        left out, with a ``UserWarning`` naming every such file.
    return_class_names : bool, default=False
        Also return the class names (None for unlabeled folders).
    return_paths : bool, default=False
        Also return the file of every row: ``{domain: ndarray of str}``.
    lazy : bool, default=False
        Return every domain's images as an :class:`ImageFileDataset` that decodes them
        when they are read, instead of an array: the retrievers fit, transform, index and
        query such datasets with the memory of one batch, so folders larger than memory
        work. Files are not opened here; with ``on_error="warn"`` an unreadable file
        becomes a blank image with a warning when it is read.
    num_workers : int, default=0
        With ``lazy=True``: threads that decode each dataset's images in parallel.

    Returns
    -------
    data : dict of str to tuple (X, y)
        Per domain, ``X`` float32 of shape ``(n, 3, image_size, image_size)`` in [0, 1]
        (an :class:`ImageFileDataset` of those images with ``lazy=True``) and ``y`` int64
        of shape ``(n,)``, or None for unlabeled folders. Rows are sorted by class name,
        then by file name.
    class_names : list of str or None
        Only with ``return_class_names=True``.
    paths : dict of str to ndarray of str
        Only with ``return_paths=True``: row ``i`` of ``X`` was read from ``paths[i]``.

    Notes
    -----
    Memory: ``12 * image_size**2`` bytes per image (49 KB at 64x64, 602 KB at 224x224);
    for folders larger than memory, ``lazy=True``.

    Examples
    --------
    >>> from skucdr.datasets import load_image_folder_domains
    >>> data, paths = load_image_folder_domains(
    ...     "OfficeHome", ["Art", "Clipart"], image_size=96, return_paths=True
    ... )  # doctest: +SKIP
    >>> X_art, y_art = data["Art"]  # doctest: +SKIP
    """
    image_size = _check_image_size(image_size)
    folders = scan_image_folders(root, domains, classes=classes, extensions=extensions)
    data, paths = {}, {}
    for domain in folders.domains:
        if lazy:
            data[domain] = (ImageFileDataset(folders.paths[domain], image_size,
                                             on_error=on_error, num_workers=num_workers),
                            folders.labels[domain] if folders.labelled else None)
            paths[domain] = folders.paths[domain]
            continue
        X, kept = read_images(folders.paths[domain], image_size, on_error=on_error)
        y = folders.labels[domain][kept] if folders.labelled else None
        data[domain] = (X, y)
        paths[domain] = folders.paths[domain][kept]
    out = (data,)
    if return_class_names:
        out += (folders.class_names,)
    if return_paths:
        out += (paths,)
    return out if len(out) > 1 else data
