"""The skorch training engine shared by the retrievers.

skorch's :class:`~skorch.NeuralNet` runs the epochs, callbacks, progress bar, history,
learning-rate schedule and device handling. What differs from supervised training is
put into three pieces:

* :class:`DomainBalancedBatches` — every step holds ``batch_size`` rows of *each*
  domain (the smaller domains are cycled), so every loss sees every domain each step;
* an *objective* object (method-specific, see :class:`Objective`) that turns one such
  batch into a dictionary of named losses, and refreshes its state (memory banks,
  prototypes, stage switch) at the start of every epoch;
* :class:`MultiDomainNet`, a ``NeuralNet`` whose ``train_step_single`` calls the
  objective and records every named loss, and whose ``get_iterator`` yields the
  domain-balanced batches.

The net is trained on the row indices ``np.arange(n)``; the objective owns the data
tensor and looks rows up by index, so augmentation and memory-bank updates can be done
per step.
"""

from __future__ import annotations

import inspect
import math
import warnings
from abc import ABC, abstractmethod

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, LRScheduler, ProgressBar
from torch import nn

from .checkpoint import TrainingCheckpoint, load_checkpoint
from .domain_norm import domain_codes

__all__ = [
    "DomainBalancedBatches",
    "Objective",
    "MultiDomainNet",
    "EpochLosses",
    "ObjectiveEpochHook",
    "train_objective",
]


class DomainBalancedBatches:
    """Batches of row indices holding up to ``batch_size`` rows of every domain.

    One epoch is ``ceil(max_d n_d / batch_size)`` steps, or ``min_steps`` when that is
    more; each domain's rows are visited in a fresh random order, and a domain starts a
    new permutation when it runs out, so every step sees every domain (and a small data
    set is visited more than once in an epoch of ``min_steps``).

    Parameters
    ----------
    domain_codes : ndarray of int, shape (n_samples,)
        Domain code (0 .. n_domains - 1) of every row.
    batch_size : int
        Rows per domain per step.
    generator : torch.Generator
        Source of randomness (seeded by the estimator's ``random_state``).
    min_steps : int, default=0
        Fewest steps of an epoch.

    Yields
    ------
    list of torch.LongTensor
        One tensor of row indices per domain.
    """

    def __init__(self, domain_codes, batch_size, generator, min_steps=0):
        codes = np.asarray(domain_codes)
        self.rows = [torch.from_numpy(np.flatnonzero(codes == d)) for d in range(codes.max() + 1)]
        self.batch_sizes = [min(batch_size, len(r)) for r in self.rows]
        self.generator = generator
        self.n_steps = max(min_steps, *(math.ceil(len(r) / batch_size) for r in self.rows))

    def __len__(self):
        return self.n_steps

    def __iter__(self):
        orders = [r[torch.randperm(len(r), generator=self.generator)] for r in self.rows]
        cursors = [0] * len(self.rows)
        for _ in range(self.n_steps):
            batch = []
            for d, rows in enumerate(self.rows):
                b = self.batch_sizes[d]
                if cursors[d] + b > len(rows):
                    orders[d] = rows[torch.randperm(len(rows), generator=self.generator)]
                    cursors[d] = 0
                batch.append(orders[d][cursors[d] : cursors[d] + b])
                cursors[d] += b
            yield batch


def local_row_index(codes, n_domains):
    """Position of every row among the rows of its own domain (its memory-bank row).

    Parameters
    ----------
    codes : ndarray of shape (n,)
        Domain code of every row, in ``range(n_domains)``.
    n_domains : int
        Number of domains.

    Returns
    -------
    index : LongTensor of shape (n,)
    """
    local = np.zeros(len(codes), dtype=np.int64)
    for d in range(n_domains):
        rows = codes == d
        local[rows] = np.arange(rows.sum())
    return torch.from_numpy(local)


class Objective(ABC):
    """Interface of a method's training objective.

    A subclass implements :meth:`batches`, :meth:`on_epoch_begin` and :meth:`losses`;
    :meth:`after_backward` is optional.
    """

    @abstractmethod
    def batches(self):
        """An iterable of domain-balanced index batches for one epoch."""

    @abstractmethod
    def on_epoch_begin(self, net, epoch):
        """Refresh state (memory banks, prototypes, stage); ``epoch`` counts from 0."""

    @abstractmethod
    def losses(self, net, batch):
        """A dict of named scalar losses for one batch, with the weighted total under
        ``"loss"``. Called in training mode; the engine back-propagates ``"loss"``."""

    def after_backward(self, net):
        """State updates that must wait until the backward pass is done (tensors used in
        the graph must not be modified in place before it); none by default."""

    #: names of the attributes that change during training: what a checkpoint saves
    STATE = ()

    def state_dict(self):
        """The training state named in :attr:`STATE` (tensors, arrays, plain values),
        as saved between epochs by :class:`~skucdr.nn.checkpoint.TrainingCheckpoint`."""
        return {name: getattr(self, name) for name in self.STATE}

    def load_state_dict(self, state, net):
        """Restore a :meth:`state_dict`, its tensors moved to the net's device."""
        for name in self.STATE:
            setattr(self, name, _to_device(state[name], net.device))


def _to_device(value, device):
    """``value`` with every tensor inside (lists, tuples, dicts) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


class RowObjective(Objective):
    """Shared plumbing of the objectives that keep per-row state over the training set.

    Holds the training rows ``X`` (CPU tensor), their domain codes and the seeded
    generator; gives the domain-balanced batches of an epoch and a chunked, eval-mode
    pass over all rows (the :class:`Objective` interface is left to subclasses).
    :class:`~skucdr.uem.objective.UEMObjective` and
    :class:`~skucdr.tpsnet.objective.TPSNetObjective` build on it.
    """

    #: rows embedded per forward pass in :meth:`embed_rows`
    EMBED_CHUNK = 512
    #: threads of the prototype k-means: faiss's OpenMP threads and torch's fight badly in
    #: one process (k-means ran 10-30x slower with 2 threads after a torch backward pass on
    #: 2 cores); the clusters are the same to the bit on any number of threads
    CLUSTER_THREADS = 1

    def _init_rows(self, X, codes, batch_size, generator, min_steps=0):
        self.X = X
        self.min_steps = min_steps
        self.codes = np.asarray(codes)
        self.codes_t = torch.from_numpy(self.codes)
        self.n_domains = int(self.codes.max()) + 1
        self.batch_size = batch_size
        self.generator = generator
        self.local_index = local_row_index(self.codes, self.n_domains)

    def batches(self):
        """Domain-balanced index batches for one epoch."""
        return DomainBalancedBatches(self.codes, self.batch_size, self.generator,
                                     self.min_steps)

    @torch.no_grad()
    def embed_rows(self, net, fn):
        """``fn(x, codes)`` over all training rows in eval mode, concatenated.

        Each chunk's domain codes are set for the module's
        :class:`~skucdr.nn.domain_norm.DomainBatchNorm` layers. The module's training
        flag is restored afterwards; memory holds one chunk of inputs at a time.
        """
        module = net.module_
        was_training = module.training
        module.eval()
        out = []
        try:
            for start in range(0, len(self.X), self.EMBED_CHUNK):
                stop = start + self.EMBED_CHUNK
                x = self.X[start:stop].to(net.device)
                codes = self.codes_t[start:stop].to(net.device)
                with domain_codes(module, codes):
                    out.append(fn(x, codes))
        finally:
            module.train(was_training)
        return torch.cat(out)

    def _release_rows(self):
        self.X = None
        self.generator = None


class _NoCriterion(nn.Module):
    """Placeholder criterion: the objective computes all losses."""

    def forward(self, *args, **kwargs):  # pragma: no cover - never called
        raise RuntimeError("The objective computes the losses.")


class FitInterrupted(Exception):
    """Carries a Ctrl+C out of skorch's training loop, which would swallow it."""


class MultiDomainNet(NeuralNet):
    """A skorch ``NeuralNet`` whose train step is a multi-domain, multi-loss objective.

    Parameters
    ----------
    module : torch.nn.Module
        All trainable parts (encoder, heads, discriminators, prompts) in one module, so
        that one optimizer, one device move and one state dict cover them.
    objective : object
        See :class:`Objective`.
    **kwargs
        Passed to :class:`skorch.NeuralNet` (``max_epochs``, ``lr``, ``optimizer``,
        ``device``, ``callbacks``, ``verbose`` ...).
    """

    def __init__(self, module, *args, objective=None, **kwargs):
        kwargs.setdefault("criterion", _NoCriterion)
        kwargs.setdefault("train_split", None)
        super().__init__(module, *args, **kwargs)
        self.objective = objective

    def fit_loop(self, *args, **kwargs):
        # skorch's partial_fit catches KeyboardInterrupt and returns a half-trained net
        # as if the fit had ended; the caller must see the interruption instead
        try:
            return super().fit_loop(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise FitInterrupted(f"interrupted at epoch {len(self.history)}") from exc

    def get_iterator(self, dataset, training=False):
        if training:
            return self.objective.batches()
        return super().get_iterator(dataset, training=training)

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        losses = self.objective.losses(self, batch)
        total = losses["loss"]
        if not torch.isfinite(total):
            bad = [f"{name} = {float(value)}" for name, value in losses.items()
                   if name != "loss" and not torch.isfinite(torch.as_tensor(value)).all()]
            raise FloatingPointError(
                f"The training loss became {total.item()} at epoch {len(self.history)}"
                + (f" ({', '.join(bad)})" if bad else "")
                + ": lower lr, or check the input for extreme values."
            )
        total.backward()
        self.objective.after_backward(self)  # e.g. memory-bank updates, once autograd is done
        for name, value in losses.items():
            if name != "loss":  # loss_* terms and stat_* diagnostics
                self.history.record_batch(name, float(value.detach()))
        return {"loss": total.detach(), "y_pred": None}

    def infer(self, x, **fit_params):  # pragma: no cover - inference goes through the estimator
        return self.module_(x)


class EpochLosses(Callback):
    """Average every per-batch loss (``loss_*``) and statistic (``stat_*``) recorded by the
    objective into the epoch's history."""

    def on_epoch_end(self, net, **kwargs):
        batches = net.history[-1, "batches"]
        names = {k for b in batches for k in b if k.startswith(("loss_", "stat_"))}
        for name in sorted(names):
            values = [b[name] for b in batches if name in b]
            net.history.record(name, float(np.mean(values)))


class EpochLog(Callback):
    """Print one line per epoch: its losses, statistics and duration.

    Replaces skorch's tabular ``PrintLog``, whose columns are fixed by the first epoch
    and misalign when a loss starts in a later stage (UEM's ``loss_pnce``, TPSNet's
    stage-2 losses).
    """

    def __init__(self, sink=print):
        self.sink = sink

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        parts = [f"epoch {row['epoch']:>3}/{net.max_epochs}"]
        if "stage" in row:
            parts.append(f"stage {row['stage']}")
        parts += [f"{k} {row[k]:.4f}" for k in sorted(row)
                  if k.startswith(("loss_", "stat_")) and isinstance(row[k], float)]
        parts.append(f"{row['dur']:.1f}s")
        self.sink("  ".join(parts))


class ObjectiveEpochHook(Callback):
    """Let the objective refresh its state (banks, prototypes, stage) each epoch."""

    def on_epoch_begin(self, net, **kwargs):
        net.objective.on_epoch_begin(net, len(net.history) - 1)


def train_objective(
    module,
    objective,
    *,
    n_samples,
    max_epochs,
    lr,
    device,
    verbose,
    optimizer=torch.optim.Adam,
    weight_decay=0.0,
    extra_callbacks=(),
    checkpoint=None,
):
    """Train ``module`` with ``objective`` through a :class:`MultiDomainNet`.

    A cosine learning-rate schedule runs over ``max_epochs`` (torch's
    ``CosineAnnealingLR``); with ``verbose > 0`` a progress bar and the per-epoch loss table are printed. An optimizer that takes a
    ``foreach`` flag (Adam, AdamW, SGD ...) gets ``foreach=True``: torch's multi-tensor
    update, which it picks by itself on CUDA but not on the CPU, where the per-tensor
    loop costs a Python round trip per parameter on every step. The updates are the same
    to the bit (tested).

    With ``checkpoint=(path, fingerprint)`` the training state is written to ``path``
    after every epoch (:class:`~skucdr.nn.checkpoint.TrainingCheckpoint`), and a state
    already there for the same fingerprint is resumed, with a warning that says so.

    Returns
    -------
    net : MultiDomainNet
        The fitted net (``net.module_`` is the trained module, ``net.history`` the
        per-epoch losses).
    """
    schedule = LRScheduler(policy="CosineAnnealingLR", T_max=max(1, max_epochs))
    callbacks = [
        ("objective", ObjectiveEpochHook()),
        ("losses", EpochLosses()),
        ("lr_schedule", schedule),
        *extra_callbacks,
    ]
    resuming = None  # the checkpoint callback, when it holds a saved state to resume
    if checkpoint is not None:  # after lr_schedule, whose scheduler it restores
        path, fingerprint = checkpoint
        checkpointer = TrainingCheckpoint(path, fingerprint, schedule,
                                          resume=load_checkpoint(path, fingerprint))
        callbacks.append(("checkpoint", checkpointer))
        if checkpointer.resume is not None:
            resuming = checkpointer
    if verbose:
        n_steps = len(objective.batches())
        callbacks.append(("progress", ProgressBar(batches_per_epoch=n_steps)))
        callbacks.append(("epoch_log", EpochLog()))
    optimizer_params = {"optimizer__weight_decay": weight_decay}
    if "foreach" in inspect.signature(optimizer).parameters:
        optimizer_params["optimizer__foreach"] = True
    net = MultiDomainNet(
        module,
        objective=objective,
        max_epochs=max_epochs,
        lr=lr,
        optimizer=optimizer,
        **optimizer_params,
        device=device,
        callbacks=callbacks,
        verbose=int(verbose),
        batch_size=1,
        callbacks__print_log=None,  # EpochLog prints instead
    )
    try:
        if resuming is None:
            net.fit(np.arange(n_samples), None)
        else:
            net.initialize()
            done = resuming.begin_resume(net)
            warnings.warn(f"Resuming the fit from the checkpoint {path}: {done} of "
                          f"{max_epochs} epochs were done.", UserWarning, stacklevel=4)
            net.partial_fit(np.arange(n_samples), None, epochs=max(0, max_epochs - done))
    except FitInterrupted as exc:
        raise KeyboardInterrupt(str(exc)) from None
    return net
