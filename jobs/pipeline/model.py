"""The networks KTRDR strategies train (KTRDR-PIPELINE.md §8) and the device they train on."""

from __future__ import annotations

import platform

import numpy as np
import torch
from torch import nn

from .errors import TrainingError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,  # PyTorch's default negative slope is KTRDR's 0.01
}


def build_mlp(
    input_size: int,
    hidden_layers: list[int],
    activation: str = "relu",
    dropout: float = 0.2,
    output_size: int = 3,
) -> nn.Sequential:
    """Linear, activation, Dropout per hidden size, then a Linear producing logits (no softmax).

    Layer positions give KTRDR's state-dict keys: `{3j}.weight` for hidden layer j and `{3H}.*` for
    the output layer, so models trained here load into KTRDR's backtester and back. Unknown
    activations fall back to ReLU as in KTRDR; the strategy validator refuses them before this.
    """
    act = ACTIVATIONS.get(activation, nn.ReLU)
    layers: list[nn.Module] = []
    width = input_size
    for size in hidden_layers:
        layers += [nn.Linear(width, size), act(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, output_size))
    return nn.Sequential(*layers)


def select_device(preference: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; an explicit device must be available."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {preference!r} was requested but CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise TrainingError(f"device {preference!r} was requested but only {torch.cuda.device_count()} "
                            "CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TrainingError(f"device {preference!r} was requested but Apple MPS is not available here")
    return device


def describe_device(device: torch.device) -> dict:
    """`{type, name, index}` as the job meta's `device` field reports it."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "index": index}
    if device.type == "mps":
        return {"type": "mps", "name": "Apple MPS", "index": 0}
    return {"type": device.type, "name": platform.processor() or platform.machine() or "cpu", "index": None}


def as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torch.as_tensor without copying, except read-only arrays (pandas hands those out), which
    torch would wrap with a warning about writes it never makes here."""
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = x.copy()
    return torch.as_tensor(x, dtype=dtype)
