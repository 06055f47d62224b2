"""Checkpoints of a fit in progress, from which an interrupted fit resumes.

With ``checkpoint_dir`` set, a retriever's fit writes its full training state after
every epoch: the module's weights, the optimizer's moments, the learning-rate schedule,
the objective's state (memory banks, prototypes, pseudo-labels, stage), the seeded
generator, torch's global generator and the loss history. The file is written under a
temporary name and renamed over the previous one, so a fit killed at any moment leaves
the last complete checkpoint.

The file's name is a fingerprint of everything the training depends on: the skucdr
version, the estimator's class and parameters (all but ``checkpoint_dir`` and
``verbose``), the training rows and their domains, and the device. A fit with another
configuration or other data looks for another file; a file whose recorded fingerprint
or format does not match is ignored with a warning. Resuming continues from the saved
state exactly, so on the CPU, with the same torch thread count, it ends with the
embeddings of a fit that was never interrupted.

Loading a checkpoint uses ``torch.load(weights_only=True)``: tensors and plain
containers only, no pickled code.
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.history import History

__all__ = ["FORMAT_VERSION", "fit_fingerprint", "checkpoint_path", "load_checkpoint",
           "TrainingCheckpoint"]

#: bumped whenever the content of a checkpoint changes meaning
FORMAT_VERSION = 1

_ARRAY = "__ndarray__"


def fit_fingerprint(*parts):
    """A hex digest of the skucdr version, the checkpoint format and ``parts``.

    ``parts`` are hashed with :func:`joblib.hash` (arrays by their bytes, modules
    by their pickled weights).

    Raises
    ------
    ValueError
        When a part cannot be hashed (for example a lambda passed as a parameter).
    """
    import joblib

    from .. import __version__

    try:
        return joblib.hash((__version__, FORMAT_VERSION, parts))
    except Exception as exc:  # pickling errors of user objects come in many types
        raise ValueError(
            "checkpoint_dir needs every parameter to be picklable, to name the fit's "
            f"checkpoint after its configuration; hashing failed: {exc}"
        ) from exc


def checkpoint_path(directory, name, fingerprint):
    """The checkpoint file of fit ``fingerprint`` of estimator class ``name``."""
    return Path(directory) / f"{name}-{fingerprint}.pt"


def _to_safe(value):
    """``value`` made of what ``torch.load(weights_only=True)`` reads: NumPy arrays
    become marked tensors, NumPy scalars Python numbers."""
    if isinstance(value, np.ndarray):
        return {_ARRAY: torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_safe(v) for v in value)
    return value


def _from_safe(value):
    """Undo :func:`_to_safe`."""
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return value[_ARRAY].numpy()
        return {k: _from_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_from_safe(v) for v in value)
    return value


def _training_state(net, fingerprint, lr_scheduler):
    module = net.module_
    return {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "epoch": len(net.history),
        "module": module.state_dict(),
        "requires_grad": {k: p.requires_grad for k, p in module.named_parameters()},
        "optimizer": net.optimizer_.state_dict(),
        "lr_scheduler": _to_safe(lr_scheduler.state_dict()),
        "objective": _to_safe(net.objective.state_dict()),
        "generator": net.objective.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": _to_safe(list(net.history)),
    }


def _write_atomically(path, state):
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path, fingerprint):
    """The training state saved at ``path`` for fit ``fingerprint``, or None.

    A missing file gives None. A file that cannot be read, or that belongs to another
    fit or checkpoint format, gives None with a warning: it is never used silently.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or corrupted files
        warnings.warn(f"Ignoring the unreadable checkpoint {path} ({exc}); the fit starts "
                      "from scratch and overwrites it.", UserWarning, stacklevel=4)
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION \
            or state.get("fingerprint") != fingerprint:
        warnings.warn(f"Ignoring the checkpoint {path}: it was written by another fit "
                      "configuration, other data or another skucdr version. The fit starts "
                      "from scratch and overwrites it.", UserWarning, stacklevel=4)
        return None
    return state


def load_module_state(module, saved):
    """Load ``saved`` into ``module``; buffers whose shape a fit changes (TPSNet's
    ``class_text``) are first given the saved shape."""
    for name, buffer in list(module.named_buffers()):
        if name in saved and buffer is not None and buffer.shape != saved[name].shape:
            owner, _, attr = name.rpartition(".")
            target = module.get_submodule(owner) if owner else module
            setattr(target, attr, torch.empty_like(saved[name], device=buffer.device))
    module.load_state_dict(saved)


class TrainingCheckpoint(Callback):
    """Write the training state after every epoch, and resume from a saved one.

    Resuming takes two steps, both here: :meth:`begin_resume` on the initialised net,
    before training starts (the history and optimizer state that the learning-rate
    scheduler is created from), then, at the start of training, the module, the
    scheduler handed in as ``scheduler``, the objective and the random generators.
    Must come after ``scheduler`` among the callbacks: it restores the scheduler that
    the scheduler's own ``on_train_begin`` has just created.

    Parameters
    ----------
    path : pathlib.Path
        The checkpoint file.
    fingerprint : str
        The fit's fingerprint (see :func:`fit_fingerprint`), recorded in the file.
    scheduler : skorch.callbacks.LRScheduler
        The learning-rate schedule of the fit, whose scheduler is saved and restored.
    resume : dict or None
        A state from :func:`load_checkpoint` to resume from.
    """

    def __init__(self, path, fingerprint, scheduler, resume=None):
        self.path = path
        self.fingerprint = fingerprint
        self.scheduler = scheduler
        self.resume = resume

    def begin_resume(self, net):
        """Give the initialised ``net`` the saved history and optimizer state, as
        skorch's scheduler needs them when it is created at the start of training (it
        continues from ``len(history)`` epochs and each group's ``initial_lr``);
        returns the number of epochs already done."""
        net.history = History(_from_safe(self.resume["history"]))
        net.optimizer_.load_state_dict(self.resume["optimizer"])
        return len(net.history)

    def on_train_begin(self, net, **kwargs):
        state, self.resume = self.resume, None
        if state is None:
            return
        module = net.module_
        load_module_state(module, state["module"])
        for name, parameter in module.named_parameters():
            parameter.requires_grad_(state["requires_grad"][name])
        self.scheduler.lr_scheduler_.load_state_dict(_from_safe(state["lr_scheduler"]))
        # creating the scheduler stepped the learning rates: load them back
        net.optimizer_.load_state_dict(state["optimizer"])
        net.objective.load_state_dict(_from_safe(state["objective"]), net)
        net.objective.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def on_epoch_end(self, net, **kwargs):
        _write_atomically(self.path, _training_state(net, self.fingerprint,
                                                     self.scheduler.lr_scheduler_))
