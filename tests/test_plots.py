"""PNG plots through matplotlib's Agg canvas, and ``import prunus`` staying light."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import prunus
from prunus import SensitivityCurve, SensitivityResult, plots

PNG = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("matplotlib")


def model() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    prunus.prune(net, "l1_unstructured", amounts={"0.weight": 0.5, "2.weight": 0.9})
    return net


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def test_layer_sparsity_bars(tmp_path: Path) -> None:
    net = model()
    assert plots.layer_sparsity(net) == pytest.approx({"0.weight": 0.5, "2.weight": 0.9}, abs=1e-3)
    figure = plots.plot_layer_sparsity(net, tmp_path / "deep" / "bars.png")
    assert is_png(tmp_path / "deep" / "bars.png")
    assert figure.axes[0].get_ylabel() == "sparsity (%)"
    plots.plot_layer_sparsity({"a": 0.1}, tmp_path / "dict.png")
    assert is_png(tmp_path / "dict.png")
    with pytest.raises(prunus.ConfigError):
        plots.plot_layer_sparsity({})


def test_layer_sparsity_of_a_quantized_model() -> None:
    net = nn.Sequential(nn.Linear(8, 8))
    prunus.prune(net, "l1_unstructured", amount=0.5)
    assert plots.layer_sparsity(prunus.quantize(net)) == {"0.weight": 0.5}


def test_weights_before_and_after_with_the_mask(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(300, 20))
    before = net[0].weight.detach().clone()
    prunus.prune(net, "l1_unstructured", amount=0.7)
    mask = prunus.masks(net)["0.weight"]
    figure = plots.plot_weights(before, net[0].weight, tmp_path / "w.png", mask=mask, title="w")
    assert is_png(tmp_path / "w.png")
    assert {"before", "after", "mask (kept)"} <= {a.get_title() for a in figure.axes}
    conv = torch.randn(4, 2, 3, 3)
    plots.plot_weights(conv, conv * 0, tmp_path / "conv.png")
    assert is_png(tmp_path / "conv.png")
    with pytest.raises(prunus.ConfigError):
        plots.plot_weights(torch.zeros(2, 2), torch.zeros(3, 3))


def test_sensitivity_accuracy_and_schedule_plots(tmp_path: Path) -> None:
    result = SensitivityResult(
        strategy="l1_unstructured",
        options={},
        baseline=0.9,
        higher_is_better=True,
        curves=[
            SensitivityCurve(name="a", numel=10, amounts=[0.5, 0.9], metrics=[0.9, 0.7]),
            SensitivityCurve(name="b", numel=10, amounts=[0.5, 0.9], metrics=[0.8, 0.2]),
        ],
    )
    plots.plot_sensitivity(result, tmp_path / "s.png", suggested={"a": 0.5, "b": 0.2})
    plots.plot_accuracy_vs_sparsity(
        {"magnitude": [(0.5, 0.9), (0.9, 0.8)], "random": [(0.5, 0.5)]},
        tmp_path / "a.png",
        dense=0.95,
    )
    schedule = prunus.registry.schedule("cubic", final_sparsity=0.9, end=10, every=2)
    plots.plot_schedule(schedule.points(), tmp_path / "c.png", reached=[(2, 0.3)])
    for name in ("s.png", "a.png", "c.png"):
        assert is_png(tmp_path / name), name


def test_a_missing_matplotlib_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"prunus\[plots\]"):
        plots.plot_layer_sparsity({"a": 0.5})
