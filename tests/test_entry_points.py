"""Installed plugins: real distributions installed by pip, found through the ``prunus`` entry-point group.

``tests/sample_plugin`` (distribution ``prunus-sample-plugin``) registers the criterion ``sample_sq``;
``tests/broken_plugin`` (``prunus-broken-plugin``) raises ImportError when imported. Both are installed once per
test run into a private folder, never into the virtualenv, and every check runs in a fresh interpreter with that
folder on ``PYTHONPATH``, so the process running the tests never sees them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from support import import_in_fresh_process

HERE = Path(__file__).parent
DISTRIBUTIONS = ("sample_plugin", "broken_plugin")

PROBE = textwrap.dedent(
    """
    import json, sys, warnings

    import torch
    from torch import nn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import prunus

        names = prunus.registry.names()

    out = {
        "names": names,
        "criteria": prunus.registry.criteria(),
        "warnings": [
            {"category": w.category.__name__, "message": str(w.message)} for w in caught
        ],
        "failures": [
            {"plugin": f.plugin, "distribution": f.distribution, "error": f.error}
            for f in prunus.registry.plugin_failures
        ],
        "modules": sorted(m for m in sys.modules if m.startswith("prunus_")),
    }

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Conv1d(2, 6, 3), nn.Linear(8, 4))

    def masks(name, **options):
        m = model()
        report = prunus.prune(m, name, **options)
        return report, {k: v.int().tolist() for k, v in prunus.masks(m).items()}

    if "sample_sq_unstructured" in names:
        info = {}
        for granularity in ("unstructured", "structured", "global"):
            provider = prunus.registry.info(f"sample_sq_{granularity}").provider
            info[granularity] = {
                "plugin": provider.plugin,
                "distribution": provider.distribution,
                "version": provider.version,
            }
        out["providers"] = info
        out["criterion_provider"] = str(prunus.registry.provider("criterion", "sample_sq"))

        report, ours = masks("sample_sq_unstructured", amount=0.5)
        _, l1 = masks("l1_unstructured", amount=0.5)
        out["unstructured"] = {
            "pruned": {p.name: [p.pruned, p.numel] for p in report.parameters},
            "same_as_l1": ours == l1,
        }
        report, ours = masks("sample_sq_structured", amount=0.5, dim=0)
        _, l2 = masks("ln_structured", amount=0.5, n=2, dim=0)
        out["structured"] = {
            "rows_pruned": {
                k: sum(1 for row in torch.tensor(v).flatten(1) if not row.any()) for k, v in ours.items()
            },
            "rows": {p.name: p.shape[0] for p in report.parameters},
            "same_as_ln2": ours == l2,
        }
        report, ours = masks("sample_sq_global", amount=0.3)
        _, l1 = masks("l1_global", amount=0.3)
        out["global"] = {"pruned": report.pruned, "numel": report.numel, "same_as_l1": ours == l1}
        report, _ = masks("global_unstructured", amount=7, criterion="sample_sq")
        out["global_unstructured_pruned"] = report.pruned

    report, _ = masks("l1_unstructured", amount=0.5)
    out["builtin_pruned"] = report.pruned
    print(json.dumps(out))
    """
)

SCENARIOS: dict[str, dict[str, str]] = {
    "default": {},
    "disabled_by_entry_point": {"PRUNUS_DISABLED_PLUGINS": "sample"},
    "disabled_by_distribution": {"PRUNUS_DISABLED_PLUGINS": "prunus-sample-plugin"},
    "disabled_by_distribution_spelt_otherwise": {"PRUNUS_DISABLED_PLUGINS": "Prunus_Sample.Plugin"},
    "broken_disabled": {"PRUNUS_DISABLED_PLUGINS": "broken"},
    "autoload_off": {"PRUNUS_DISABLE_PLUGIN_AUTOLOAD": "1"},
}


def _clean_env(site: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PRUNUS_") and k not in ("PYTHONPATH", "PYTHONWARNINGS")
    }
    env["PYTHONPATH"] = str(site)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _install(root: Path) -> Path:
    """pip-install both test distributions (from copies, so builds leave nothing in the tree) into one folder."""
    site = root / "site"
    sources = []
    for name in DISTRIBUTIONS:
        source = root / "src" / name
        shutil.copytree(
            HERE / name, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        )
        sources.append(str(source))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            *sources,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return site


def _run_scenarios(site: Path) -> dict[str, Any]:
    """Run the probe once per scenario, all at the same time."""
    running = {
        name: subprocess.Popen(
            [sys.executable, "-c", PROBE],
            env=_clean_env(site, extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, extra in SCENARIOS.items()
    }
    results: dict[str, Any] = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        if process.returncode != 0:
            results[name] = {"error": stderr[-3000:]}
        else:
            results[name] = json.loads(stdout)
    return results


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The folder the plugins are installed in, and what the probe saw in each scenario.

    Computed once per test run: with pytest-xdist the workers share it through a lock-protected file.
    """
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "prunus_entry_points"
    root.mkdir(exist_ok=True)
    done = root / "results.json"
    with FileLock(str(root / "lock")):
        if not done.exists():
            site = _install(root)
            done.write_text(json.dumps({"site": str(site), "scenarios": _run_scenarios(site)}))
    return json.loads(done.read_text())  # type: ignore[no-any-return]


@pytest.fixture
def scenario(request: pytest.FixtureRequest, installed: dict[str, Any]) -> dict[str, Any]:
    result = installed["scenarios"][request.param]
    assert "error" not in result, result.get("error")
    return result  # type: ignore[no-any-return]


def use(name: str) -> Any:
    return pytest.mark.parametrize("scenario", [name], indirect=True)


# -- the installed sample plugin ---------------------------------------------------------------------------------


def test_both_distributions_declare_a_prunus_entry_point(installed: dict[str, Any]) -> None:
    site = Path(installed["site"])
    for dist, line in (
        ("prunus_sample_plugin", "sample = prunus_sample_plugin"),
        ("prunus_broken_plugin", "broken = prunus_broken_plugin"),
    ):
        entry_points = (site / f"{dist}-0.1.0.dist-info" / "entry_points.txt").read_text()
        assert "[prunus]" in entry_points and line in entry_points


def test_the_test_process_does_not_see_the_installed_plugins() -> None:
    from importlib import metadata

    import prunus

    assert "sample_sq_unstructured" not in prunus.registry
    assert not [
        ep for ep in metadata.entry_points(group="prunus") if ep.name in ("sample", "broken")
    ]


@use("default")
def test_the_sample_criterion_is_composed_with_every_granularity(scenario: dict[str, Any]) -> None:
    assert "sample_sq" in scenario["criteria"]
    for granularity in ("unstructured", "structured", "global"):
        assert f"sample_sq_{granularity}" in scenario["names"]


@use("default")
def test_the_provider_is_the_sample_distribution(scenario: dict[str, Any]) -> None:
    for provider in scenario["providers"].values():
        assert provider == {
            "plugin": "sample",
            "distribution": "prunus-sample-plugin",
            "version": "0.1.0",
        }
    assert scenario["criterion_provider"] == "sample (prunus-sample-plugin 0.1.0)"


@use("default")
def test_sample_unstructured_prunes_exact_counts(scenario: dict[str, Any]) -> None:
    pruned = scenario["unstructured"]["pruned"]
    assert set(pruned) == {"0.weight", "2.weight", "3.weight"}
    for count, numel in pruned.values():
        assert count == round(0.5 * numel)
    assert scenario["unstructured"]["same_as_l1"]  # w**2 ranks entries as |w| does


@use("default")
def test_sample_structured_prunes_exact_slices(scenario: dict[str, Any]) -> None:
    structured = scenario["structured"]
    for name, rows in structured["rows"].items():
        assert structured["rows_pruned"][name] == round(0.5 * rows)
    assert structured["same_as_ln2"]  # a sum of squares ranks slices as the L2 norm does


@use("default")
def test_sample_global_prunes_an_exact_total(scenario: dict[str, Any]) -> None:
    assert scenario["global"]["pruned"] == round(0.3 * scenario["global"]["numel"])
    assert scenario["global"]["same_as_l1"]
    assert scenario["global_unstructured_pruned"] == 7


@use("default")
def test_the_broken_plugin_warns_by_name_with_the_disable_hint(scenario: dict[str, Any]) -> None:
    warned = [w for w in scenario["warnings"] if w["category"] == "PluginLoadWarning"]
    assert len(warned) == 1
    message = warned[0]["message"]
    assert "broken (prunus-broken-plugin 0.1.0)" in message
    assert "ImportError" in message and "a_dependency_that_is_not_installed" in message
    assert "PRUNUS_DISABLED_PLUGINS=broken" in message


@use("default")
def test_the_broken_plugin_is_recorded_as_a_failure(scenario: dict[str, Any]) -> None:
    assert [(f["plugin"], f["distribution"]) for f in scenario["failures"]] == [
        ("broken", "prunus-broken-plugin")
    ]
    assert "ImportError" in scenario["failures"][0]["error"]


@use("default")
def test_the_other_plugins_keep_working_beside_a_broken_one(scenario: dict[str, Any]) -> None:
    assert "l1_unstructured" in scenario["names"] and "sample_sq_global" in scenario["names"]
    assert scenario["builtin_pruned"] > 0


@use("default")
def test_warnings_only_come_from_the_broken_plugin(scenario: dict[str, Any]) -> None:
    assert [w["category"] for w in scenario["warnings"]] == ["PluginLoadWarning"]


# -- switches ----------------------------------------------------------------------------------------------------


@use("disabled_by_entry_point")
def test_disabling_by_entry_point_name_hides_the_plugin(scenario: dict[str, Any]) -> None:
    assert "sample_sq" not in scenario["criteria"]
    assert not [n for n in scenario["names"] if n.startswith("sample_sq")]
    assert "prunus_sample_plugin" not in scenario["modules"]  # not even imported
    assert "l1_unstructured" in scenario["names"]


@use("disabled_by_distribution")
def test_disabling_by_distribution_name_hides_the_plugin(scenario: dict[str, Any]) -> None:
    assert "sample_sq" not in scenario["criteria"]
    assert "prunus_sample_plugin" not in scenario["modules"]


@use("disabled_by_distribution_spelt_otherwise")
def test_distribution_names_match_however_they_are_spelt(scenario: dict[str, Any]) -> None:
    assert "sample_sq" not in scenario["criteria"]
    assert "prunus_sample_plugin" not in scenario["modules"]


@use("broken_disabled")
def test_following_the_hint_silences_the_broken_plugin(scenario: dict[str, Any]) -> None:
    assert scenario["warnings"] == []
    assert scenario["failures"] == []
    assert "sample_sq_unstructured" in scenario["names"]


@use("autoload_off")
def test_autoload_off_loads_no_installed_plugin(scenario: dict[str, Any]) -> None:
    assert "sample_sq" not in scenario["criteria"]
    assert scenario["warnings"] == [] and scenario["failures"] == []
    assert scenario["modules"] == []
    assert "l1_unstructured" in scenario["names"]


# -- importing prunus ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_import(installed: dict[str, Any]) -> dict[str, Any]:
    """``import prunus`` with the test distributions installed (tests/test_architecture.py: without them)."""
    return import_in_fresh_process(_clean_env(Path(installed["site"]), {}))


def test_import_does_not_import_pytest_or_hypothesis(fresh_import: dict[str, Any]) -> None:
    assert not fresh_import["pytest"] and not fresh_import["hypothesis"]


def test_import_loads_no_plugin(fresh_import: dict[str, Any]) -> None:
    assert fresh_import["plugins"] == []
    assert fresh_import["third_party"] == []  # not even the broken one, so no warning on import
    assert "not loaded" in fresh_import["loaded"]


def test_import_does_not_initialise_cuda(fresh_import: dict[str, Any]) -> None:
    assert fresh_import["cuda_initialized"] is False
