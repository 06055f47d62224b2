"""The model directory of the command line: a saved retriever and what maps its hits
back to files.

A model is a directory: the retriever as :func:`skucdr.persistence.save_retriever`
writes it (``config.json`` and ``weights.pt``, loaded without pickle) and ``cli.json``,
with the image size it was trained at and the file of every gallery row. It is written
beside its place and renamed into it, so a crash never leaves half a model; writers take
an exclusive lock (:func:`locked_model`), so two ``skucdr index --append`` runs on one
model add both their rows, one after the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

__all__ = ["load_model", "locked_model", "save_model"]

MODEL_FORMAT = "skucdr-model"
MODEL_VERSION = 2
CLI_FILE = "cli.json"


def save_model(path, retriever, *, image_size, gallery_paths):
    """Write the model directory: the retriever, its image size and its gallery's files.

    The directory is written beside ``path`` and renamed into place, so a crash never
    leaves a half-written model behind."""
    from skucdr.persistence import save_retriever

    path = Path(path)
    if path.exists() and not (path / CLI_FILE).is_file():
        raise ValueError(f"{str(path)!r} exists and is not a skucdr model directory; "
                         "choose another --out.")
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_retriever(retriever, partial)
    (partial / CLI_FILE).write_text(json.dumps({
        "format": MODEL_FORMAT, "version": MODEL_VERSION, "image_size": int(image_size),
        "gallery_paths": [str(p) for p in gallery_paths]}))
    former = path.with_name(path.name + ".former")
    if path.exists():
        path.rename(former)
    partial.rename(path)
    shutil.rmtree(former, ignore_errors=True)


def load_model(path):
    """The model's retriever, image size and gallery files, checked; a one-line
    ``ValueError`` otherwise. Nothing in it is unpickled."""
    from skucdr.persistence import load_retriever

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model {str(path)!r} does not exist.")
    try:
        bundle = json.loads((path / CLI_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a skucdr model directory (written by "
                         f"`skucdr fit`): {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("format") != MODEL_FORMAT \
            or bundle.get("version") != MODEL_VERSION:
        raise ValueError(f"{str(path)!r} is not a skucdr model directory of version "
                         f"{MODEL_VERSION} (write one with `skucdr fit`).")
    bundle["retriever"] = load_retriever(path)
    bundle["gallery_paths"] = np.asarray(bundle["gallery_paths"], dtype=object)
    return bundle


@contextlib.contextmanager
def locked_model(path):
    """Hold the writer lock of model directory ``path`` inside the block.

    The lock is an exclusive ``flock`` on ``<path>.lock`` beside the directory (the
    directory itself is replaced when saved). A second writer waits until the first has
    saved, then reads the model it left, so no write is lost. The lock goes with the
    process that holds it, even when it is killed."""
    path = Path(path)
    lock_file = path.with_name(path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _lock(fd):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
