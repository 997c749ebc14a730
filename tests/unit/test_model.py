"""The MLP's shape and state-dict keys (docs/ktrdr-semantics.md §8) and device selection."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from trainhost.jobs.pipeline.errors import TrainingError
from trainhost.jobs.pipeline.model import as_tensor, build_mlp, describe_device, select_device


def test_mlp_layers_and_state_dict_keys_match_ktrdr():
    model = build_mlp(12, [64, 32], dropout=0.3)
    kinds = [type(layer) for layer in model]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"]
    assert model[0].in_features == 12 and model[6].out_features == 3
    assert model[2].p == 0.3
    assert model(torch.zeros(5, 12)).shape == (5, 3)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid), ("leaky_relu", nn.LeakyReLU),
     ("unknown", nn.ReLU)],
)
def test_activations(name, kind):
    model = build_mlp(4, [8], activation=name, output_size=4)
    assert isinstance(model[1], kind)
    assert model[-1].out_features == 4
    if name == "leaky_relu":
        assert model[1].negative_slope == 0.01


def test_defaults_dropout_and_no_hidden_layers():
    assert build_mlp(4, [8])[2].p == 0.2
    assert list(build_mlp(4, []).state_dict()) == ["0.weight", "0.bias"]


def test_select_and_describe_cpu():
    device = select_device("cpu")
    assert device == torch.device("cpu")
    info = describe_device(device)
    assert info["type"] == "cpu" and info["index"] is None and info["name"]
    assert select_device("auto").type in ("cuda", "mps", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_cuda_is_refused():
    with pytest.raises(TrainingError, match="CUDA is not available"):
        select_device("cuda")


def test_as_tensor_copies_only_read_only_arrays():
    writable = np.arange(4, dtype=np.float32)
    assert as_tensor(writable, torch.float32).data_ptr() == writable.ctypes.data  # no copy
    frozen = np.arange(4, dtype=np.float32)
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_tensor(frozen, torch.float32).tolist() == [0, 1, 2, 3]
