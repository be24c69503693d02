"""Hardware-aware selection: the built-in policy, prune(model, "auto"), and plugins that override it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import write_probe
from torch import nn

import prunus
from prunus import HardwareProfile, Selection
from prunus.errors import ConfigError, PluginError
from prunus.hardware.probing import CACHE_ENV
from prunus.hardware.sparse import follows_nm

POLICY = "prunus.hardware_policy"
AMPERE = HardwareProfile.declare("gpu", compute_capability=(8, 0), name="A100")
TURING = HardwareProfile.declare("gpu", compute_capability=(7, 5), name="T4")


pytestmark = pytest.mark.usefixtures("probe_cache")


def big(device: str = "meta") -> nn.Sequential:
    """Two large Linear layers (2:4 material), a small one and the output layer."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(1024, 1024, device=device),
        nn.ReLU(),
        nn.Linear(1024, 1024, device=device),
        nn.Linear(1024, 64, device=device),
        nn.Linear(64, 10, device=device),
    )


def small() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.Linear(32, 10)
    )


def check(selection: Selection, strategy: str) -> None:
    assert selection.strategy == strategy
    assert selection.decided_by == POLICY
    assert selection.reason
    prunus.registry.get(selection.strategy, **selection.options)  # buildable


# -- the built-in policy --------------------------------------------------------------------------------------


def test_ampere_gpu_with_large_linear_layers_gets_two_four_on_those_layers():
    selection = prunus.select(big(), AMPERE, sparsity=0.5)
    check(selection, "l1_nm")
    assert selection.options == {"n_keep": 2, "m_group": 4}
    assert selection.include == ["0.weight", "2.weight"]
    assert "2:4" in selection.reason and "not measured here" in selection.reason
    assert selection.hardware == AMPERE and selection.sparsity == 0.5
    assert selection.objective == "latency"


def test_two_four_is_kept_for_sparsities_near_half_only():
    assert prunus.select(big(), AMPERE, sparsity=0.42).strategy == "l1_nm"
    selection = prunus.select(big(), AMPERE, sparsity=0.8)
    check(selection, "l1_aligned")
    assert "exactly 50 %, not the 80% asked" in selection.reason


@pytest.mark.parametrize(
    ("hardware", "why"),
    [
        (TURING, "compute capability 7.5 is below 8.0"),
        ("gpu", "compute capability is unknown"),
        (
            HardwareProfile.declare("gpu", compute_capability=(9, 0), semi_structured_speedup=0.9),
            "measured 0.90x of dense",
        ),
    ],
)
def test_gpus_without_two_four_get_aligned_structured(hardware, why):
    selection = prunus.select(big(), hardware, sparsity=0.5)
    check(selection, "l1_aligned")
    assert selection.options == {"amount": 0.5, "dim": 0, "round_to": 8}
    assert why in selection.reason
    assert selection.include == ["0.weight", "2.weight", "3.weight"]  # the output layer left whole
    assert "4.weight (the output layer) is left whole" in selection.reason


def test_no_large_linear_layer_means_no_two_four():
    selection = prunus.select(small(), AMPERE, sparsity=0.5)
    check(selection, "l1_aligned")
    assert "no Linear layer of at least 512 x 512" in selection.reason


def test_a_measured_two_four_speedup_is_quoted():
    gpu = HardwareProfile.declare("gpu", compute_capability=(8, 6), semi_structured_speedup=1.3)
    assert "measured 1.30x faster" in prunus.select(big(), gpu).reason


def test_sparse_accelerators_get_unstructured():
    selection = prunus.select(small(), "sparse_accelerator", sparsity=0.7)
    check(selection, "l1_unstructured")
    assert selection.options == {"amount": 0.7} and selection.include is None


def test_accuracy_gets_unstructured_everywhere():
    for hardware in ("cpu", "gpu", AMPERE, "sparse_accelerator"):
        selection = prunus.select(big(), hardware, objective="accuracy", sparsity=0.5)
        check(selection, "l1_unstructured")
        assert "accuracy" in selection.reason


def test_cpu_without_a_probe_gets_structured_and_is_told_to_probe():
    selection = prunus.select(small(), "auto", sparsity=0.9)
    check(selection, "l1_aligned")
    assert "run prunus.probe()" in selection.reason
    assert selection.hardware is not None and selection.hardware.detected


def test_cpu_above_the_measured_crossover_gets_unstructured_and_says_it_measured():
    write_probe(0.85)
    selection = prunus.select(small(), "auto", sparsity=0.9)
    check(selection, "l1_unstructured")
    assert "measured faster than dense above 85.0%" in selection.reason
    assert "prunus.probe()" in selection.reason and "to_sparse" in selection.reason


def test_cpu_below_the_measured_crossover_gets_structured_and_says_why():
    write_probe(0.85)
    selection = prunus.select(small(), "auto", sparsity=0.5)
    check(selection, "l1_aligned")
    assert "only above 85.0%" in selection.reason and "would not run faster" in selection.reason


def test_cpu_where_sparse_never_won():
    write_probe(None)
    selection = prunus.select(small(), "auto", sparsity=0.99)
    check(selection, "l1_aligned")
    assert "faster at no sparsity measured" in selection.reason


def test_a_declared_cpu_uses_the_crossover_it_declares_not_this_machines():
    write_probe(0.5)
    assert prunus.select(small(), "cpu", sparsity=0.9).strategy == "l1_aligned"
    declared = {"kind": "cpu", "sparse_crossover": 0.8}
    assert prunus.select(small(), declared, sparsity=0.9).strategy == "l1_unstructured"


def test_cpu_crossover_is_read_for_the_model_layer_sizes():
    profile = {
        "kind": "cpu",
        "sparse_crossover": 0.99,
        "sparse_crossovers": {"64x64@1": 0.95, "1024x1024@1": 0.7, "1024x1024@32": 0.75},
    }
    large = prunus.select(big(), profile, sparsity=0.8)  # mostly 1024x1024 weights: 75 %
    check(large, "l1_unstructured")
    assert (
        "above 75.0% sparsity for layers of the sizes of this model's Linear layers" in large.reason
    )
    assert "min_sparsity=0.75" in large.reason
    tiny = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    assert prunus.select(tiny, profile, sparsity=0.8).strategy == "l1_aligned"
    assert prunus.select(tiny, profile, sparsity=0.96).strategy == "l1_unstructured"


def test_cpu_with_mostly_convolutions_gets_structured():
    convs = nn.Sequential(nn.Conv2d(64, 64, 3), nn.Flatten(), nn.Linear(64, 10))
    selection = prunus.select(convs, {"kind": "cpu", "sparse_crossover": 0.5}, sparsity=0.9)
    check(selection, "l1_aligned")
    assert "are in convolutions, which have no sparse kernel there" in selection.reason


def test_cpu_alignment_follows_the_vector_width():
    cpu = {"kind": "cpu", "cpu": {"capability": "AVX512"}}
    assert prunus.select(small(), cpu).options["round_to"] == 16


def test_memory_objective_on_cpu():
    assert (
        prunus.select(small(), "cpu", objective="memory", sparsity=0.7).strategy
        == "l1_unstructured"
    )
    assert prunus.select(small(), "cpu", objective="memory", sparsity=0.4).strategy == "l1_aligned"


def test_unknown_hardware_gets_plain_structured():
    selection = prunus.select(small(), {"kind": "unknown"}, sparsity=0.3)
    check(selection, "l1_structured")
    assert selection.options == {"amount": 0.3, "dim": 0}


def test_a_model_with_one_layer_is_pruned_whole():
    selection = prunus.select(nn.Sequential(nn.Linear(8, 8)), "gpu")
    assert selection.include is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objective": "speed"}, "objective='speed'"),
        ({"sparsity": 1.5}, r"sparsity=1\.5"),
        ({"sparsity": True}, "sparsity=True"),
        ({"sparsity": float("nan")}, "sparsity=nan"),
        ({"hardware": "tpu"}, "hardware='tpu'"),
    ],
)
def test_bad_requests(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        prunus.select(small(), **kwargs)


def test_str_of_a_selection():
    text = str(prunus.select(big(), AMPERE))
    assert text.startswith("l1_nm(n_keep=2, m_group=4) on 0.weight, 2.weight for A100")
    assert f"decided by {POLICY}" in text


# -- prune(model, "auto") -------------------------------------------------------------------------------------


def test_prune_auto_prunes_with_the_selection_and_reports_it():
    model = big("cpu")
    report = prunus.prune(model, "auto", sparsity=0.5, hardware=AMPERE)
    assert report.strategy == "l1_nm"
    assert report.selection is not None and report.selection.decided_by == POLICY
    assert [p.name for p in report.parameters] == ["0.weight", "2.weight"]
    assert follows_nm(model[0].weight, 2, 4) and report.sparsity == 0.5
    assert not prunus.is_pruned(model[3])
    assert f"selected by {POLICY}" in str(report)
    dumped = json.loads(report.model_dump_json())
    assert dumped["selection"]["strategy"] == "l1_nm"


def test_prune_auto_respects_an_explicit_include():
    model = big("cpu")
    report = prunus.prune(model, "auto", sparsity=0.5, hardware=TURING, include="4.weight")
    assert [p.name for p in report.parameters] == ["4.weight"]


def test_prune_auto_on_this_machine():
    model = small()
    report = prunus.prune(model, "auto", sparsity=0.5)
    assert report.selection is not None and report.selection.hardware is not None
    assert report.selection.hardware.detected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs sparsity"),
        ({"amount": 0.5}, "sparsity=..., not amount"),
        ({"sparsity": 0.5, "dim": 1}, r"\['dim'\]"),
        ({"sparsity": 0.5, "amounts": {"*": 0.5}}, "amounts= cannot be combined"),
    ],
)
def test_prune_auto_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        prunus.prune(small(), "auto", **options)


# -- plugins --------------------------------------------------------------------------------------------------


class Always:
    """An in-process selection plugin."""

    def __init__(self, selection: Selection | None) -> None:
        self.selection = selection
        self.calls: list[tuple[object, str, float]] = []

    @prunus.hookimpl
    def prunus_select_strategy(self, model, hardware, objective, sparsity):
        self.calls.append((hardware, objective, sparsity))
        return self.selection


def test_a_plugin_overrides_the_built_in_policy():
    registry = prunus.Registry()
    plugin = Always(Selection(strategy="random_structured", options={"amount": 0.2}, reason="mine"))
    registry.register_plugin(plugin, name="mine")
    selection = prunus.select(small(), "gpu", sparsity=0.4, registry=registry)
    assert selection.strategy == "random_structured" and selection.decided_by == "mine"
    hardware, objective, sparsity = plugin.calls[0]
    assert isinstance(hardware, HardwareProfile) and hardware.kind == "gpu"
    assert (objective, sparsity) == ("latency", 0.4)
    report = prunus.prune(small(), "auto", sparsity=0.4, registry=registry)
    assert report.selection is not None and report.selection.decided_by == "mine"


def test_a_plugin_that_returns_none_leaves_the_choice_to_the_next():
    registry = prunus.Registry()
    registry.register_plugin(Always(None), name="shy")
    assert prunus.select(small(), "gpu", registry=registry).decided_by == POLICY


def test_a_selection_of_an_unknown_strategy_names_the_plugin():
    registry = prunus.Registry()
    registry.register_plugin(Always(Selection(strategy="l1_nope", reason="?")), name="broken")
    with pytest.raises(PluginError, match="plugin 'broken' selected 'l1_nope'"):
        prunus.select(small(), registry=registry)
    registry.unregister_plugin("broken")
    registry.register_plugin(
        Always(Selection(strategy="l1_nm", options={"amount": 0.5}, reason="?")), name="bad_options"
    )
    with pytest.raises(PluginError, match="bad_options"):
        prunus.select(small(), registry=registry)


def test_without_any_policy_select_says_which_plugin_is_missing(monkeypatch):
    monkeypatch.setenv("PRUNUS_DISABLED_PLUGINS", POLICY)
    with pytest.raises(PluginError, match=r"prunus\.hardware_policy"):
        prunus.select(small(), registry=prunus.Registry())


@pytest.fixture(scope="module")
def installed_selector(tmp_path_factory) -> Path:
    """tests/selector_plugin installed, as a real distribution with an entry point, into a directory."""
    source = tmp_path_factory.mktemp("source") / "selector_plugin"
    shutil.copytree(Path(__file__).parent / "selector_plugin", source)  # the build writes beside it
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return target


SELECT_IN_SUBPROCESS = """
import json
import prunus
from torch import nn

model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
chosen = prunus.select(model, hardware="gpu", sparsity=0.3)
fallback = prunus.select(model, hardware="gpu", objective="accuracy", sparsity=0.3)
report = prunus.prune(model, "auto", sparsity=0.3, hardware="cpu")
print(json.dumps({
    "strategy": chosen.strategy,
    "options": chosen.options,
    "decided_by": chosen.decided_by,
    "reason": chosen.reason,
    "fallback": fallback.decided_by,
    "pruned_by": report.strategy,
    "report_decided_by": report.selection.decided_by,
}))
"""


def run_select(site: Path, tmp_path: Path, **env: str) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PRUNUS_")}
    environment.update(PYTHONPATH=str(site), **{CACHE_ENV: str(tmp_path)}, **env)
    result = subprocess.run(
        [sys.executable, "-c", SELECT_IN_SUBPROCESS],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_an_installed_plugin_overrides_the_built_in_policy(installed_selector, tmp_path):
    out = run_select(installed_selector, tmp_path)
    assert out["decided_by"] == "selector_example"
    assert out["strategy"] == "random_unstructured"
    assert out["options"] == {"amount": 0.3, "seed": 7}
    assert out["reason"] == "the example plugin prunes at random on every target (here a gpu)"
    assert out["fallback"] == POLICY  # the plugin declined objective accuracy
    assert out["pruned_by"] == "random_unstructured"
    assert out["report_decided_by"] == "selector_example"


def test_disabling_the_installed_plugin_brings_the_built_in_back(installed_selector, tmp_path):
    out = run_select(installed_selector, tmp_path, PRUNUS_DISABLED_PLUGINS="selector_example")
    assert out["decided_by"] == POLICY and out["strategy"] == "l1_aligned"
