"""Shared fixtures: small models (most from :mod:`prunus.testing.zoo`), a private registry, a private probe cache,
and a snapshot that proves a model was left exactly as it was. Helpers the modules import are in support.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# This suite checks prunus and its built-in plugins, whatever else is installed beside them (an example plugin
# whose criterion needs data, say): the global registry loads no entry-point plugin in these processes. The
# entry-point tests install real distributions and probe them in child processes with their own environment.
os.environ["PRUNUS_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import pytest
import torch
from torch import Tensor, nn

import prunus
from prunus import masking
from prunus.hardware.probing import CACHE_ENV
from prunus.testing.zoo import MLP, LeNet, ResidualBlock

# The models here are tiny: one intra-op thread per test process is fastest, and with pytest-xdist it keeps the
# workers from oversubscribing the cores (several threads spinning on a busy machine cost seconds per test).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``gpu`` when no CUDA device is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# -- models ---------------------------------------------------------------------------------------------------


class ResNetTiny(nn.Module):
    """A stem, one residual block with BatchNorm, and a linear head (input 3x8x8)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = ResidualBlock(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(torch.relu(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


class Conv1dNet(nn.Module):
    """Two Conv1d layers and a linear head (input 3x20)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(3, 8, 5)
        self.conv2 = nn.Conv1d(8, 6, 3)
        self.head = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean(dim=2))


class TiedLM(nn.Module):
    """A tiny language model whose output layer shares its weight with the embedding (declared first)."""

    def __init__(self, vocab: int = 12, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.hidden = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(torch.tanh(self.hidden(self.embed(tokens))))


def _inputs(name: str, batch: int = 4) -> Tensor:
    generator = torch.Generator().manual_seed(1)
    if name == "mlp":
        return torch.randn(batch, 16, generator=generator)
    if name == "lenet":
        return torch.randn(batch, 1, 16, 16, generator=generator)
    if name == "resnet":
        return torch.randn(batch, 3, 8, 8, generator=generator)
    if name == "conv1d":
        return torch.randn(batch, 3, 20, generator=generator)
    if name == "tied":
        return torch.randint(0, 12, (batch, 5), generator=generator)
    raise KeyError(name)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "mlp": MLP,
    "lenet": LeNet,
    "resnet": ResNetTiny,
    "conv1d": Conv1dNet,
    "tied": TiedLM,
}


def build(name: str, seed: int = 0) -> nn.Module:
    """A fresh model with reproducible weights."""
    torch.manual_seed(seed)
    model = MODELS[name]()
    if name == "resnet":  # non-trivial BatchNorm statistics, so eval outputs depend on them
        with torch.no_grad():
            model(_inputs(name, batch=8))
    return model.eval()


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """``make_model(name, seed=0)``: a fresh model (one of MODELS) in eval mode."""
    return build


@pytest.fixture
def example_input() -> Callable[..., Tensor]:
    """``example_input(name, batch=4)``: a reproducible input batch for model ``name``."""
    return _inputs


@pytest.fixture(params=sorted(MODELS))
def model_name(request: pytest.FixtureRequest) -> str:
    """Each model name in turn."""
    return str(request.param)


# -- "exactly as before" -----------------------------------------------------------------------------------------


def tensor_bytes(tensor: Tensor) -> tuple[Any, ...]:
    """Everything that identifies a tensor's value, bit for bit."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return (tensor.dtype, tuple(tensor.shape), str(tensor.device), bytes(data.numpy()))


def snapshot(model: nn.Module) -> dict[str, Any]:
    """A comparable record of everything a prune could change in ``model``.

    The ``state_dict`` bytes, every parameter's identity, value and ``requires_grad``, every buffer (persistent
    or not), every hook dict, the ``__dict__`` keys of every module, and whether prunus tracks the module.
    """
    modules: dict[str, Any] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        modules[name] = {
            "type": type(module).__name__,
            "dict_keys": sorted(vars(module)),
            "training": module.training,
            "parameters": {
                key: None if p is None else (id(p), p.requires_grad, tensor_bytes(p))
                for key, p in module._parameters.items()
            },
            "buffers": {
                key: None if b is None else tensor_bytes(b) for key, b in module._buffers.items()
            },
            "non_persistent": sorted(module._non_persistent_buffers_set),
            "hooks": {
                key: list(value)
                for key, value in vars(module).items()
                if "hook" in key and isinstance(value, dict)
            },
            "tracked": module in masking._LIVE,
        }
    return {
        "modules": modules,
        "state_dict": {key: tensor_bytes(value) for key, value in model.state_dict().items()},
    }


@pytest.fixture(name="snapshot")
def snapshot_fixture() -> Callable[[nn.Module], dict[str, Any]]:
    """``snapshot(model)``: compare two of them to prove the model is exactly as it was."""
    return snapshot


@pytest.fixture
def private_registry() -> prunus.Registry:
    """A fresh registry with the built-in plugins, to register test plugins without touching the global one."""
    return prunus.Registry()


@pytest.fixture
def probe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A probe cache directory of this test's own (``$PRUNUS_CACHE_DIR``), empty at first."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"
