"""Streamed pruning of a checkpoint larger than the memory it is given: ``prunus.prune_checkpoint`` on disk.

Table ``scale-streamed`` (docs/scale.md). The benchmark writes its own Llama-shaped checkpoint of random bfloat16
weights (31 decoder layers of width 3072, MLP 8192, grouped-query attention, vocabulary 32,000: 3.3 B parameters,
6.6 GB in shards of at most 2 GB, with the ``config.json`` ``from_pretrained`` reads) in a scratch directory
beside the repository (``benchmarks/.scratch``), checks the free disk first, and removes everything at the end.
Then, each in a fresh child process with one torch thread:

* copying the shards to another directory on the same disk (``shutil.copyfile``, then ``fsync``): the unit of
  time;
* ``prune_checkpoint`` with ``l1_unstructured`` 50 %, ``l1_nm`` (2:4) and ``l1_global`` 50 %, each read from a
  cold page cache for the checkpoint's files (``posix_fadvise(DONTNEED)`` before every run): wall time and the
  child's peak resident memory (``ru_maxrss``: everything the process held, the Python interpreter, torch and
  transformers included);
* the pruned checkpoint reloaded with ``LlamaForCausalLM.from_pretrained`` (when the machine has the memory for
  it) and its sparsity checked;
* a small model of the same shape pruned both ways (streamed, and in memory with ``prunus.prune``): the
  weights must be equal bit for bit, for each strategy.

Run alone with ``python benchmarks/bench_streamed.py [--quick]`` (prints the table). Needs the ``streaming`` and
``transformers`` extras.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness
import torch

SCRIPT = Path(__file__)
SCRATCH = harness.ROOT / "benchmarks" / ".scratch"
STRATEGIES: list[tuple[str, dict[str, Any], str]] = [
    ("l1_unstructured", {"amount": 0.5}, "`l1_unstructured` 50 %"),
    ("l1_nm", {}, "`l1_nm` 2:4"),
    ("l1_global", {"amount": 0.5}, "`l1_global` 50 %"),
]
MEMORY_LIMIT = 1.5e9
TIME_LIMIT = 3.0


def shape(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "layers": 4,
            "hidden": 512,
            "intermediate": 1536,
            "heads": 8,
            "kv_heads": 2,
            "vocab": 8000,
        }
    return {
        "layers": 31,
        "hidden": 3072,
        "intermediate": 8192,
        "heads": 24,
        "kv_heads": 8,
        "vocab": 32000,
    }


def config(s: dict[str, Any]) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
        architectures=["LlamaForCausalLM"],
    )


def write_checkpoint(path: Path, s: dict[str, Any], shard_bytes: int = 2 << 30) -> int:
    """A Llama-shaped checkpoint of random bfloat16 weights, written shard by shard (never all in memory)."""
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    cfg = config(s)
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(cfg)
    path.mkdir(parents=True)
    cfg.save_pretrained(path)
    generator = torch.Generator().manual_seed(0)
    names = list(skeleton.state_dict())
    shards: list[dict[str, torch.Tensor]] = [{}]
    held = total = 0
    weight_map: dict[str, str] = {}
    files: list[str] = []

    def flush() -> None:
        nonlocal held
        if shards[-1]:
            file = f"model-{len(files) + 1:05d}.safetensors"
            save_file(shards[-1], str(path / file), metadata={"format": "pt"})
            files.append(file)
            weight_map.update(dict.fromkeys(shards[-1], file))
            shards.append({})
            held = 0

    for name in names:
        meta = skeleton.state_dict()[name]
        if name.endswith("norm.weight"):
            tensor = torch.ones(meta.shape, dtype=torch.bfloat16)
        else:
            tensor = (torch.randn(meta.shape, generator=generator) * 0.02).to(torch.bfloat16)
        nbytes = tensor.numel() * 2
        if held + nbytes > shard_bytes:
            flush()
        shards[-1][name] = tensor
        held += nbytes
        total += nbytes
    flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def evict(path: Path) -> None:
    """Drop the page cache of ``path``'s files (this process's request only: other files are untouched)."""
    for file in path.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# -- what the children measure ----------------------------------------------------------------------------------


def child_copy(src: str, dst: str) -> dict[str, Any]:
    start = time.perf_counter()
    Path(dst).mkdir()
    for file in sorted(Path(src).iterdir()):
        target = Path(dst) / file.name
        shutil.copyfile(file, target)
        fd = os.open(target, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return {"seconds": time.perf_counter() - start, "maxrss": _maxrss()}


def child_prune(src: str, dst: str, strategy: str, options: dict[str, Any]) -> dict[str, Any]:
    import transformers

    import prunus

    torch.set_num_threads(1)
    prunus.registry.names()  # plugins and transformers loaded before the clock starts (a fixed cost)
    del transformers
    start = time.perf_counter()
    report = prunus.prune_checkpoint(src, dst, strategy, **options)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "maxrss": _maxrss(),
        "hwm": _hwm(),
        "pruned": report.pruned,
        "targeted": sum(p.numel for p in report.parameters),
    }


def child_reload(dst: str, pruned: int) -> dict[str, Any]:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(dst, dtype=torch.bfloat16)
    zeros = sum(
        int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    return {"loaded": True, "zeros_match": zeros >= pruned, "maxrss": _maxrss()}


def child_equal(work: str, quick: bool) -> dict[str, Any]:
    """A small model of the same shape, streamed and pruned in memory: equal bit for bit?"""
    from transformers import LlamaForCausalLM

    import prunus

    small = {
        "layers": 2,
        "hidden": 256,
        "intermediate": 768,
        "heads": 8,
        "kv_heads": 2,
        "vocab": 1000,
    }
    source = Path(work) / "small"
    write_checkpoint(source, small, shard_bytes=1 << 20)
    out = {}
    for strategy, options, _ in STRATEGIES:
        destination = Path(work) / f"small-{strategy}"
        prunus.prune_checkpoint(source, destination, strategy, **options)
        streamed = LlamaForCausalLM.from_pretrained(destination, dtype=torch.bfloat16).state_dict()
        model = LlamaForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
        prunus.prune(model, strategy, **options)
        prunus.remove(model)
        memory = model.state_dict()
        out[strategy] = all(torch.equal(streamed[k], memory[k]) for k in memory)
    return out


def child_write(path: str, s: dict[str, Any]) -> dict[str, Any]:
    return {"bytes": write_checkpoint(Path(path), s)}


def _maxrss() -> int:
    """The child's peak resident memory (``ru_maxrss``).

    A process started by ``subprocess`` may inherit its parent's peak in ``ru_maxrss`` (the kernel keeps the
    larger of the two across ``exec``); the runner stays small (the checkpoint is written by a child of its
    own), and ``VmHWM`` (this process's own memory map only) is reported beside it.
    """
    return harness.peak_rss_bytes()


def _hwm() -> int | None:
    return _proc_bytes("/proc/self/status", "VmHWM:")


def _proc_bytes(path: str, field: str) -> int | None:
    """A figure in kB of a /proc file, in bytes (``None`` where there is no /proc)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


CHILDREN = {
    "copy": child_copy,
    "prune": child_prune,
    "reload": child_reload,
    "equal": child_equal,
    "write": child_write,
}


def in_child(kind: str, **kwargs: Any) -> dict[str, Any]:
    return harness.in_child(SCRIPT, kind, **kwargs)


# -- the benchmark ----------------------------------------------------------------------------------------------


@contextmanager
def scratch(path: Path) -> Iterator[Path]:
    """``path`` as a fresh, empty directory, removed with all it holds at the end."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def measure(quick: bool) -> dict[str, Any]:
    s = shape(quick)
    with scratch(SCRATCH):
        free = shutil.disk_usage(SCRATCH).free
        source = SCRATCH / "llama"
        total = in_child("write", path=str(source), s=s)["bytes"]
        # The source, one copy and one pruned destination at a time, with room to spare.
        if free < 3.5 * total:
            raise SystemExit(
                f"need {3.5 * total / 1e9:.1f} GB free on {SCRATCH}, have {free / 1e9:.1f} GB"
            )
        print(f"  wrote {total / 1e9:.2f} GB", file=sys.stderr)
        rows: dict[str, Any] = {"bytes": total, "shape": s, "copy": [], "prune": {}}
        for attempt in range(2):
            evict(source)
            copy = SCRATCH / f"copy{attempt}"
            rows["copy"].append(in_child("copy", src=str(source), dst=str(copy)))
            shutil.rmtree(copy)
            print(f"  copy: {rows['copy'][-1]['seconds']:.1f} s", file=sys.stderr)
        for strategy, options, _ in STRATEGIES:
            evict(source)
            destination = SCRATCH / f"pruned-{strategy}"
            result = in_child(
                "prune", src=str(source), dst=str(destination), strategy=strategy, options=options
            )
            available = _available_memory()
            if available is not None and available > 1.5 * total:
                result["reload"] = in_child("reload", dst=str(destination), pruned=result["pruned"])
            rows["prune"][strategy] = result
            shutil.rmtree(destination)
            print(
                f"  {strategy}: {result['seconds']:.1f} s, {result['maxrss'] / 1e9:.2f} GB",
                file=sys.stderr,
            )
        rows["equal"] = in_child("equal", work=str(SCRATCH), quick=quick)
        return rows


def _available_memory() -> int | None:
    return _proc_bytes("/proc/meminfo", "MemAvailable:")


def tables(rows: dict[str, Any], quick: bool) -> dict[str, str]:
    copy = min(r["seconds"] for r in rows["copy"])
    header = [
        "strategy",
        "time",
        "x copying the files",
        "peak resident memory (ru_maxrss)",
        "sparsity",
        "reloads with from_pretrained",
        "equal to pruning in memory (small model)",
    ]
    rows_md = [["copying the shards", f"{copy:.1f} s", "1.0x", "", "", "", ""]]
    for strategy, _, label in STRATEGIES:
        r = rows["prune"][strategy]
        reload = r.get("reload")
        rows_md.append(
            [
                label,
                f"{r['seconds']:.1f} s",
                f"{r['seconds'] / copy:.2f}x",
                f"{r['maxrss'] / 1e9:.2f} GB",
                f"{r['pruned'] / r['targeted']:.1%}",
                "not checked (memory)"
                if reload is None
                else "yes"
                if reload["loaded"] and reload["zeros_match"]
                else "**no**",
                "yes" if rows["equal"][strategy] else "**no**",
            ]
        )
    s = rows["shape"]
    note = (
        f"A Llama-shaped checkpoint of random bfloat16 weights: {s['layers']} layers, width {s['hidden']}, MLP "
        f"{s['intermediate']}, vocabulary {s['vocab']}: {rows['bytes'] / 1e9:.2f} GB of safetensors. The "
        f"checkpoint's page cache dropped before every run; copying is the faster of two runs; the time of a "
        f"pruning run starts once its process has imported torch, transformers and prunus; the reload is checked "
        f"when the machine has 1.5x the checkpoint's size available. Targets: {MEMORY_LIMIT / 1e9:.1f} GB of "
        f"peak memory, {TIME_LIMIT:.0f}x the copy for the separable strategies."
    )
    markdown = (
        harness.table(header, rows_md)
        + "\n\n"
        + harness.caption(threads=1, spread=note, quick=quick)
    )
    return {"scale-streamed": markdown}


def run(quick: bool) -> dict[str, str]:
    """The ``scale-streamed`` table."""
    rows = measure(quick)
    harness.write_results("streamed", rows, quick=quick)
    return tables(rows, quick)


if __name__ == "__main__" and not harness.serve_child(CHILDREN):
    harness.main(run)
