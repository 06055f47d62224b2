"""Devices: resolving ``device="auto"``, checking a device is here, and moving a fitted
skorch net between devices (a GPU-fitted net pickles as a CPU copy and moves back to
its GPU when that GPU is there)."""

from __future__ import annotations

import io
import pickle
import warnings

import torch

__all__ = ["device_available", "move_net", "net_on_cpu", "resolve_device"]


def resolve_device(device):
    """Turn ``"auto"`` into ``"cuda"`` when available, else ``"cpu"``; check the rest."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'auto')."
        ) from exc
    if str(device).startswith("cuda") and not device_available(device):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for, but CUDA is not available here.")
        raise ValueError(
            f"device={device!r} was asked for, but only {torch.cuda.device_count()} CUDA "
            "device(s) are visible here."
        )
    return str(device)


def device_available(device):
    """Whether ``device`` (a valid torch device) can be used here: its backend is
    available and its index, if any, is below the backend's device count."""
    device = torch.device(device)
    if device.type == "cpu":
        return True
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu ...
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and not is_available():
        return False
    count = getattr(backend, "device_count", None)  # "cuda:1" on a one-GPU machine
    return device.index is None or not callable(count) or device.index < count()


class _CPUPickler(pickle.Pickler):
    """A pickler that stores every tensor as a CPU tensor (parameters stay parameters;
    shared tensors stay shared, through pickle's memo)."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor) and obj.device.type != "cpu":
            data = obj.detach().cpu()
            if isinstance(obj, torch.nn.Parameter):
                return torch.nn.Parameter, (data, obj.requires_grad)
            return _cpu_tensor, (data, obj.requires_grad)
        return NotImplemented


def _cpu_tensor(data, requires_grad):
    return data.requires_grad_(requires_grad) if requires_grad else data


def net_on_cpu(net):
    """A copy of ``net`` whose tensors are all on the CPU (module, optimizer, callbacks)."""
    buffer = io.BytesIO()
    _CPUPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(net)
    copy = pickle.loads(buffer.getvalue())
    copy.device = "cpu"
    return copy


def move_net(net, device):
    """Move an unpickled CPU ``net`` to ``device``, or leave it on the CPU with a warning
    when that device is missing here; returns the device it is on."""
    if not device_available(device):
        warnings.warn(
            f"This retriever was fitted on device {device!r}, which is not available "
            "here; it is loaded on the CPU (transform and kneighbors run there).",
            UserWarning,
            stacklevel=3,
        )
        return "cpu"
    net.module_.to(device)
    for per_parameter in net.optimizer_.state.values():
        for key, value in per_parameter.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                per_parameter[key] = value.to(device)
    net.device = device
    return device
