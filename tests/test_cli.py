"""The ``prunus`` command line: listing, info, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import prunus
from prunus.cli import run


def test_list_shows_every_strategy_with_granularity_summary_and_provider(capsys):
    assert run(["list"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.strip().splitlines()
    assert header.split()[:3] == ["strategy", "granularity", "provided"]
    listed = {row.split()[0]: row for row in rows}
    assert set(listed) == set(prunus.registry.names())
    for name, row in listed.items():
        info = prunus.registry.info(name)
        assert info.granularity in row
        assert info.summary in row
        assert info.provider.plugin in row


def test_list_pattern_and_json(capsys):
    assert run(["list", "*_structured", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == prunus.registry.names("*_structured")
    assert all(r["granularity"] == "structured" for r in rows)
    assert all(r["distribution"] == "prunus" for r in rows)


@pytest.mark.parametrize(
    ("flag", "kind", "title"),
    [
        ("--criteria", "criterion", "criterion"),
        ("--granularities", "granularity", "granularity"),
        ("--schedules", "schedule", "schedule"),
        ("--allocations", "allocation", "allocation"),
        ("--reconstructions", "reconstruction", "reconstruction"),
    ],
)
def test_list_components(capsys, flag, kind, title):
    assert run(["list", flag]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split()[0] == title
    listed = {row.split()[0]: row for row in rows}
    components = prunus.registry.components(kind)
    assert set(listed) == {c.name for c in components}
    for component in components:
        assert component.summary in listed[component.name]
        assert component.provider.plugin in listed[component.name]


def test_info_says_a_data_aware_strategy_needs_calibration_data(capsys):
    assert run(["info", "sparsegpt_nm"]) == 0
    out = capsys.readouterr().out
    assert "calibration data: needed" in out and "input_gram" in out
    assert run(["info", "l1_nm"]) == 0
    assert "calibration" not in capsys.readouterr().out


def test_list_components_as_json_with_pattern(capsys):
    assert run(["list", "--schedules", "--json", "c*"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == prunus.registry.schedules("c*")
    assert rows and all(r["distribution"] == "prunus" for r in rows)


def test_list_pattern_that_matches_nothing_is_an_error(capsys):
    assert run(["list", "nothing_*"]) != 0
    assert "nothing matches 'nothing_*'" in capsys.readouterr().err


def test_info_lists_options_with_defaults(capsys):
    assert run(["info", "ln_structured"]) == 0
    out = capsys.readouterr().out
    assert "amount: int | float, required" in out
    assert "dim: int, default 0" in out
    assert "n: int | float, required" in out


def test_unknown_strategy_is_one_line_error_with_suggestion(capsys):
    assert run(["info", "l1_unstructed"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "Did you mean 'l1_unstructured'" in lines[0]
    assert "Traceback" not in captured.err


def test_private_registry_is_used(capsys):
    registry = prunus.Registry()
    registry.unregister("custom_mask")
    assert run(["list", "--json"], registry=registry) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert "custom_mask" not in names
    assert "custom_mask" in prunus.registry.names()


def test_console_script_runs_in_a_real_process(tmp_path: Path):
    script = Path(sys.executable).with_name("prunus")
    if not script.exists():
        pytest.skip("the prunus console script is not installed next to this interpreter")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNUS_")}
    done = subprocess.run(
        [str(script), "list"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "l1_structured" in done.stdout
    bad = subprocess.run(
        [str(script), "info", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "no strategy named 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
