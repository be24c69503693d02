"""Masks, prunus beside ``torch.nn.utils.prune``: the cost of pruning, and what masks cost afterwards.

Tables (``<!-- bench:<id>:start -->`` markers): ``masks-global``, ``masks-per-layer``, ``masks-eval``,
``masks-train``, ``masks-targets`` (docs/performance.md) and ``readme-masks`` (README.md). One torch thread
throughout:

1. ``global_unstructured`` 50 % over 12 x ``Linear(2048, 2048, bias=False)`` (192 MiB of weights): torch's
   ``global_unstructured`` (L1) against prunus with ``restorable=True`` and ``restorable=False``. Each run is a
   fresh child process: time of the call, peak resident memory (``ru_maxrss``) over the child's own figure once
   the model is built, pruned entries against the count asked, and digests of the masks (the same as torch's, or
   the same but for the order among scores tied at the threshold?).
   The floor unit beside them: one pass that reads and writes every weight (``torch.abs(w, out=buffer)``).
2. Per-layer ``l1_unstructured`` 50 % over the same layers, measured the same way.
3. Eval forward of an MLP 1024-4096-4096-1024 at batch 32 pruned 50 % by one global L1 ranking, restore data
   kept: dense, torch (forward pre-hooks), prunus (zeros in place).
4. A training step (forward, backward, SGD with momentum) of that MLP at batch 256 and 32, masks enforced: dense,
   torch (reparametrized), prunus (the optimizer step hook), and the floor: the dense step plus one multiply of
   every weight by its mask.

Run alone with ``python benchmarks/bench_masks.py [--quick]`` (prints the tables).
"""

from __future__ import annotations

import copy
import gc
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import prunus
from prunus.config import count_to_prune
from prunus.testing import zoo

AMOUNT = 0.5
SCRIPT = Path(__file__)


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "layers": 4,
            "width": 512,
            "prune_runs": 2,
            "mlp": (256, 1024, 1024, 256),
            "eval_rounds": 5,
            "train_rounds": {64: 4, 16: 4},
        }
    return {
        "layers": 12,
        "width": 2048,
        "prune_runs": 5,
        "mlp": (1024, 4096, 4096, 1024),
        "eval_rounds": 21,
        "train_rounds": {256: 11, 32: 21},
    }


# -- the pruning calls compared ---------------------------------------------------------------------------------


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def torch_global(model: nn.Module) -> None:
    torch_prune.global_unstructured(
        [(m, "weight") for m in linears(model)],
        pruning_method=torch_prune.L1Unstructured,
        amount=AMOUNT,
    )


def torch_per_layer(model: nn.Module) -> None:
    for m in linears(model):
        torch_prune.l1_unstructured(m, "weight", amount=AMOUNT)


def with_prunus(strategy: str, restorable: bool, model: nn.Module) -> None:
    prunus.prune(model, strategy, amount=AMOUNT, restorable=restorable)


def methods(
    torch_label: str, torch_call: Callable[[nn.Module], None], strategy: str
) -> dict[str, tuple[str, Callable[[nn.Module], None]]]:
    """torch's call and prunus's ``strategy`` with and without restore data: ``{key: (label, call)}``."""
    return {
        "torch": (torch_label, torch_call),
        "prunus": (f"prunus `{strategy}`, restorable", partial(with_prunus, strategy, True)),
        "prunus_lean": (
            f"prunus `{strategy}`, `restorable=False`",
            partial(with_prunus, strategy, False),
        ),
    }


GLOBAL = methods("torch `prune.global_unstructured` (L1)", torch_global, "global_unstructured")
PER_LAYER = methods(
    "torch `prune.l1_unstructured`, layer by layer", torch_per_layer, "l1_unstructured"
)
SCENARIOS = {"global": GLOBAL, "per_layer": PER_LAYER}


# -- 1 and 2: one pruning call in a child process ------------------------------------------------------------


def prune_child(scenario: str, method: str, layers: int, width: int) -> dict[str, Any]:
    """Prune a fresh stack once; time, peak memory growth, exactness, digests of the masks, the floor unit."""
    call = SCENARIOS[scenario][method][1]
    prunus.registry.names()  # the plugins load before the baseline
    call(zoo.linear_stack(2, 256, seed=1))  # and the first-call costs (imports, caches) are paid
    model = zoo.linear_stack(layers, width, seed=0)
    gc.collect()
    harness.release_free_memory()
    baseline = harness.peak_rss_bytes()
    start = time.perf_counter()
    call(model)
    seconds = time.perf_counter() - start
    growth = harness.peak_rss_bytes() - baseline

    # Read after the peak, so that nothing below can raise it.
    weights = [m.weight.detach() for m in linears(model)]
    sizes_ = [w.numel() for w in weights]
    asked = (
        count_to_prune(AMOUNT, sum(sizes_))
        if scenario == "global"
        else sum(count_to_prune(AMOUNT, n) for n in sizes_)
    )
    buffer = torch.empty_like(weights[0])
    passes = []
    for _ in range(3):
        begin = time.perf_counter()
        for w in weights:
            torch.abs(w, out=buffer)
        passes.append(time.perf_counter() - begin)
    return {
        "seconds": seconds,
        "growth_bytes": growth,
        "weight_bytes": sum(w.numel() * w.element_size() for w in weights),
        "pruned": sum(int((w == 0).sum()) for w in weights),
        "asked": asked,
        **digests(scenario, weights, zoo.linear_stack(layers, width, seed=0)),
        "pass_seconds": min(passes),
    }


def digests(scenario: str, pruned: list[torch.Tensor], original: nn.Module) -> dict[str, Any]:
    """Digests of the masks: all of them, and all but the entries tied with the highest score pruned.

    Two methods that prune the same count agree but for the order among ties when their second digests match:
    torch's ``topk`` breaks ties in no stated order, prunus by position.
    """
    scores = [m.weight.detach().abs() for m in linears(original)]
    masks = [w == 0 for w in pruned]
    highest = [s[m].max() for s, m in zip(scores, masks, strict=True)]
    if scenario == "global":
        highest = [max(highest)] * len(highest)
    full, untied = hashlib.sha256(), hashlib.sha256()
    tied = 0
    for score, mask, threshold in zip(scores, masks, highest, strict=True):
        ties = score == threshold
        tied += int(ties.sum())
        full.update(np.packbits(mask.numpy()).tobytes())
        untied.update(np.packbits((mask & ~ties).numpy()).tobytes())
    return {"digest": full.hexdigest(), "untied_digest": untied.hexdigest(), "tied": tied}


def prune_runs(scenario: str, config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``prune_runs`` child processes per method, the methods taking turns (rotated each round)."""
    methods = list(SCENARIOS[scenario])
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for r in range(config["prune_runs"]):
        for method in methods[r % len(methods) :] + methods[: r % len(methods)]:
            result = harness.in_child(
                SCRIPT,
                "prune",
                scenario=scenario,
                method=method,
                layers=config["layers"],
                width=config["width"],
            )
            runs[method].append(result)
            print(f"  {scenario} {method}: {result['seconds']:.2f} s", file=sys.stderr)
    return runs


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    passes = statistics.median(r["pass_seconds"] for rs in runs.values() for r in rs)
    out = {}
    for method, rs in runs.items():
        seconds = [r["seconds"] for r in rs]
        out[method] = {
            "seconds": statistics.median(seconds),
            "min": min(seconds),
            "max": max(seconds),
            "growth_mib": statistics.median(r["growth_bytes"] for r in rs) / 2**20,
            "growth_ratio": statistics.median(r["growth_bytes"] / r["weight_bytes"] for r in rs),
            "pruned": rs[0]["pruned"],
            "asked": rs[0]["asked"],
            "exact": all(r["pruned"] == r["asked"] for r in rs),
            "stable": len({r["digest"] for r in rs}) == 1,
            "digest": rs[0]["digest"],
            "untied_digest": rs[0]["untied_digest"],
            "tied": rs[0]["tied"],
            "passes": statistics.median(seconds) / passes,
            "pass_ms": passes * 1e3,
            "runs": len(rs),
        }
    return out


def same_masks(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    if not (ours["stable"] and theirs["stable"]):
        return "**no: the masks changed from run to run**"
    if ours["digest"] == theirs["digest"]:
        return "yes"
    if ours["untied_digest"] == theirs["untied_digest"]:
        return f"yes but for the order among {ours['tied']:,} entries tied at the threshold"
    return "**no**"


def prune_table(scenario: str, summary: dict[str, dict[str, Any]], quick: bool) -> str:
    torch_s = summary["torch"]["seconds"]
    rows = []
    for method, (label, _) in SCENARIOS[scenario].items():
        s = summary[method]
        rows.append(
            [
                label,
                f"{s['seconds']:.2f} s [{s['min']:.2f}-{s['max']:.2f}]",
                f"{torch_s / s['seconds']:.1f}x",
                f"{s['growth_mib']:,.0f} MiB",
                f"{s['growth_ratio']:.2f}x",
                f"{s['passes']:.0f}",
                f"{s['pruned']:,} / {s['asked']:,}" + (" exact" if s["exact"] else ""),
                same_masks(s, summary["torch"]),
            ]
        )
    runs = summary["torch"]["runs"]
    return (
        harness.table(
            [
                f"method ({runs} runs each)",
                "time: median [min-max]",
                "speed-up vs torch",
                "peak memory growth",
                "x weight bytes",
                "x one pass over the weights",
                "pruned / asked",
                "same masks as torch",
            ],
            rows,
        )
        + "\n\n"
        + harness.caption(
            threads=1,
            quick=quick,
            spread=(
                "Each run is a fresh process; the methods take turns. Memory: the growth of `ru_maxrss` "
                "during the call over its value once the model is built. One pass reading and writing "
                f"every weight (`torch.abs(w, out=buffer)`) took {summary['torch']['pass_ms']:.1f} ms "
                "(median over the runs)."
            ),
        )
    )


# -- 3 and 4: a forward pass and a training step ------------------------------------------------------------


def pruned_mlps(widths: tuple[int, ...]) -> dict[str, nn.Module]:
    """The dense MLP, a torch-pruned copy and a prunus-pruned copy (restorable), with the same masks."""
    dense = zoo.mlp(widths, seed=0)
    theirs = copy.deepcopy(dense)
    torch_global(theirs)
    ours = copy.deepcopy(dense)
    prunus.prune(ours, "global_unstructured", amount=AMOUNT)
    for i, layer in enumerate(linears(theirs)):
        same = torch.equal(
            layer.get_buffer("weight_mask").bool(), prunus.masks(ours)[f"{2 * i}.weight"]
        )
        assert same, "prunus and torch chose different masks"
    return {"dense": dense, "torch": theirs, "prunus": ours}


def eval_forward(widths: tuple[int, ...], rounds: int) -> harness.Samples:
    models = {name: m.eval() for name, m in pruned_mlps(widths).items()}
    x = torch.randn(32, widths[0], generator=torch.Generator().manual_seed(1))
    return harness.sample([partial(m, x) for m in models.values()], rounds=rounds, number=3)


def training_step(widths: tuple[int, ...], batch: int, rounds: int) -> harness.Samples:
    models = pruned_mlps(widths)
    models["floor"] = copy.deepcopy(models["dense"])
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, widths[0], generator=generator)
    y = torch.randn(batch, widths[-1], generator=generator)
    masks = prunus.masks(models["prunus"])
    floor = models["floor"]
    floor_pairs = ([floor.get_parameter(n) for n in masks], list(masks.values()))

    def step(name: str) -> None:
        model, optimizer = models[name], optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        if (
            name == "floor"
        ):  # the least any masking can do: one multiply of every weight by its mask
            with torch.no_grad():
                torch._foreach_mul_(*floor_pairs)

    optimizers = {
        name: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for name, m in models.items()
    }
    return harness.sample([partial(step, name) for name in models], rounds=rounds, inference=False)


def speed_tables(
    config: dict[str, Any], quick: bool
) -> tuple[dict[str, str], harness.Samples, dict[int, harness.Samples]]:
    widths = config["mlp"]
    shape = "-".join(map(str, widths))
    print("  eval forward", file=sys.stderr)
    ev = eval_forward(widths, config["eval_rounds"])
    ev_ms, ev_x = ev.medians(), ev.ratios()
    labels = [
        "dense",
        "torch (forward pre-hook: `weight_orig * weight_mask`)",
        "prunus (zeros in place, masks kept)",
    ]
    eval_md = harness.table(
        ["model", "time per forward (median)", "x dense [IQR]"],
        [
            [label, f"{ms * 1e3:.2f} ms", str(r)]
            for label, ms, r in zip(labels, ev_ms, ev_x, strict=True)
        ],
    )
    train: dict[int, harness.Samples] = {}
    for batch, rounds in config["train_rounds"].items():
        print(f"  training step, batch {batch}", file=sys.stderr)
        train[batch] = training_step(widths, batch, rounds)
    batches = list(train)
    train_labels = [
        "dense",
        "torch (reparametrized)",
        "prunus (step hook)",
        "dense + one mask multiply (the floor)",
    ]
    train_rows = []
    for i, label in enumerate(train_labels):
        row = [label]
        for batch in batches:
            row += [f"{train[batch].medians()[i] * 1e3:.1f} ms", str(train[batch].ratios()[i])]
        train_rows.append(row)
    header = ["model"]
    for batch in batches:
        header += [f"batch {batch} (median)", "x dense [IQR]"]
    attempts = [ev.attempts, *(s.attempts for s in train.values())]
    train_md = harness.table(header, train_rows)
    note = harness.ratio_note(attempts)
    tables = {
        "masks-eval": f"Eval forward, MLP {shape}, batch 32, {AMOUNT:.0%} pruned by one global L1 ranking "
        f"({config['eval_rounds']} rounds of 3 forwards each)\n\n"
        + eval_md
        + "\n\n"
        + harness.caption(threads=1, quick=quick, spread=note),
        "masks-train": f"Training step (forward, backward, SGD with momentum), MLP {shape}, masks enforced "
        f"({', '.join(f'{r} rounds at batch {b}' for b, r in config['train_rounds'].items())})\n\n"
        + train_md
        + "\n\n"
        + harness.caption(threads=1, quick=quick, spread=note),
    }
    return tables, ev, train


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def run(quick: bool) -> dict[str, str]:
    torch.set_num_threads(1)
    config = sizes(quick)
    shape = f"{config['layers']} x Linear({config['width']}, {config['width']}, bias=False)"
    summaries = {}
    for scenario in SCENARIOS:
        print(f"  {scenario} pruning, child processes", file=sys.stderr)
        summaries[scenario] = summarize(prune_runs(scenario, config))
    tables, ev, train = speed_tables(config, quick)
    g, layer = summaries["global"], summaries["per_layer"]
    tables["masks-global"] = f"`global_unstructured` {AMOUNT:.0%} over {shape}\n\n" + prune_table(
        "global", g, quick
    )
    tables["masks-per-layer"] = (
        f"Per-layer `l1_unstructured` {AMOUNT:.0%} over {shape}\n\n"
        + prune_table("per_layer", layer, quick)
    )

    big, small = list(train)
    ev_x = ev.ratios()
    targets = [
        (
            "global ranking at least 10x faster than torch",
            f"{g['torch']['seconds'] / g['prunus']['seconds']:.1f}x restorable, "
            f"{g['torch']['seconds'] / g['prunus_lean']['seconds']:.1f}x `restorable=False`",
            g["torch"]["seconds"] / g["prunus"]["seconds"] >= 10,
        ),
        (
            "global ranking: peak memory growth at most 1.0x the weights, restorable",
            f"{g['prunus']['growth_ratio']:.2f}x",
            g["prunus"]["growth_ratio"] <= 1.0,
        ),
        (
            "global ranking: at most 0.3x, `restorable=False`",
            f"{g['prunus_lean']['growth_ratio']:.2f}x",
            g["prunus_lean"]["growth_ratio"] <= 0.3,
        ),
        (
            "global ranking: exact count, the same masks as torch (up to the order among ties)",
            "; ".join(
                f"{SCENARIOS['global'][m][0]}: {same_masks(s, g['torch'])}"
                for m, s in g.items()
                if m != "torch"
            ),
            all(s["exact"] and same_masks(s, g["torch"]).startswith("yes") for s in g.values()),
        ),
        ("eval forward at most 1.05x dense", str(ev_x[2]), ev_x[2].median <= 1.05),
        (
            f"training step at most 1.15x dense (batch {big})",
            str(train[big].ratios()[2]),
            train[big].ratios()[2].median <= 1.15,
        ),
    ]
    tables["masks-targets"] = (
        harness.table(["target", "measured", ""], [[t, m, verdict(ok)] for t, m, ok in targets])
        + "\n\n"
        + harness.caption(threads=1, quick=quick, spread="From the tables above, in the same run.")
    )

    shape_mlp = "-".join(map(str, config["mlp"]))
    torch_row = [g["torch"], ev_x[1], train[big].ratios()[1], train[small].ratios()[1]]
    ours_row = [g["prunus"], ev_x[2], train[big].ratios()[2], train[small].ratios()[2]]
    weight_mib = config["layers"] * config["width"] ** 2 * 4 / 2**20
    tables["readme-masks"] = (
        harness.table(
            ["", "torch", "prunus"],
            [
                [
                    f"`global_unstructured` {AMOUNT:.0%} over {shape}: time",
                    f"{torch_row[0]['seconds']:.1f} s",
                    f"{ours_row[0]['seconds']:.2f} s ({torch_row[0]['seconds'] / ours_row[0]['seconds']:.1f}x "
                    "faster)",
                ],
                [
                    f"same: peak memory growth (the weights are {weight_mib:,.0f} MiB)",
                    f"{torch_row[0]['growth_mib']:,.0f} MiB",
                    f"{ours_row[0]['growth_mib']:,.0f} MiB ({g['prunus_lean']['growth_mib']:,.0f} MiB with "
                    "`restorable=False`)",
                ],
                [
                    f"eval forward, MLP {shape_mlp}, batch 32, x dense",
                    str(torch_row[1]),
                    str(ours_row[1]),
                ],
                [
                    f"training step, same MLP, batch {big}, x dense",
                    str(torch_row[2]),
                    str(ours_row[2]),
                ],
                [f"training step, batch {small}, x dense", str(torch_row[3]), str(ours_row[3])],
            ],
        )
        + "\n\n"
        + harness.caption(
            threads=1,
            quick=quick,
            spread="Times: medians over fresh processes; ratios: medians of interleaved rounds with the "
            "interquartile range in brackets.",
        )
    )
    harness.write_results(
        "masks",
        {
            "sizes": config,
            "prune": summaries,
            "eval": ev.as_dict(),
            "train": {batch: s.as_dict() for batch, s in train.items()},
        },
        quick=quick,
    )
    return tables


TASKS: dict[str, Callable[..., dict[str, Any]]] = {"prune": prune_child}

if __name__ == "__main__" and not harness.serve_child(TASKS):
    harness.main(run)
