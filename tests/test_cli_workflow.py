"""``prunus prune``, ``prunus report`` and ``prunus sensitivity`` on a tiny model, and their one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from torch import nn

import prunus
from prunus.cli import main, run
from prunus.testing import zoo

WIDTHS = (8, 24, 3)  # the MLP of net.py, which a user writes as plain torch
NET = """
import torch
from torch import nn


def make():
    return nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 3))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = x[:, :3].argmax(dim=1)
    return (x[:64], y[:64]), (x[64:], y[64:])


def broken():
    raise RuntimeError("the factory failed")


def not_a_model():
    return 42
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "net.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    torch.save(zoo.mlp(WIDTHS, seed=0).state_dict(), tmp_path / "dense.pt")
    return tmp_path


FACTORY = ["--factory", "net.py:make"]


def load(path: Path) -> nn.Module:
    model = zoo.mlp(WIDTHS)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def zeros(model: nn.Module) -> dict[str, float]:
    return {
        name: float((p == 0).float().mean())
        for name, p in model.named_parameters()
        if "weight" in name
    }


def test_prune_one_shot_writes_checkpoint_report_and_plots(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        [
            "prune",
            "dense.pt",
            *FACTORY,
            "--strategy",
            "l1_unstructured",
            "--amount",
            "0.5",
            "--data",
            "net.py:data",
            "--quantize",
            "--compressed",
            "out/pruned.compressed.pt",
            "--plots",
            "out/plots",
            "-o",
            "out/pruned.pt",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert zeros(load(workdir / "out/pruned.pt")) == {"0.weight": 0.5, "2.weight": 0.5}
    report = json.loads((workdir / "out/pruned.report.json").read_text())
    assert report["prune"]["strategy"] == "l1_unstructured"
    assert [r["label"] for r in report["evaluation"]] == ["dense", "pruned", "pruned + int8"]
    assert report["evaluation"][1]["accuracy"] is not None
    assert report["evaluation"][1]["latency_ms"] > 0
    for name in ("layer_sparsity.png", "weights.png"):
        assert (workdir / "out/plots" / name).read_bytes()[:4] == b"\x89PNG"
    state = prunus.load_compressed(workdir / "out/pruned.compressed.pt")
    assert torch.equal(state["0.weight"], load(workdir / "out/pruned.pt").state_dict()["0.weight"])
    assert "compression vs dense" in out and "parameter" in out


def test_prune_gradually_from_a_yaml_config(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "prune.yaml").write_text(
        "strategy: l1_unstructured\n"
        "schedule:\n"
        "  name: cubic\n"
        "  options: {final_sparsity: 0.75, end: 6, every: 2}\n"
        "fine_tune: {epochs: 2, batch_size: 16}\n"
    )
    code = run(
        [
            "prune",
            "dense.pt",
            *FACTORY,
            "--config",
            "prune.yaml",
            "--data",
            "net.py:data",
            "-o",
            "g.pt",
            "--report",
            "g.json",
            "--plots",
            "gplots",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr()
    assert zeros(load(workdir / "g.pt")) == {"0.weight": 0.75, "2.weight": 0.75}
    report = json.loads((workdir / "g.json").read_text())
    assert [h["step"] for h in report["schedule"]["history"]] == [2, 4, 6]
    assert report["fine_tune"]["steps"] == 8
    assert (workdir / "gplots/schedule.png").is_file()


def test_config_flags_override_the_file_and_json_configs_work(workdir: Path) -> None:
    (workdir / "p.json").write_text(json.dumps({"strategy": "l1_unstructured", "amount": 0.25}))
    assert (
        run(["prune", "dense.pt", *FACTORY, "--config", "p.json", "--amount", "0.5", "-o", "o.pt"])
        == 0
    )
    assert zeros(load(workdir / "o.pt")) == {"0.weight": 0.5, "2.weight": 0.5}
    code = run(
        [
            "prune",
            "dense.pt",
            *FACTORY,
            "--strategy",
            "l1_structured",
            "--option",
            "dim=0",
            "--layer-amount",
            "0.weight=12",
            "-o",
            "s.pt",
        ]
    )
    assert code == 0
    assert zeros(load(workdir / "s.pt")) == {"0.weight": 0.5, "2.weight": 0.0}


def test_report_and_sensitivity_commands(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(
            [
                "prune",
                "dense.pt",
                *FACTORY,
                "--strategy",
                "l1_unstructured",
                "--amount",
                "0.5",
                "-o",
                "p.pt",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        run(
            [
                "report",
                "p.pt",
                *FACTORY,
                "--baseline",
                "dense.pt",
                "--data",
                "net.py:data",
                "--json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in payload["evaluation"]] == ["baseline", "p.pt"]
    assert (
        payload["evaluation"][1]["nonzero_parameters"]
        < payload["evaluation"][0]["nonzero_parameters"]
    )
    assert run(["report", "p.pt", *FACTORY, "--quantize", "--input-shape", "2,8"]) == 0
    out = capsys.readouterr().out
    assert "p.pt + int8" in out and "50.0%" in out and "latency" in out

    code = run(
        [
            "sensitivity",
            "dense.pt",
            *FACTORY,
            "--data",
            "net.py:data",
            "--amounts",
            "0.25,0.5,0.75",
            "--target-sparsity",
            "0.5",
            "-o",
            "sens.json",
            "--plot",
            "sens.png",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "suggested per-layer amounts" in out and "--layer-amount 0.weight=" in out
    result = json.loads((workdir / "sens.json").read_text())
    assert set(result["suggested"]) == {"0.weight", "2.weight"}
    assert (workdir / "sens.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "prune",
                "missing.pt",
                *FACTORY,
                "--strategy",
                "l1_unstructured",
                "--amount",
                "0.5",
                "-o",
                "x.pt",
            ],
            "no checkpoint",
        ),
        (
            ["prune", "dense.pt", "--strategy", "l1_unstructured", "--amount", "0.5", "-o", "x.pt"],
            "--factory",
        ),
        (
            [
                "prune",
                "dense.pt",
                "--factory",
                "net.py",
                "--strategy",
                "l1_unstructured",
                "--amount",
                "0.5",
                "-o",
                "x.pt",
            ],
            "module:function",
        ),
        (
            [
                "prune",
                "dense.pt",
                "--factory",
                "net.py:broken",
                "--strategy",
                "l1_unstructured",
                "--amount",
                "0.5",
                "-o",
                "x.pt",
            ],
            "the factory failed",
        ),
        (
            [
                "prune",
                "dense.pt",
                "--factory",
                "net.py:not_a_model",
                "--strategy",
                "l1_unstructured",
                "--amount",
                "0.5",
                "-o",
                "x.pt",
            ],
            "not a torch.nn.Module",
        ),
        (
            [
                "prune",
                "dense.pt",
                "--factory",
                "nope_module:make",
                "--strategy",
                "l1_unstructured",
                "--amount",
                "0.5",
                "-o",
                "x.pt",
            ],
            "importing nope_module failed",
        ),
        (
            [
                "prune",
                "dense.pt",
                *FACTORY,
                "--strategy",
                "l1_unstructed",
                "--amount",
                "0.5",
                "-o",
                "x.pt",
            ],
            "Did you mean",
        ),
        (
            [
                "prune",
                "dense.pt",
                *FACTORY,
                "--strategy",
                "l1_unstructured",
                "--amount",
                "1.5",
                "-o",
                "x.pt",
            ],
            "not a fraction",
        ),
        (["prune", "dense.pt", *FACTORY, "--amount", "0.5", "-o", "x.pt"], "no strategy"),
        (
            [
                "prune",
                "dense.pt",
                *FACTORY,
                "--strategy",
                "l1_unstructured",
                "--schedule",
                "cubic",
                "--schedule-option",
                "final_sparsity=0.5",
                "--schedule-option",
                "end=4",
                "--epochs",
                "1",
                "-o",
                "x.pt",
            ],
            "training data",
        ),
        (["prune", "dense.pt", *FACTORY, "--config", "bad.yaml", "-o", "x.pt"], "unknown option"),
        (
            ["prune", "dense.pt", *FACTORY, "--config", "missing.yaml", "-o", "x.pt"],
            "cannot read config",
        ),
        (
            [
                "prune",
                "dense.pt",
                *FACTORY,
                "--strategy",
                "l1_unstructured",
                "--option",
                "oops",
                "-o",
                "x.pt",
            ],
            "KEY=VALUE",
        ),
        (
            [
                "prune",
                "model.pt",
                *FACTORY,
                "--strategy",
                "l1_unstructured",
                "--amount",
                "0.5",
                "-o",
                "x.pt",
            ],
            "--trust-checkpoint",
        ),
        (
            [
                "prune",
                "other.pt",
                *FACTORY,
                "--strategy",
                "l1_unstructured",
                "--amount",
                "0.5",
                "-o",
                "x.pt",
            ],
            "does not fit",
        ),
        (
            ["sensitivity", "dense.pt", *FACTORY, "--data", "net.py:data", "--amounts", "a,b"],
            "must be numbers",
        ),
        (
            [
                "sensitivity",
                "dense.pt",
                *FACTORY,
                "--data",
                "net.py:data",
                "--target-sparsity",
                "0.5",
                "--max-loss",
                "0.1",
            ],
            "at most one",
        ),
        (["report", "dense.pt", *FACTORY, "--input-shape", "x,y"], "input-shape"),
    ],
)
def test_user_mistakes_end_in_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (workdir / "bad.yaml").write_text("strategy: l1_unstructured\namount: 0.5\nwhatever: 1\n")
    torch.save(nn.Linear(2, 2), workdir / "model.pt")
    torch.save(nn.Linear(2, 2).state_dict(), workdir / "other.pt")
    code = run(args)
    err = capsys.readouterr().err
    assert code != 0
    assert message in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err


def test_a_whole_pickled_model_loads_with_trust(workdir: Path) -> None:
    torch.save(zoo.mlp(WIDTHS), workdir / "whole.pt")
    args = ["prune", "whole.pt", "--strategy", "l1_unstructured", "--amount", "0.5", "-o", "w.pt"]
    assert run([*args, "--trust-checkpoint"]) == 0
    assert zeros(load(workdir / "w.pt"))["0.weight"] == 0.5


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("prune", "report", "sensitivity"):
        assert run([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "--factory" in text and "MODULE:FUNCTION" in text
        for param in main.commands[command].params:  # every option is explained
            if isinstance(param, click.Option):
                assert param.help, (command, param.name)
                assert param.opts[-1] in text
    assert run(["--help"]) == 0
    listing = capsys.readouterr().out
    for command in ("prune", "report", "sensitivity", "list", "info"):
        assert command in listing


def test_console_script_gives_no_traceback(workdir: Path) -> None:
    script = Path(sys.executable).parent / "prunus"
    if not script.exists():
        pytest.skip("the prunus console script is not installed")
    done = subprocess.run(
        [
            str(script),
            "prune",
            "dense.pt",
            *FACTORY,
            "--strategy",
            "l1_unstructured",
            "--amount",
            "2.5",
            "-o",
            "x.pt",
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
        env={**os.environ},
        timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ")
