"""prunus.analyze: per-layer sizes, MACs, measured latencies and the warnings they lead to."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import prunus
from prunus import AnalysisReport
from prunus.errors import ConfigError, TargetError

pytestmark = pytest.mark.usefixtures("probe_cache")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 6 * 6, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


def net() -> Net:
    torch.manual_seed(0)
    return Net()


X = torch.randn(2, 4, 6, 6)


def test_a_dense_model_has_nothing_to_warn_about():
    report = prunus.analyze(net(), X)
    assert [a.name for a in report.layers] == ["conv", "fc1", "fc2"]
    assert all(
        a.pattern == "dense" and a.warning is None and a.advice is None for a in report.layers
    )
    assert report.sparsity == 0.0 and report.theoretical_speedup == 1.0
    assert report.bytes_compressed == report.bytes_dense
    assert not report.measured and report.model_latency_s is None


def test_macs_per_forward_of_the_example_inputs():
    report = prunus.analyze(net(), X)
    assert report.macs_per == "forward"
    assert report["conv"].macs_dense == 2 * 8 * 6 * 6 * (
        4 * 3 * 3
    )  # output positions x weights each
    assert report["fc1"].macs_dense == 2 * 288 * 64
    assert report["fc2"].macs_dense == 2 * 64 * 10
    per_position = prunus.analyze(net())
    assert per_position.macs_per == "position"
    assert per_position["fc1"].macs_dense == 288 * 64


def test_unstructured_zeros_on_a_cpu_are_flagged_as_not_faster():
    model = net()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    report = prunus.analyze(model, X)
    fc1 = report["fc1"]
    assert fc1.pattern == "unstructured" and fc1.sparsity == 0.5
    assert fc1.nonzeros == 288 * 64 // 2
    assert fc1.theoretical_speedup == pytest.approx(2.0)
    assert fc1.compressed_format == "bitmask"
    assert fc1.bytes_compressed == 288 * 64 // 2 * 4 + 288 * 64 // 8
    assert fc1.bytes_dense == 288 * 64 * 4
    if report.device == "cpu":
        assert fc1.warning is not None
        assert "50% unstructured zeros cannot run faster on this CPU" in fc1.warning
        assert "not measured here" in fc1.warning and "structured pruning" in fc1.warning
        assert fc1.warning in report.warnings


def test_convolutions_have_no_sparse_kernel():
    model = net()
    prunus.prune(model, "l1_unstructured", amount=0.9, include="conv.weight")
    conv = prunus.analyze(model, X, hardware={"kind": "cpu", "sparse_crossover": 0.5})["conv"]
    assert "torch has no sparse kernel for convolutions" in (conv.warning or "")


def test_the_warning_quotes_the_probed_crossover():
    model = net()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    report = prunus.analyze(model, X, hardware={"kind": "cpu", "sparse_crossover": 0.9})
    assert "prunus.probe() measured CSR faster only above 90% for this shape" in (
        report["fc1"].warning or ""
    )
    above = net()
    prunus.prune(above, "l1_unstructured", amount=0.95)
    report = prunus.analyze(above, X, hardware={"kind": "cpu", "sparse_crossover": 0.9})
    assert report["fc1"].warning is None
    assert "convert with prunus.to_sparse" in (report["fc1"].advice or "")


def test_two_four_is_recognised_and_sized():
    model = net()
    prunus.prune(model, "l1_nm")
    report = prunus.analyze(model, X)
    fc1 = report["fc1"]
    assert fc1.pattern == "2:4" and fc1.sparsity == 0.5
    assert report["conv"].pattern == "2:4"
    if report.device == "cpu":
        assert "2:4 runs faster on CUDA GPUs" in (fc1.warning or "")
    ampere = prunus.analyze(
        model, X, hardware=prunus.HardwareProfile.declare("gpu", compute_capability=(8, 0))
    )
    assert ampere["fc1"].warning is None and "to_sparse" in (ampere["fc1"].advice or "")


def test_structured_zeros_are_advised_to_shrink():
    model = net()
    prunus.prune(model, "l1_aligned", amount=0.5, round_to=8, include=["fc1.weight"])
    report = prunus.analyze(model, X)
    fc1 = report["fc1"]
    assert fc1.pattern == "structured"
    assert (fc1.zero_rows, fc1.zero_cols) == (32, 0)
    assert fc1.compressed_format == "shrunk" and fc1.bytes_compressed == 32 * 288 * 4
    assert fc1.macs_shrunk == fc1.macs_dense // 2
    assert fc1.warning is None and "shrunk" in (fc1.advice or "")
    conv = prunus.analyze(_pruned_conv_inputs(), X)["conv"]
    assert conv.pattern == "structured" and conv.zero_cols == 2


def _pruned_conv_inputs() -> Net:
    model = net()
    prunus.prune(model, "l1_structured", amount=2, dim=1, include="conv.weight")
    return model


def test_empty_layers():
    model = net()
    prunus.prune(model, "l1_unstructured", amount=1.0, include="fc2.weight")
    fc2 = prunus.analyze(model, X)["fc2"]
    assert fc2.pattern == "empty" and fc2.nonzeros == 0
    assert fc2.theoretical_speedup == float("inf") and "can be removed" in (fc2.advice or "")


def test_measured_latencies_and_a_verdict_consistent_with_them():
    model = net()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    report = prunus.analyze(model, X, measure=True, repeats=2)
    assert report.measured and report.model_latency_s is not None and report.model_latency_s > 0
    fc1 = report["fc1"]
    assert {"as_is", "dense", "csr", "structured_equivalent"} <= set(fc1.latency_s)
    assert {"as_is", "dense", "structured_equivalent"} <= set(report["conv"].latency_s)
    assert all(v > 0 for v in fc1.latency_s.values())
    fastest = fc1.best_measured
    assert fastest is not None
    name, seconds = fastest
    if name in ("csr",) and seconds < fc1.latency_s["dense"] * 0.95:
        assert fc1.warning is None and "measured" in (fc1.advice or "")
    else:
        assert fc1.warning is not None and "cannot run faster" in fc1.warning
    for total in ("dense", "as_is", "best"):
        assert report.latency_total(total) is not None
    text = str(report)
    assert "dense ms" in text and "whole model as it is" in text


def test_measuring_a_structured_layer_times_the_shrunk_one():
    model = net()
    prunus.prune(model, "l1_structured", amount=0.5, include=["fc1.weight", "conv.weight"])
    report = prunus.analyze(model, X, measure=True, repeats=2)
    assert "shrunk" in report["fc1"].latency_s and "shrunk" in report["conv"].latency_s


def test_converted_layers_are_analysed_as_they_execute():
    model = net()
    prunus.prune(model, "l1_unstructured", amount=0.9)
    expected = prunus.analyze(model, X)
    prunus.to_sparse(model)
    report = prunus.analyze(model, X, measure=True, repeats=2)
    fc1 = report["fc1"]
    assert fc1.kind == "SparseLinear" and fc1.executes_as == "csr"
    assert fc1.nonzeros == expected["fc1"].nonzeros and fc1.shape == (64, 288)
    assert fc1.macs_dense == expected["fc1"].macs_dense
    assert "as_is" in fc1.latency_s and "dense" in fc1.latency_s


def test_report_is_pydantic_and_readable():
    model = net()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    report = prunus.analyze(model, X)
    again = AnalysisReport.model_validate(json.loads(report.model_dump_json()))
    assert again.layers == report.layers
    text = str(report)
    assert text.splitlines()[0].startswith("prunus analysis on cpu")
    assert "total" in text and "warnings:" in text
    with pytest.raises(KeyError, match="no analysed layer 'nope'"):
        report["nope"]


def test_bad_calls():
    with pytest.raises(ConfigError, match="needs example_inputs"):
        prunus.analyze(net(), measure=True)
    with pytest.raises(TargetError, match="no Linear or Conv"):
        prunus.analyze(nn.Sequential(nn.ReLU()))


def test_keyword_and_tuple_inputs():
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.fc(a) + b

    a, b = torch.randn(3, 4), torch.randn(3, 4)
    assert prunus.analyze(TwoInputs(), (a, b))["fc"].macs_dense == 3 * 16
    assert prunus.analyze(TwoInputs(), {"a": a, "b": b})["fc"].macs_dense == 3 * 16
