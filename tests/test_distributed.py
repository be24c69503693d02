"""FSDP2 (``fully_shard``) and DDP in real processes: 2 ranks (4 for the 2-D mesh), gloo on 127.0.0.1, CPU.

Every rank also prunes an unwrapped copy of the model in its own process, without any collective: the masks of
the sharded or replicated model must equal those single-process masks bit for bit. The ranks are started once
per scenario group (``torch.multiprocessing.spawn``); each writes what it found to a JSON file the test reads.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

import prunus
from prunus import chunked_ranking

pytestmark = [
    pytest.mark.xdist_group("distributed"),
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available"),
]

STRATEGIES: list[tuple[str, dict[str, Any]]] = [
    ("l1_unstructured", {"amount": 0.5}),
    ("l1_global", {"amount": 0.6}),
    ("l1_nm", {}),
]
NAN_CASES = ("l1_global", "l1_unstructured")


# -- what every rank runs ---------------------------------------------------------------------------------------


def net(kind: str = "random") -> nn.Sequential:
    """Three Linear layers; 33 and 20 rows split unevenly over 2 or 4 ranks. ``ties``: integer weights."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 33), nn.ReLU(), nn.Linear(33, 20), nn.ReLU(), nn.Linear(20, 8)
    )
    if kind == "ties":
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(
                    torch.randint(-2, 3, param.shape, generator=torch.Generator().manual_seed(1))
                )
    return model


def shard(model: nn.Module, mesh: Any = None) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def whole(tensor: Tensor) -> Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def masks_of(model: nn.Module) -> dict[str, Tensor]:
    return {name.removeprefix("module."): whole(mask) for name, mask in prunus.masks(model).items()}


def reference(strategy: str, options: dict[str, Any], kind: str = "random") -> dict[str, Tensor]:
    model = net(kind)
    prunus.prune(model, strategy, **options)
    return {name: mask.clone() for name, mask in prunus.masks(model).items()}


def same(got: dict[str, Tensor], want: dict[str, Tensor]) -> bool:
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def train(model: nn.Module, steps: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(dist.get_rank())
    for _ in range(steps):
        model(torch.randn(4, 16, generator=generator)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()


def zeros_kept(model: nn.Module, masks: dict[str, Tensor]) -> bool:
    inner = model.module if hasattr(model, "module") else model
    return all(
        bool((whole(layer.weight.detach())[~masks[f"{i}.weight"]] == 0).all())
        for i, layer in enumerate(inner)
        if isinstance(layer, nn.Linear)
    )


def pruned_and_trained(
    wrap: Callable[[nn.Module], nn.Module], checks: dict[str, Callable[[nn.Module], bool]]
) -> dict[str, Any]:
    """Each strategy on a wrapped model: masks equal to one process's, zeros kept through 20 AdamW steps."""
    found: dict[str, Any] = {}
    for strategy, options in STRATEGIES:
        want = reference(strategy, options)
        model = wrap(net())
        prunus.prune(model, strategy, **options)
        found[f"{strategy}: masks equal"] = same(masks_of(model), want)
        found.update({f"{strategy}: {name}": check(model) for name, check in checks.items()})
        train(model, 20)
        found[f"{strategy}: zeros after 20 AdamW steps"] = zeros_kept(model, want)
    return found


def fsdp_cases(tmp: str) -> dict[str, Any]:
    from torch.distributed.tensor import DTensor

    def local_shard(model: nn.Module) -> bool:
        mask = prunus.masks(model)["0.weight"]
        return isinstance(mask, DTensor) and tuple(mask.to_local().shape) == tuple(
            model[0].weight.to_local().shape
        )

    found = pruned_and_trained(shard, {"mask is a shard": local_shard})
    # Ties decided across ranks: tiny candidate limits force the histogram, ties and decide passes.
    chunked_ranking.CANDIDATE_LIMIT, chunked_ranking.MIN_SAMPLE = 8, 16
    for safety in (6.0, 0.0):
        chunked_ranking.SAFETY = safety
        for strategy in ("l1_global", "l1_unstructured"):
            want = reference(strategy, {"amount": 0.5}, "ties")
            model = shard(net("ties"))
            with chunked_ranking.recording() as records:
                prunus.prune(model, strategy, amount=0.5)
            found[f"ties {strategy} safety {safety}: masks equal"] = same(masks_of(model), want)
            found.setdefault("passes", []).extend(r.passes for r in records)
    chunked_ranking.CANDIDATE_LIMIT, chunked_ranking.MIN_SAMPLE = 1 << 16, 4096
    chunked_ranking.SAFETY = 6.0
    # Restore and remove per shard.
    model, original = shard(net()), net()
    prunus.prune(model, "l1_global", amount=0.5)
    prunus.restore(model)
    found["restore: every weight back bit for bit"] = all(
        torch.equal(whole(a.detach()), b.detach())
        for a, b in zip(model.parameters(), original.parameters(), strict=True)
    )
    prunus.prune(model, "l1_unstructured", amount=0.3)
    prunus.prune(model, "l1_unstructured", amount=0.3)
    stacked = net()
    prunus.prune(stacked, "l1_unstructured", amount=0.3)
    prunus.prune(stacked, "l1_unstructured", amount=0.3)
    found["two prunes stack as in one process"] = same(masks_of(model), prunus.masks(stacked))
    prunus.remove(model)
    found["remove"] = not prunus.is_pruned(model) and zeros_kept(model, prunus.masks(stacked))
    # Pruned before sharding: the masks follow the shards.
    want = reference("l1_global", {"amount": 0.5})
    model = net()
    prunus.prune(model, "l1_global", amount=0.5)
    shard(model)
    train(model, 5)
    found["prune then shard: masks"] = same(masks_of(model), want)
    found["prune then shard: zeros after training"] = zeros_kept(model, want)
    # GradualPruner under FSDP2.
    model = shard(net())
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    pruner = prunus.GradualPruner(
        model, "l1_global", schedule="linear", final_sparsity=0.8, start=0, end=10, every=2
    )
    for step in range(12):
        model(torch.randn(4, 16)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        pruner.step(step)
    masks = masks_of(model)
    alone = net()
    single = prunus.GradualPruner(
        alone, "l1_global", schedule="linear", final_sparsity=0.8, start=0, end=10, every=2
    )
    for step in range(12):
        single.step(step)
    found["gradual: sparsity"] = pruner.sparsity
    found["gradual: sparsity in one process"] = single.sparsity
    found["gradual: zeros"] = zeros_kept(model, masks)
    # torch.distributed.checkpoint keeps the zeros.
    import torch.distributed.checkpoint as dcp

    dcp.save(model.state_dict(), checkpoint_id=tmp)
    fresh = shard(net())
    state = fresh.state_dict()
    dcp.load(state, checkpoint_id=tmp)
    fresh.load_state_dict(state)
    found["checkpoint: zeros"] = zeros_kept(fresh, masks)
    # A NaN weight on one rank only: every rank raises a WeightError (none is left waiting in a collective).
    for strategy in NAN_CASES:
        model = shard(net())
        if dist.get_rank() == 1:
            with torch.no_grad():
                model[2].weight.to_local()[0, 0] = float("nan")
        try:
            prunus.prune(model, strategy, amount=0.5)
            found[f"nan {strategy}: raised"] = False
        except prunus.WeightError as error:
            # The rank holding the NaN names it; the other says another rank's weights are broken.
            found[f"nan {strategy}: raised"] = "'2.weight' holds 1 NaN" in str(
                error
            ) or "another rank" in str(error)
        found[f"nan {strategy}: not pruned"] = not prunus.is_pruned(model)

    # A floor that binds (min_keep, default 1): the layer of tiny weights keeps one entry, as in one process.
    def tiny() -> nn.Sequential:
        model = net()
        with torch.no_grad():
            model[4].weight.mul_(1e-6)
        return model

    alone = tiny()
    prunus.prune(alone, "l1_global", amount=0.5)
    model = shard(tiny())
    prunus.prune(model, "l1_global", amount=0.5)
    found["floor: masks equal"] = same(masks_of(model), prunus.masks(alone))
    found["floor: held"] = int(prunus.masks(alone)["4.weight"].sum()) == 1
    return found


def ddp_cases(tmp: str) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    return pruned_and_trained(DistributedDataParallel, {})


def mesh_2d_cases(tmp: str) -> dict[str, Any]:
    """HSDP: replicated over one mesh dim, sharded over the other; each part is counted by one owner."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
    found: dict[str, Any] = {}
    chunked_ranking.CANDIDATE_LIMIT, chunked_ranking.MIN_SAMPLE = 8, 16
    for strategy, options in [*STRATEGIES, ("l1_global", {"amount": 0.4})]:
        want = reference(strategy, options)
        model = shard(net(), mesh)
        prunus.prune(model, strategy, **options)
        found[f"{strategy} {options}: masks equal"] = same(masks_of(model), want)
        train(model, 3)
        found[f"{strategy} {options}: zeros"] = zeros_kept(model, want)
    return found


CASES: dict[str, Callable[[str], dict[str, Any]]] = {
    "fsdp": fsdp_cases,
    "ddp": ddp_cases,
    "mesh_2d": mesh_2d_cases,
}


def worker(rank: int, world: int, port: int, group: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        found = CASES[group](str(Path(out) / "checkpoint"))
    except Exception:
        found = {"error": traceback.format_exc()}
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(found))


def run_ranks(group: str, world: int) -> list[dict[str, Any]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(worker, args=(world, port, group, out), nprocs=world, join=True)
        results = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]
    for rank, found in enumerate(results):
        assert "error" not in found, f"rank {rank} failed:\n{found['error']}"
    return results


def failures(results: list[dict[str, Any]]) -> list[str]:
    return [
        f"rank {rank}: {name}"
        for rank, found in enumerate(results)
        for name, value in found.items()
        if value is False
    ]


# -- the tests --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fsdp() -> list[dict[str, Any]]:
    return run_ranks("fsdp", 2)


def test_fsdp2_masks_equal_one_process_and_hold_through_training(
    fsdp: list[dict[str, Any]],
) -> None:
    assert not failures(fsdp), failures(fsdp)
    for strategy, _ in STRATEGIES:
        assert fsdp[0][f"{strategy}: masks equal"] and fsdp[1][f"{strategy}: masks equal"]


def test_fsdp2_ties_take_every_pass_of_the_ranking_across_ranks(fsdp: list[dict[str, Any]]) -> None:
    passes = {tuple(p) for p in fsdp[0]["passes"]}
    assert any("decide" in p and "ties" in p for p in passes), passes
    assert any(p[-1] == "window" for p in passes), passes
    assert fsdp[0]["passes"] == fsdp[1]["passes"]  # the ranks went through the same passes


def test_fsdp2_gradual_pruning_and_checkpoints(fsdp: list[dict[str, Any]]) -> None:
    for found in fsdp:
        assert found["gradual: sparsity"] == found["gradual: sparsity in one process"]
        assert found["gradual: sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert all(found["gradual: zeros"] and found["checkpoint: zeros"] for found in fsdp)


def test_fsdp2_restore_remove_and_errors_per_shard(fsdp: list[dict[str, Any]]) -> None:
    for found in fsdp:
        assert found["restore: every weight back bit for bit"]
        assert found["remove"] and found["two prunes stack as in one process"]
        assert found["prune then shard: masks"] and found["prune then shard: zeros after training"]
        assert all(found[f"nan {s}: raised"] and found[f"nan {s}: not pruned"] for s in NAN_CASES)
        assert found["floor: masks equal"] and found["floor: held"]


def test_ddp_masks_equal_one_process_and_hold_through_training() -> None:
    results = run_ranks("ddp", 2)
    assert not failures(results), failures(results)
    assert len(results[0]) == 2 * len(STRATEGIES)


@pytest.mark.slow
def test_a_2d_mesh_of_4_ranks_counts_each_replicated_shard_once() -> None:
    # Four processes on a machine with fewer cores: slow, but it is the case where parts are replicated.
    results = run_ranks("mesh_2d", 4)
    assert not failures(results), failures(results)
