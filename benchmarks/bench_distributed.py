"""FSDP2 and DDP: masks across ranks equal to one process, zeros kept by training, the cost of masks per step.

Table ``scale-distributed`` (docs/scale.md). Two processes (``torch.multiprocessing``), gloo on 127.0.0.1, CPU, one
torch thread each, on an MLP of 8 x Linear(1024, 1024):

* for ``l1_unstructured`` 50 %, ``l1_global`` 50 % and ``l1_nm`` (2:4), under FSDP2 (``fully_shard`` on every
  layer and the root) and under DDP: the masks, gathered, against those of the same model pruned in one
  process without any collective; the pruned entries after 20 AdamW steps;
* the training step (forward, backward, AdamW) of the FSDP2 model pruned 50 % (masks enforced by prunus's step
  hook on the local shards) against the same FSDP2 model unpruned, interleaved step by step, synchronized by a
  barrier, on rank 0's clock: the ratio per pair of steps, median and quartiles.

Run alone with ``python benchmarks/bench_distributed.py [--quick]`` (prints the table).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

STRATEGIES: list[tuple[str, dict[str, Any], str]] = [
    ("l1_unstructured", {"amount": 0.5}, "`l1_unstructured` 50 %"),
    ("l1_global", {"amount": 0.5}, "`l1_global` 50 %"),
    ("l1_nm", {}, "`l1_nm` 2:4"),
]
OVERHEAD_LIMIT = 1.10


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"layers": 4, "width": 256, "batch": 32, "steps": 10}
    return {"layers": 8, "width": 1024, "batch": 64, "steps": 60}


def mlp(layers: int, width: int) -> nn.Sequential:
    torch.manual_seed(0)
    modules: list[nn.Module] = []
    for _ in range(layers):
        modules += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*modules[:-1])


def shard(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def whole(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    model(x).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()


def worker(rank: int, world: int, quick: bool, out: str) -> None:
    import prunus

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the loopback interface: 127.0.0.1
    torch.set_num_threads(1)
    # The ranks meet through a file beside the results, not a port picked in advance (another process may take it).
    store = Path(out).with_name("rendezvous").as_uri()
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    s = sizes(quick)
    found: dict[str, Any] = {"masks": {}, "zeros": {}}
    x = torch.randn(s["batch"], s["width"], generator=torch.Generator().manual_seed(rank))
    for strategy, options, _ in STRATEGIES:
        reference = mlp(s["layers"], s["width"])
        prunus.prune(reference, strategy, **options)
        want = prunus.masks(reference)
        for wrapper in ("fsdp2", "ddp"):
            if wrapper == "fsdp2":
                model = shard(mlp(s["layers"], s["width"]))
            else:
                from torch.nn.parallel import DistributedDataParallel

                model = DistributedDataParallel(mlp(s["layers"], s["width"]))
            prunus.prune(model, strategy, **options)
            got = {k.removeprefix("module."): whole(v) for k, v in prunus.masks(model).items()}
            found["masks"][f"{wrapper} {strategy}"] = got.keys() == want.keys() and all(
                torch.equal(got[k], want[k]) for k in want
            )
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            for _ in range(20):
                step(model, optimizer, x)
            inner = model.module if hasattr(model, "module") else model
            found["zeros"][f"{wrapper} {strategy}"] = all(
                bool((whole(layer.weight.detach())[~want[f"{i}.weight"]] == 0).all())
                for i, layer in enumerate(inner)
                if isinstance(layer, nn.Linear)
            )
    # The cost of masks per training step: pruned FSDP2 against unpruned FSDP2, step by step.
    dense, pruned = shard(mlp(s["layers"], s["width"])), shard(mlp(s["layers"], s["width"]))
    prunus.prune(pruned, "l1_unstructured", amount=0.5)
    optimizers = {
        "dense": torch.optim.AdamW(dense.parameters(), lr=1e-3),
        "pruned": torch.optim.AdamW(pruned.parameters(), lr=1e-3),
    }
    models = {"dense": dense, "pruned": pruned}
    times: dict[str, list[float]] = {"dense": [], "pruned": []}
    for i in range(s["steps"] + 3):
        order = ("dense", "pruned") if i % 2 else ("pruned", "dense")
        for name in order:
            dist.barrier()
            start = time.perf_counter()
            step(models[name], optimizers[name], x)
            dist.barrier()
            if i >= 3:  # warm-up steps are not counted
                times[name].append(time.perf_counter() - start)
    found["times"] = times
    # The extra work itself: what prunus's step hook does after each optimizer step of the pruned model.
    from prunus import masking

    hook = []
    for _ in range(s["steps"]):
        start = time.perf_counter()
        masking._reapply_masks(optimizers["pruned"], (), {})
        hook.append(time.perf_counter() - start)
    found["hook"] = hook
    dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps(found))
    # Leave without the interpreter's teardown, where gloo's threads can abort a finished process ("terminate
    # called without an active exception") once its results are written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def measure(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.json")
        mp.spawn(worker, args=(2, quick, out), nprocs=2, join=True)
        result: dict[str, Any] = json.loads(Path(out).read_text())
    return result


def tables(found: dict[str, Any], quick: bool) -> dict[str, str]:
    s = sizes(quick)
    header = [
        "strategy",
        "FSDP2: masks equal to one process",
        "DDP: masks equal",
        "zeros after 20 AdamW steps",
    ]
    rows = []
    for strategy, _, label in STRATEGIES:
        zeros = found["zeros"][f"fsdp2 {strategy}"] and found["zeros"][f"ddp {strategy}"]
        rows.append(
            [
                label,
                _yes(found["masks"][f"fsdp2 {strategy}"]),
                _yes(found["masks"][f"ddp {strategy}"]),
                f"{_yes(zeros)} (FSDP2 and DDP)",
            ]
        )
    ratios = [p / d for p, d in zip(found["times"]["pruned"], found["times"]["dense"], strict=True)]
    low, mid, high = harness.quartiles(ratios)
    dense = statistics.median(found["times"]["dense"]) * 1e3
    pruned = statistics.median(found["times"]["pruned"]) * 1e3
    hook = statistics.median(found["hook"]) * 1e3
    steps = harness.table(
        ["training step under FSDP2", "median", "x unpruned"],
        [
            ["unpruned", f"{dense:.1f} ms", "1.00x"],
            [
                "pruned 50 %, masks enforced (interleaved steps)",
                f"{pruned:.1f} ms",
                f"{mid:.3f}x [{low:.3f}-{high:.3f}]",
            ],
            [
                "the enforcement alone (prunus's step hook on the local shards)",
                f"{hook:.2f} ms",
                f"{(dense + hook) / dense:.3f}x",
            ],
        ],
    )
    note = (
        f"2 processes, gloo on 127.0.0.1, {s['layers']} x Linear({s['width']}, {s['width']}), batch "
        f"{s['batch']}, AdamW, one thread per process. The step ratio is taken pair by pair over "
        f"{len(ratios)} interleaved pairs of steps (median [quartiles]), on a machine whose load moves it by "
        f"tens of percent; the last row times the only work masks add to a step, on its own, as a fraction of "
        f"the unpruned step. Target {OVERHEAD_LIMIT:.2f}x."
    )
    markdown = (
        harness.table(header, rows)
        + "\n\n"
        + steps
        + "\n\n"
        + harness.caption(threads=1, spread=note, quick=quick)
    )
    return {"scale-distributed": markdown}


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def run(quick: bool) -> dict[str, str]:
    """The ``scale-distributed`` table."""
    found = measure(quick)
    harness.write_results("distributed", found, quick=quick)
    return tables(found, quick)


if __name__ == "__main__":
    harness.main(run)
