"""The networks KTRDR strategies train (docs/ktrdr-semantics.md §8) and the device they train on."""

from __future__ import annotations

import platform

import numpy as np
import torch
from torch import nn

from trainhost.jobs.pipeline.errors import TrainingError

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


class RecurrentNetwork(nn.Module):
    """KTRDR's LSTMNetwork / GRUNetwork (§8): a batch-first LSTM or GRU (dropout between layers when
    there are several), the last layer's final hidden state, Dropout, then a Linear to the outputs.
    State-dict keys `lstm.*` or `gru.*` and `fc.*`, as KTRDR's, so the weights load there too."""

    def __init__(self, kind: str, input_size: int, hidden_size: int = 64, num_layers: int = 2,
                 output_size: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        if kind not in ("lstm", "gru"):
            raise ValueError(f"kind must be 'lstm' or 'gru', got {kind!r}")
        self.kind = kind
        layer = nn.LSTM if kind == "lstm" else nn.GRU
        setattr(self, kind, layer(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                                  batch_first=True, dropout=dropout if num_layers > 1 else 0.0))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, sequence_length, features) -> (batch, outputs)."""
        _, hidden = getattr(self, self.kind)(x)
        h_n = hidden[0] if self.kind == "lstm" else hidden  # LSTM returns (h_n, c_n)
        return self.fc(self.dropout(h_n[-1]))


def build_model(spec: dict) -> nn.Module:
    """The network a model spec describes: metadata.json's `model` section, or ModelConfig.model_dump()
    plus `input_size`. `type` mlp (the default), lstm or gru."""
    kind = spec.get("type", "mlp")
    if kind == "mlp":
        return build_mlp(spec["input_size"], list(spec["hidden_layers"]), spec.get("activation", "relu"),
                         spec.get("dropout", 0.2), spec["output_size"])
    return RecurrentNetwork(kind, spec["input_size"], spec.get("hidden_size", 64), spec.get("num_layers", 2),
                            spec["output_size"], spec.get("dropout", 0.2))


def select_device(preference: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; an explicit device must be available.

    Creates no CUDA context (availability checks only), so a worker's parent, which forks the
    work horses that train, calls it too.
    """
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
