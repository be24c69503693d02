"""The command line never ends in a traceback, checks everything before any work, and writes its outputs last,
together and atomically: each case here is a reproduction that once left a traceback or a partial output."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_cli_workflow import NET as BASE_NET
from torch import nn

import prunus
from prunus.cli import run

NET = (
    BASE_NET
    + """

def wrong_width():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=g)
    return (x, x[:, 0].long().abs() % 3), (x, x[:, 0].long().abs() % 3)
"""
)
"""The model and data functions of tests/test_cli_workflow.py, and data that does not fit the model."""

FACTORY = ["--factory", "net:make"]
ONE_SHOT = ["prune", "dense.pt", *FACTORY, "--strategy", "l1_unstructured"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "net.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.save(
        nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 3)).state_dict(), "dense.pt"
    )
    sys.modules.pop("net", None)
    return tmp_path


def files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def fails(args: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    """Run the command; it must fail with exit status 2 and one line naming every fragment."""
    code = run(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--amount", "0.5", "--input-shape", "2,5"], ("--input-shape 2,5", "could not run")),
        (["--amount", "0.5", "--data", "net:wrong_width"], ("--data test batch", "could not run")),
        (["--amount", "0.5", "--report", "."], ("is a directory",)),
        (["--amount", "0.5", "--compressed", "out.pt"], ("two different outputs",)),
        (["--amount", "0.5", "--plots", "net.py"], ("is a file",)),
        (["--amount", "0.5", "--option", "dim=0"], ("dim", "unknown option")),
        (["--amount", "2.5"], ("not a fraction",)),
        (["--amount", "10000"], ("larger than",)),
        (["--amount", "abc"], ("not a number",)),
        (["--amount", "nan"], ("amount",)),
        (["--amount", "0.5", "--lr", "nan", "--epochs", "1", "--data", "net:data"], ("lr",)),
        (["--amount", "0.5", "--threads", "0"], ("threads",)),
        (["--amount", "0.5", "--input-shape", "1," * 20], ("--input-shape",)),
        (["--amount", "0.5", "--input-shape", "100000,100000"], ("at most",)),
    ],
)
def test_every_option_is_checked_before_any_work_and_nothing_is_written(
    workdir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragments: tuple[str, ...]
) -> None:
    """The reproductions: an --input-shape or --data that does not fit ended in a traceback; -o was written
    before the remaining options were checked, leaving a checkpoint without its report."""
    before = files(workdir)
    fails([*ONE_SHOT, *extra, "-o", "out.pt"], capsys, *fragments)
    assert files(workdir) == before


def previous_outputs(workdir: Path) -> dict[str, bytes]:
    assert run([*ONE_SHOT, "--amount", "0.5", "-o", "out.pt", "--compressed", "out.c.pt"]) == 0
    return files(workdir)


@pytest.mark.parametrize(
    "failure",
    ["full disk", "read-only", "plot", "internal"],
)
def test_a_failure_at_the_end_keeps_every_previous_output(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """The reproductions: torch.save errors (read-only or full disk) and plot errors ended in tracebacks and
    left some outputs written and others not."""
    before = previous_outputs(workdir)
    capsys.readouterr()
    if failure == "full disk":
        monkeypatch.setattr(os, "fsync", _raiser(OSError(errno.ENOSPC, "No space left on device")))
        fragment = "No space left on device"
    elif failure == "read-only":
        real_open = os.open

        def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
        fragment = "Permission denied"
    elif failure == "plot":
        monkeypatch.setattr(prunus.plots, "plot_schedule", _raiser(ValueError("no axes")))
        monkeypatch.setattr(prunus.plots, "plot_layer_sparsity", _raiser(ValueError("no axes")))
        fragment = "no axes"
    else:
        import prunus.cli.workflow as workflow

        monkeypatch.setattr(workflow, "summary", _raiser(ZeroDivisionError("a bug")))
        fragment = "ZeroDivisionError: a bug"
    fails(
        [*ONE_SHOT, "--amount", "0.7", "-o", "out.pt", "--compressed", "out.c.pt", "--plots", "p"],
        capsys,
        fragment,
    )
    assert files(workdir) == before


def _raiser(error: BaseException) -> Callable[..., Any]:
    def raise_it(*args: Any, **kwargs: Any) -> Any:
        raise error

    return raise_it


@pytest.mark.parametrize(
    ("config", "extra", "fragments"),
    [
        (b"strategy: l1_unstructured\noptions: null\namount: 0.5\n", [], ()),
        (b"strategy: ln_structured\noptions: null\namount: 0.5\n", ["--option", "n=2"], ()),
        (b"strategy: l1_unstructured\noptions: [1]\n", ["--option", "n=2"], ("'options'", "list")),
        (
            b"strategy: l1_unstructured\nschedule: [1, 2]\n",
            ["--schedule-option", "end=3"],
            ("'schedule'",),
        ),
        (b"strategy: l1_unstructured\nfine_tune: null\namount: 0.5\n", ["--epochs", "0"], ()),
        (b"strategy: l1_unstructured\nfine_tune: 7\n", ["--epochs", "1"], ("'fine_tune'",)),
        (b"strategy: l1_unstructured\namounts: null\n", ["--layer-amount", "0.weight=0.5"], ()),
        (b"strategy: l1_unstructured\nnote: \xe9t\xe9\n", [], ("not UTF-8", "byte 32")),
        (b"\xff\xfe", [], ("not UTF-8",)),
    ],
)
def test_null_and_list_sections_and_non_utf8_configs(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    config: bytes,
    extra: list[str],
    fragments: tuple[str, ...],
) -> None:
    Path("c.yaml").write_bytes(config)
    args = ["prune", "dense.pt", *FACTORY, "--config", "c.yaml", *extra, "-o", "out.pt"]
    if fragments:
        fails(args, capsys, *fragments)
        assert not Path("out.pt").exists()
    else:
        assert run(args) == 0, capsys.readouterr().err
        assert Path("out.pt").exists()


def test_an_alias_bomb_config_is_one_short_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reproduction: a 365-byte YAML alias bomb gave a 17.5 MB error message."""
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    levels.append("strategy: [*i,*i,*i,*i,*i,*i,*i,*i,*i]")
    Path("bomb.yaml").write_text("\n".join(levels) + "\n")
    err = fails(
        ["prune", "dense.pt", *FACTORY, "--config", "bomb.yaml", "-o", "o.pt"], capsys, "alias"
    )
    assert len(err) < 1000


@pytest.mark.parametrize(
    "args",
    [
        [*ONE_SHOT, "--amount", "0.5", "--option", "n=" + "9" * 100_000, "-o", "o.pt"],
        ["prune", "dense.pt", *FACTORY, "--strategy", "x" * 100_000, "-o", "o.pt"],
        [*ONE_SHOT, "--amount", "0.5", "--include", "q" * 100_000, "-o", "o.pt"],
        [
            "prune",
            "dense.pt",
            "--factory",
            "m" * 100_000 + ":f",
            "--strategy",
            "l1_unstructured",
            "-o",
            "o",
        ],
    ],
)
def test_echoed_values_are_bounded(
    workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    err = fails(args, capsys)
    assert len(err) <= 1100, len(err)


def test_amount_one_is_a_count_as_in_python(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reproduction: --amount 1 pruned 100 % while amount=1 in Python prunes one entry."""
    assert run([*ONE_SHOT, "--amount", "1", "-o", "one.pt"]) == 0
    assert run([*ONE_SHOT, "--amount", "1.0", "-o", "all.pt"]) == 0
    one = torch.load("one.pt", weights_only=True)
    every = torch.load("all.pt", weights_only=True)
    for name in ("0.weight", "2.weight"):
        assert int((one[name] == 0).sum()) == 1
        assert bool((every[name] == 0).all())
    capsys.readouterr()
    assert run(["prune", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "integer count of entries (1 prunes one entry" in help_text


def test_the_factory_leaves_sys_path_as_it_was(workdir: Path) -> None:
    before = list(sys.path)
    assert run([*ONE_SHOT, "--amount", "0.5", "--data", "net:data", "-o", "o.pt"]) == 0
    assert sys.path == before


def test_a_planted_module_in_the_current_directory_is_not_imported_later(workdir: Path) -> None:
    """The reproduction: --factory left the current directory first on sys.path for the rest of the run, so a
    planted matplotlib.py ran when --plots imported matplotlib."""
    script = Path(sys.executable).parent / "prunus"
    if not script.exists():
        pytest.skip("the prunus console script is not installed")
    Path("matplotlib.py").write_text(
        "open('PLANTED', 'w').write('ran')\nraise ImportError('planted')\n"
    )
    done = subprocess.run(
        [str(script), *ONE_SHOT, "--amount", "0.5", "-o", "o.pt", "--plots", "plots"],
        capture_output=True,
        text=True,
        cwd=workdir,
        env={**os.environ},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert not Path("PLANTED").exists()
    assert Path("plots/layer_sparsity.png").exists()


def test_a_successful_run_writes_every_output_and_no_temporary_file(workdir: Path) -> None:
    args = [
        *ONE_SHOT,
        "--amount",
        "0.5",
        "-o",
        "out/o.pt",
        "--compressed",
        "out/c.pt",
        "--plots",
        "out/p",
    ]
    assert run(args) == 0
    written = sorted(files(workdir / "out"))
    assert written == ["c.pt", "o.pt", "o.report.json", "p/layer_sparsity.png", "p/weights.png"]
    assert (
        prunus.load_compressed("out/c.pt").keys()
        == torch.load("out/o.pt", weights_only=True).keys()
    )
