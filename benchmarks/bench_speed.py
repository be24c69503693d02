"""Fast and really smaller: prunus beside ``torch.nn.utils.prune`` and Torch-Pruning, with the floor of each figure.

Regenerate the tables of ``docs/performance.md`` with::

    .venv/bin/python benchmarks/bench_speed.py --write-docs

(``--quick`` runs small shapes as a smoke test and never writes the docs; ``--json PATH`` keeps the raw figures.)
Needs the ``bench`` extra (``pip install -c constraints.txt -e '.[bench]'``): Torch-Pruning 1.6.1.

What is measured, every figure a median over several runs, every ratio taken within this one run, one intra-op
thread throughout:

1. ``global_unstructured`` 50 % over 12 x Linear(2048, 2048): wall time of the pruning call and peak RSS growth
   over the built model (``ru_maxrss`` in a fresh child process per run, minus the child's own figure after
   building the model and warming the code paths up on a small model), exact count of pruned entries. Torch,
   prunus ``restorable=True``, prunus ``restorable=False``. Floor: the time of one pass that reads and writes the
   weights (``torch.abs(w, out=buffer)`` over every layer), in the same child.
2. Eval forward of an MLP 1024-4096-4096-1024 at batch 32, pruned 50 % and still restorable: dense, torch's
   forward pre-hooks, prunus. Interleaved rounds in one process.
3. Training step (forward, backward, SGD with momentum) of the same MLP at batch 256 (and 32), masks enforced:
   dense, torch (reparametrized), prunus (the step hook). Floor: the same step plus one multiply of every weight
   by its mask, timed on the dense model.
4. 50 % channel pruning of a ResNet-18 for CIFAR (residuals, BatchNorm) at batch 8: Torch-Pruning's
   ``BasePruner`` with L1 magnitude against ``prunus.shrink(model, x, "l1_structured", amount=0.5)``: time to
   prune (fresh copies, interleaved), eval latency speedup over the dense net (interleaved), parameters and MACs;
   ``torch.nn.utils.prune.ln_structured`` (masks only) for contrast.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.utils.prune as torch_prune
from torch import Tensor, nn

import prunus

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench_speed:begin -->", "<!-- bench_speed:end -->"
COMMAND = ".venv/bin/python benchmarks/bench_speed.py --write-docs"


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "layers": 4,
            "width": 512,
            "global_runs": {"torch": 1, "prunus": 2, "prunus_lean": 2},
            "mlp": [256, 1024, 1024, 256],
            "rounds": 5,
            "resnet_width": 16,
            "resnet_runs": 2,
        }
    return {
        "layers": 12,
        "width": 2048,
        "global_runs": {"torch": 3, "prunus": 5, "prunus_lean": 5},
        "mlp": [1024, 4096, 4096, 1024],
        "rounds": 15,
        "resnet_width": 64,
        "resnet_runs": 7,
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def trim() -> None:
    """Return the C heap's free memory before the baseline, so it reflects live memory only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


# -- 1. global_unstructured in child processes --------------------------------------------------------------


def stack(layers: int, width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])


def global_prune(method: str, model: nn.Module) -> None:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if method == "torch":
        torch_prune.global_unstructured(
            [(m, "weight") for m in layers], pruning_method=torch_prune.L1Unstructured, amount=0.5
        )
    else:
        prunus.prune(model, "l1_global", amount=0.5, restorable=method == "prunus")


def child_global(method: str, layers: int, width: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    prunus.registry.names()  # load the plugins before the baseline
    warm = nn.Sequential(nn.Linear(300, 1000, bias=False), nn.Linear(1000, 300, bias=False))
    global_prune(method, warm)
    del warm
    model = stack(layers, width)
    gc.collect()
    trim()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    global_prune(method, model)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The floor's unit, measured after the peak was read so its buffer cannot raise it.
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    buffer = torch.empty_like(weights[0])
    passes = []
    for _ in range(3):
        begin = time.perf_counter()
        for w in weights:
            torch.abs(w.detach(), out=buffer)
        passes.append(time.perf_counter() - begin)
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = layers * width * width
    return {
        "seconds": seconds,
        "extra_bytes": (peak - baseline) * 1024,
        "weight_bytes": total * 4,
        "exact": zeros == round(0.5 * total),
        "pass_seconds": min(passes),
    }


def run_child(kind: str, **kwargs: Any) -> dict[str, Any]:
    payload = json.dumps({"kind": kind, **kwargs})
    for attempt in (1, 2):
        out = subprocess.run(
            [sys.executable, __file__, "--child", payload],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if out.returncode == 0:
            result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
            return result
        print(
            f"  child {payload} failed (attempt {attempt}):\n{out.stderr[-2000:]}", file=sys.stderr
        )
    raise SystemExit(f"child {payload} failed twice")


def bench_global(s: dict[str, Any]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in s["global_runs"]}
    order = [m for m in ("prunus", "prunus_lean", "torch")]
    for i in range(max(s["global_runs"].values())):
        for method in order:
            if i < s["global_runs"][method]:
                runs[method].append(
                    run_child("global", method=method, layers=s["layers"], width=s["width"])
                )
                print(
                    f"  global {method} run {i + 1}: {runs[method][-1]['seconds']:.2f} s",
                    file=sys.stderr,
                )
    out: dict[str, Any] = {}
    for method, results in runs.items():
        out[method] = {
            "seconds": median([r["seconds"] for r in results]),
            "extra_ratio": median([r["extra_bytes"] / r["weight_bytes"] for r in results]),
            "extra_mb": median([r["extra_bytes"] for r in results]) / 2**20,
            "exact": all(r["exact"] for r in results),
            "runs": len(results),
        }
    out["pass_seconds"] = median([r["pass_seconds"] for rs in runs.values() for r in rs])
    out["weight_mb"] = runs["prunus"][0]["weight_bytes"] / 2**20
    return out


# -- 2 and 3. eval forward and training step ------------------------------------------------------------------


def mlp(widths: list[int]) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def pruned_mlps(widths: list[int]) -> dict[str, nn.Module]:
    dense = mlp(widths)
    ours = copy.deepcopy(dense)
    prunus.prune(ours, "l1_global", amount=0.5)  # restorable: masks and values stay on the model
    theirs = copy.deepcopy(dense)
    torch_prune.global_unstructured(
        [(m, "weight") for m in theirs if isinstance(m, nn.Linear)],
        pruning_method=torch_prune.L1Unstructured,
        amount=0.5,
    )
    return {"dense": dense, "torch": theirs, "prunus": ours}


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, repeat: int) -> dict[str, float]:
    """Median over rounds of the mean time per call.

    The candidates take turns within each round, in an order rotated from round to round, so none always runs
    right after the same neighbour (torch's hooks allocate a weight copy per forward and leave the caches cold).
    """
    for fn in fns.values():
        fn()
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            times[name].append((time.perf_counter() - start) / repeat)
    return {name: median(values) for name, values in times.items()}


def bench_eval(s: dict[str, Any]) -> dict[str, Any]:
    models = {name: m.eval() for name, m in pruned_mlps(s["mlp"]).items()}
    x = torch.randn(32, s["mlp"][0])

    def forward(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model(x)

        return run

    return interleaved({n: forward(m) for n, m in models.items()}, s["rounds"], 5)


def bench_train(s: dict[str, Any], batch: int) -> dict[str, Any]:
    models = pruned_mlps(s["mlp"])
    x, y = torch.randn(batch, s["mlp"][0]), torch.randn(batch, s["mlp"][-1])
    optimizers = {
        n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for n, m in models.items()
    }
    dense = models["dense"]
    masks = {name: mask for name, mask in prunus.masks(models["prunus"]).items()}
    floor_pairs = [(dense.get_parameter(name), mask) for name, mask in masks.items()]

    def step(name: str, with_floor: bool = False) -> Callable[[], None]:
        model, optimizer = models[name], optimizers[name]

        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            if with_floor:
                with torch.no_grad():
                    torch._foreach_mul_([p for p, _ in floor_pairs], [m for _, m in floor_pairs])

        return run

    fns = {n: step(n) for n in models}
    fns["dense + one mask multiply"] = step("dense", with_floor=True)
    result = interleaved(fns, max(5, s["rounds"] // 2), 1)
    for name, mask in masks.items():
        assert bool((models["prunus"].get_parameter(name).detach()[~mask] == 0).all())
    return result


# -- 4. ResNet-18 for CIFAR -------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool), built by hand."""

    def __init__(self, width: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(cin, classes)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))


def bench_resnet(s: dict[str, Any]) -> dict[str, Any]:
    import torch_pruning as tp

    torch.manual_seed(0)
    dense = ResNet18(s["resnet_width"]).eval()
    with torch.no_grad():  # BatchNorm statistics of a forward pass, so they are not the identity
        dense.train()(torch.randn(32, 3, 32, 32))
    dense.eval()
    x = torch.randn(8, 3, 32, 32)

    def with_tp(model: nn.Module) -> None:
        importance = tp.importance.MagnitudeImportance(p=1)
        pruner = tp.pruner.BasePruner(
            model, x, importance=importance, pruning_ratio=0.5, ignored_layers=[model.linear]
        )
        pruner.step()

    def with_prunus(model: nn.Module) -> None:
        prunus.shrink(model, x, "l1_structured", amount=0.5)

    prunus.registry.names()
    times: dict[str, list[float]] = {"torch_pruning": [], "prunus": []}
    pruned: dict[str, nn.Module] = {}
    for i in range(s["resnet_runs"] + 1):
        for name, fn in (("torch_pruning", with_tp), ("prunus", with_prunus)):
            model = copy.deepcopy(dense)
            start = time.perf_counter()
            fn(model)
            if i:  # the first round warms the code paths up
                times[name].append(time.perf_counter() - start)
            pruned[name] = model.eval()

    masked = copy.deepcopy(dense)
    for m in masked.modules():
        if isinstance(m, nn.Conv2d):
            torch_prune.ln_structured(m, "weight", amount=0.5, n=1, dim=0)
    models = {"dense": dense, **pruned, "torch (masks only)": masked}

    def forward(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model(x)

        return run

    latency = interleaved({n: forward(m) for n, m in models.items()}, s["rounds"], 3)
    counts = {}
    for name, model in models.items():
        macs, params = tp.utils.count_ops_and_params(model, x)
        counts[name] = {"macs": int(macs), "params": int(params)}
    return {
        "prune_seconds": {n: median(t) for n, t in times.items()},
        "latency": latency,
        "counts": counts,
    }


# -- report ---------------------------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"{model}, {os.cpu_count()} cores (shared with other work: load average {load[0]:.1f} at the "
        f"end), 1 intra-op thread; Python {platform.python_version()}, torch {torch.__version__}, "
        f"Torch-Pruning {metadata.version('torch-pruning')}, prunus {prunus.__version__}"
    )


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render(r: dict[str, Any], quick: bool) -> str:
    g, e, t = r["global"], r["eval"], r["train"]
    res = r["resnet"]
    shape = f"{r['sizes']['layers']} x Linear({r['sizes']['width']}, {r['sizes']['width']})"
    torch_s = g["torch"]["seconds"]
    lines = [
        f"Machine: {r['machine']}.",
        "",
        f"### 1. `global_unstructured` 50 % over {shape} ({g['weight_mb']:.0f} MiB of weights)",
        "",
        "| method | time (median) | speed-up vs torch | peak extra memory | x weight bytes | exact count | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {
        "torch": "torch `global_unstructured`",
        "prunus": "prunus `l1_global` (restorable)",
        "prunus_lean": "prunus `l1_global`, `restorable=False`",
    }
    for key in ("torch", "prunus", "prunus_lean"):
        m = g[key]
        lines.append(
            f"| {names[key]} | {m['seconds']:.3f} s | {torch_s / m['seconds']:.1f}x | "
            f"{m['extra_mb']:.0f} MiB | {m['extra_ratio']:.2f}x | {'yes' if m['exact'] else 'NO'} | "
            f"{m['runs']} |"
        )
    passes = g["prunus"]["seconds"] / g["pass_seconds"]
    lines += [
        "",
        f"One pass reading and writing every weight (`torch.abs(w, out=buf)`) takes {g['pass_seconds'] * 1e3:.0f} ms "
        f"here: prunus restorable costs {passes:.1f} such passes, `restorable=False` "
        f"{g['prunus_lean']['seconds'] / g['pass_seconds']:.1f}.",
        "",
        "### 2. Eval forward, MLP "
        + "-".join(map(str, r["sizes"]["mlp"]))
        + ", batch 32, pruned 50 %, restorable",
        "",
        "| model | time per forward (median) | x dense |",
        "|---|---|---|",
    ]
    for key in ("dense", "torch", "prunus"):
        lines.append(f"| {key} | {e[key] * 1e3:.2f} ms | {e[key] / e['dense']:.3f}x |")
    lines += [
        "",
        "### 3. Training step (forward, backward, SGD momentum), same MLP, masks enforced",
        "",
        "| model | batch 256 (median) | x dense | batch 32 (median) | x dense |",
        "|---|---|---|---|---|",
    ]
    t32 = r["train32"]
    for key in ("dense", "torch", "prunus", "dense + one mask multiply"):
        lines.append(
            f"| {key} | {t[key] * 1e3:.1f} ms | {t[key] / t['dense']:.3f}x | "
            f"{t32[key] * 1e3:.1f} ms | {t32[key] / t32['dense']:.3f}x |"
        )
    lat = res["latency"]
    cnt = res["counts"]
    lines += [
        "",
        f"### 4. 50 % channel pruning, ResNet-18 for CIFAR (width {r['sizes']['resnet_width']}), batch 8",
        "",
        "| model | time to prune (median) | eval latency (median) | speed-up vs dense | parameters | MACs |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("dense", "torch_pruning", "prunus", "torch (masks only)"):
        prune_time = res["prune_seconds"].get(key)
        label = {
            "torch_pruning": "Torch-Pruning `BasePruner` (L1)",
            "prunus": '`prunus.shrink(..., "l1_structured", amount=0.5)`',
            "torch (masks only)": "torch `ln_structured` (masks only)",
        }.get(key, key)
        lines.append(
            f"| {label} | {'' if prune_time is None else f'{prune_time:.3f} s'} | {lat[key] * 1e3:.1f} ms | "
            f"{lat['dense'] / lat[key]:.2f}x | {cnt[key]['params']:,} | {cnt[key]['macs']:,} |"
        )
    ratio_time = res["prune_seconds"]["prunus"] / res["prune_seconds"]["torch_pruning"]
    speed_tp = lat["dense"] / lat["torch_pruning"]
    speed_ours = lat["dense"] / lat["prunus"]
    mac_floor = cnt["dense"]["macs"] / cnt["prunus"]["macs"]
    lines += [
        "",
        "### Against the targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| global: at least 10x faster than torch | {torch_s / g['prunus']['seconds']:.1f}x (restorable), "
        f"{torch_s / g['prunus_lean']['seconds']:.1f}x (`restorable=False`) | "
        f"{verdict(torch_s / g['prunus']['seconds'] >= 10)} |",
        f"| global: peak extra memory <= 1.0x weights, restorable | {g['prunus']['extra_ratio']:.2f}x | "
        f"{verdict(g['prunus']['extra_ratio'] <= 1.0)} |",
        f"| global: peak extra memory <= 0.3x weights, `restorable=False` | {g['prunus_lean']['extra_ratio']:.2f}x | "
        f"{verdict(g['prunus_lean']['extra_ratio'] <= 0.3)} |",
        f"| global: exact count | {'yes' if g['prunus']['exact'] and g['prunus_lean']['exact'] else 'NO'} | "
        f"{verdict(g['prunus']['exact'] and g['prunus_lean']['exact'])} |",
        f"| eval forward <= 1.05x dense | {e['prunus'] / e['dense']:.3f}x | {verdict(e['prunus'] / e['dense'] <= 1.05)} |",
        f"| training step <= 1.15x dense (batch 256) | {t['prunus'] / t['dense']:.3f}x | "
        f"{verdict(t['prunus'] / t['dense'] <= 1.15)} |",
        f"| channel pruning: latency speed-up >= Torch-Pruning's | {speed_ours:.2f}x vs {speed_tp:.2f}x "
        f"(same architecture: {cnt['prunus']['params'] == cnt['torch_pruning']['params']}) | "
        f"{verdict(speed_ours >= speed_tp * 0.97)} (within 3 % timing noise) |",
        f"| channel pruning: time to prune <= 2x Torch-Pruning's | {ratio_time:.2f}x | {verdict(ratio_time <= 2.0)} |",
        "",
        f"MAC reduction of the shrunken ResNet: {mac_floor:.2f}x, the ceiling of its latency speed-up.",
    ]
    if quick:
        lines.insert(0, "**Quick run (small shapes): not the reference figures.**\n")
    return "\n".join(lines)


def write_docs(table: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC} lacks the {BEGIN} / {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    parser.add_argument("--write-docs", action="store_true", help=f"update the tables in {DOC}")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child_global(spec["method"], spec["layers"], spec["width"])))
        return

    torch.set_num_threads(1)
    s = sizes(args.quick)
    print("1/4 global_unstructured (child processes)", file=sys.stderr)
    results: dict[str, Any] = {"sizes": s, "global": bench_global(s)}
    print("2/4 eval forward", file=sys.stderr)
    results["eval"] = bench_eval(s)
    print("3/4 training step", file=sys.stderr)
    results["train"] = bench_train(s, 256)
    results["train32"] = bench_train(s, 32)
    print("4/4 ResNet-18 channel pruning", file=sys.stderr)
    results["resnet"] = bench_resnet(s)
    results["machine"] = machine()
    table = render(results, args.quick)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if args.write_docs:
        if args.quick:
            raise SystemExit("--quick figures are not written to the docs")
        write_docs(table)


if __name__ == "__main__":
    main()
