"""Calibrated pruning of a streamed checkpoint against the same pruning in memory: time and peak memory.

Table ``scale-streamed-calibrated`` (docs/scale.md). The benchmark writes a Llama-shaped checkpoint of random
bfloat16 weights (:func:`bench_streamed.write_checkpoint`: 12 layers of width 1024, MLP 2816, grouped-query
attention, vocabulary 32,000: 0.4 GB) in a scratch directory beside the repository (removed at the end), and
calibration batches of random token ids (16 sequences of 128 tokens). Then, each in a fresh child process with
one torch thread:

* the imports alone (torch, transformers, prunus and its plugins): the floor every run stands on;
* ``prunus.prune_checkpoint(src, dst, strategy, data=batches)``: one block in memory at a time;
* ``LlamaForCausalLM.from_pretrained(src)`` and ``prunus.prune(model, strategy, data=batches,
  restorable=False)``: the whole model in memory; then the streamed output is loaded and compared with it,
  weight for weight.

Wall time (after the imports) and the child's peak resident memory (``ru_maxrss``). Run alone with
``python benchmarks/bench_streamed_calibrated.py [--quick]`` (prints the table). Needs the ``streaming`` and
``transformers`` extras.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import harness
import torch
from bench_streamed import scratch, write_checkpoint

SCRIPT = Path(__file__)
SCRATCH = harness.ROOT / "benchmarks" / ".scratch-calibrated"
STRATEGIES: list[tuple[str, dict[str, Any], str]] = [
    ("wanda_row", {"amount": 0.5}, "`wanda_row` 50 %"),
    ("sparsegpt_unstructured", {"amount": 0.5}, "`sparsegpt_unstructured` 50 % (reconstructs)"),
]


def shape(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "layers": 3,
            "hidden": 256,
            "intermediate": 704,
            "heads": 8,
            "kv_heads": 2,
            "vocab": 4000,
        }
    return {
        "layers": 12,
        "hidden": 1024,
        "intermediate": 2816,
        "heads": 16,
        "kv_heads": 4,
        "vocab": 32000,
    }


def batches(vocab: int, quick: bool) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    count, length = (4, 32) if quick else (16, 128)
    return [torch.randint(0, vocab, (1, length), generator=generator) for _ in range(count)]


def _ready() -> Any:
    """prunus with its plugins and transformers loaded (a fixed cost, before any clock starts)."""
    import transformers

    import prunus

    prunus.registry.names()
    del transformers
    return prunus


# -- what the children measure ----------------------------------------------------------------------------------


def child_imports() -> dict[str, Any]:
    _ready()
    return {"maxrss": harness.peak_rss_bytes()}


def child_prune(
    src: str,
    dst: str,
    strategy: str,
    options: dict[str, Any],
    vocab: int,
    quick: bool,
    streamed: bool,
) -> dict[str, Any]:
    """Streamed, or loaded whole and pruned in memory, then compared with the streamed output ``dst``."""
    prunus = _ready()
    from transformers import LlamaForCausalLM

    data = batches(vocab, quick)
    start = time.perf_counter()
    if streamed:
        report = prunus.prune_checkpoint(src, dst, strategy, data=data, **options)
    else:
        model = LlamaForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
        report = prunus.prune(model, strategy, data=data, restorable=False, **options)
    out = {
        "seconds": time.perf_counter() - start,
        "maxrss": harness.peak_rss_bytes(),
        "pruned": report.pruned,
    }
    if not streamed:
        prunus.remove(model)
        written = LlamaForCausalLM.from_pretrained(dst, dtype=torch.bfloat16).state_dict()
        memory = model.state_dict()
        out["equal"] = memory.keys() == written.keys() and all(
            torch.equal(written[k], memory[k]) for k in memory
        )
    return out


def child_write(path: str, s: dict[str, Any]) -> dict[str, Any]:
    return {"bytes": write_checkpoint(Path(path), s, shard_bytes=256 << 20)}


CHILDREN = {"imports": child_imports, "prune": child_prune, "write": child_write}


def in_child(kind: str, **kwargs: Any) -> dict[str, Any]:
    return harness.in_child(SCRIPT, kind, **kwargs)


# -- the benchmark ----------------------------------------------------------------------------------------------


def measure(quick: bool) -> dict[str, Any]:
    s = shape(quick)
    with scratch(SCRATCH):
        source = SCRATCH / "llama"
        rows: dict[str, Any] = {"shape": s, "runs": {}}
        rows["bytes"] = in_child("write", path=str(source), s=s)["bytes"]
        rows["imports"] = in_child("imports")
        for strategy, options, _ in STRATEGIES:
            destination = SCRATCH / f"pruned-{strategy}"
            run = {"src": str(source), "dst": str(destination), "strategy": strategy}
            run.update(options=options, vocab=s["vocab"], quick=quick)
            rows["runs"][strategy] = {
                "streamed": in_child("prune", **run, streamed=True),
                "in_memory": in_child("prune", **run, streamed=False),
            }
            shutil.rmtree(destination)
        return rows


def tables(rows: dict[str, Any], quick: bool) -> dict[str, str]:
    gb = 1e9
    floor = rows["imports"]["maxrss"]
    header = [
        "strategy",
        "run",
        "time",
        "peak resident memory (ru_maxrss)",
        "above the imports",
        "equal to in memory",
    ]
    body = [["imports alone", "", "", f"{floor / gb:.2f} GB", "", ""]]
    for strategy, _, label in STRATEGIES:
        run = rows["runs"][strategy]
        memory, streamed = run["in_memory"], run["streamed"]
        body.append(
            [
                label,
                "in memory (`from_pretrained` + `prune`)",
                f"{memory['seconds']:.1f} s",
                f"{memory['maxrss'] / gb:.2f} GB",
                f"{(memory['maxrss'] - floor) / gb:.2f} GB",
                "",
            ]
        )
        body.append(
            [
                label,
                "streamed (`prune_checkpoint`)",
                f"{streamed['seconds']:.1f} s",
                f"{streamed['maxrss'] / gb:.2f} GB",
                f"{(streamed['maxrss'] - floor) / gb:.2f} GB",
                "yes" if memory["equal"] and memory["pruned"] == streamed["pruned"] else "**no**",
            ]
        )
    s = rows["shape"]
    length = "4 sequences of 32" if quick else "16 sequences of 128"
    note = (
        f"A Llama-shaped checkpoint of random bfloat16 weights: {s['layers']} layers, width {s['hidden']}, MLP "
        f"{s['intermediate']}, vocabulary {s['vocab']}: {rows['bytes'] / gb:.2f} GB of safetensors; calibration "
        f"on {length} random tokens. One run each (memory figures barely vary; times do, with the load). The "
        "time starts once the process has imported torch, transformers and prunus; the in-memory time includes "
        "loading the model. The streamed run reads the blocks twice (the chain check, then the pruning pass)."
    )
    markdown = (
        harness.table(header, body) + "\n\n" + harness.caption(threads=1, spread=note, quick=quick)
    )
    return {"scale-streamed-calibrated": markdown}


def run(quick: bool) -> dict[str, str]:
    """The ``scale-streamed-calibrated`` table."""
    rows = measure(quick)
    harness.write_results("streamed_calibrated", rows, quick=quick)
    return tables(rows, quick)


if __name__ == "__main__" and not harness.serve_child(CHILDREN):
    harness.main(run)
