"""The fast paths keep the exact semantics: lean global ranking, bit-level masking, the cached step hook.

These tests assert results (counts, masks, values), never timings: ``benchmarks/bench_masks.py`` measures speed.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from support import pruned_entries_are_zero
from torch import Tensor, nn

import prunus
from prunus import Target, masking
from prunus import global_ranking as lean


def targets_of(tensors: list[Tensor], priors: list[Tensor | None] | None = None) -> list[Target]:
    out = []
    for i, tensor in enumerate(tensors):
        module = nn.Module()
        module.weight = nn.Parameter(tensor.clone())
        out.append(Target(f"m{i}.weight", module, "weight", None if priors is None else priors[i]))
    return out


def raw_scores(target: Target) -> Tensor:
    return target.tensor.clone()


def reference(targets: list[Target], amount: float | int) -> dict[str, Tensor]:
    return lean.classic_keep_masks(targets, raw_scores, amount)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 64 entries and candidate bins of at most 8: every path runs on tiny tensors."""
    monkeypatch.setattr(lean, "_CHUNK", 64)
    monkeypatch.setattr(lean, "CANDIDATE_LIMIT", 8)


def random_case(rng: random.Random, gen: torch.Generator) -> tuple[list[Tensor], float | int]:
    kind = rng.choice(["randn", "ties", "zeros", "signed_zero", "dtypes", "grid", "inf", "float64"])
    tensors = []
    for _ in range(rng.randint(1, 4)):
        shape = (rng.randint(1, 40), rng.randint(1, 30))
        if kind == "randn":
            t = torch.randn(shape, generator=gen)
        elif kind == "ties":
            t = torch.randint(-3, 4, shape, generator=gen).float()
        elif kind == "zeros":
            t = torch.zeros(shape)
        elif kind == "signed_zero":
            t = torch.where(
                torch.rand(shape, generator=gen) > 0.5, torch.tensor(-0.0), torch.tensor(0.0)
            )
        elif kind == "dtypes":
            dtype = rng.choice([torch.float16, torch.bfloat16, torch.float32, torch.float64])
            t = torch.randn(shape, generator=gen).to(dtype)
        elif kind == "grid":
            t = torch.randint(0, 50, shape, generator=gen).float() * 1e-3
        elif kind == "inf":
            t = torch.randn(shape, generator=gen)
            t.view(-1)[0] = float("inf")
            t.view(-1)[-1] = -float("inf")
        else:
            t = torch.randn(shape, generator=gen, dtype=torch.float64)
        tensors.append(t)
    total = sum(t.numel() for t in tensors)
    amount = rng.choice([0.0, 1.0, rng.random(), rng.randint(0, total)])
    return tensors, amount


@pytest.mark.parametrize("seed", range(4))
def test_lean_global_equals_keep_mask_on_the_concatenation(seed: int, small_chunks: None) -> None:
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    for _ in range(60):
        tensors, amount = random_case(rng, gen)
        priors: list[Tensor | None] | None = None
        if rng.random() < 0.3:
            priors = [torch.rand(t.shape, generator=gen) > 0.3 for t in tensors]
            if isinstance(amount, int):
                amount = rng.randint(0, sum(int(p.sum()) for p in priors if p is not None))
        targets = targets_of(tensors, priors)
        got = lean.global_keep_masks(targets, raw_scores, amount)
        want = reference(targets, amount)
        for target in targets:
            assert got[target.name].dtype == torch.bool
            assert got[target.name].shape == target.tensor.shape
            assert torch.equal(got[target.name], want[target.name]), (target.name, amount)


def test_lean_global_on_default_chunks_and_a_crowded_bin() -> None:
    # 300k entries over two chunks with only 5 distinct values: the threshold's bin holds ~60k ties.
    gen = torch.Generator().manual_seed(1)
    tensors = [torch.randint(0, 5, (300, 700), generator=gen).float(), torch.randn(200, 300)]
    targets = targets_of(tensors)
    for amount in (0.1, 0.37, 123_457):
        got = lean.global_keep_masks(targets, raw_scores, amount)
        want = reference(targets, amount)
        assert all(torch.equal(got[t.name], want[t.name]) for t in targets)


def test_a_criterion_whose_scores_change_between_calls_still_gets_an_exact_count() -> None:
    targets = targets_of([torch.randn(30, 40), torch.randn(50, 10)])

    def noisy(target: Target) -> Tensor:
        return torch.rand(target.tensor.shape)  # a new draw on every call

    masks = lean.global_keep_masks(targets, noisy, 0.4)
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.4 * 1700)


def test_l1_global_matches_torch_global_unstructured_on_distinct_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.Linear(32, 8))
    theirs = copy.deepcopy(model)
    layers = [m for m in theirs if isinstance(m, nn.Linear)]
    torch_prune.global_unstructured(
        [(m, "weight") for m in layers], pruning_method=torch_prune.L1Unstructured, amount=0.55
    )
    report = prunus.prune(model, "l1_global", amount=0.55)
    ours = [m for m in model if isinstance(m, nn.Linear)]
    for mine, reference_layer in zip(ours, layers, strict=True):
        mask = masking.get_mask(mine, "weight")
        assert mask is not None and torch.equal(mask, reference_layer.weight_mask.bool())
    assert report.pruned == round(0.55 * sum(m.weight.numel() for m in ours))


# -- masking: bit-level gather and zeroing --------------------------------------------------------------------


def bits(tensor: Tensor) -> Tensor:
    """The raw bytes, so NaN equals NaN and -0.0 differs from +0.0."""
    return tensor.contiguous().view(-1).view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("restorable", [True, False])
def test_prune_and_restore_are_bit_exact_in_every_dtype(
    dtype: torch.dtype, restorable: bool
) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(300, 200), nn.Linear(200, 50)).to(dtype)
    with torch.no_grad():
        model[0].weight[0, :3] = torch.tensor([float("inf"), -0.0, float("nan")], dtype=dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prunus.prune(
        model, "custom_mask", restorable=restorable, masks={"0.weight": torch.rand(200, 300) > 0.5}
    )
    prunus.prune(model, "l1_unstructured", amount=0.3, include=["1.weight"], restorable=restorable)
    for name, mask in prunus.masks(model).items():
        weight = model.get_parameter(name)
        pruned = weight.detach()[~mask]
        # Exact +0.0 bits in every pruned entry, even where the original was inf, -0.0 or NaN.
        assert torch.equal(pruned.view(-1).float().abs().sign(), torch.zeros(pruned.numel()))
        assert not torch.signbit(pruned.float()).any()
        assert torch.equal(bits(weight.detach()[mask]), bits(before[name][mask]))
    if restorable:
        prunus.restore(model)
        for key, value in model.state_dict().items():
            assert torch.equal(bits(value), bits(before[key]))


def test_pruned_values_on_a_non_contiguous_tensor_fall_back_to_torch() -> None:
    data = torch.randn(20, 30).t()
    keep = torch.rand(30, 20) > 0.5
    assert torch.equal(masking.pruned_values(data, keep), data[~keep])
    copy_ = data.clone()
    masking.zero_pruned(data, keep)
    assert torch.equal(data[keep], copy_[keep]) and bool((data[~keep] == 0).all())


def test_attach_mask_outside_prune_zeroes_at_once_and_undoes_exactly() -> None:
    layer = nn.Linear(40, 30)
    original = layer.weight.detach().clone()
    mask = torch.rand(30, 40) > 0.5
    undo = masking.attach_mask(layer, "weight", mask, restorable=False)
    assert bool((layer.weight[~mask] == 0).all())
    undo()
    assert torch.equal(layer.weight.detach(), original)
    assert masking.get_mask(layer, "weight") is None


def test_a_later_applier_failing_leaves_weights_untouched_without_restore_data() -> None:
    class FailSecond:
        calls = 0

        @prunus.hookimpl(tryfirst=True)
        def prunus_apply_mask(self, target: Target, mask: Tensor, restorable: bool) -> None:
            FailSecond.calls += 1
            if FailSecond.calls == 2:
                raise RuntimeError("disk full")

    registry = prunus.Registry()
    registry.register_plugin(FailSecond(), name="fail-second")
    model = nn.Sequential(nn.Linear(20, 20), nn.Linear(20, 20))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(prunus.PluginError, match="left as it was"):
        prunus.prune(model, "l1_global", amount=0.5, restorable=False, registry=registry)
    assert not prunus.is_pruned(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert not any(k.startswith("_prunus") for m in model.modules() for k in m._buffers)


# -- the step hook --------------------------------------------------------------------------------------------


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.randn(8, 12)).pow(2).sum().backward()
    optimizer.step()


def net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.mark.parametrize(
    "change",
    [
        "prune_again",
        "restore_then_prune",
        "new_param_group",
        "replaced_parameter",
        "deepcopy",
        "to_double",
    ],
)
def test_the_cached_step_plan_follows_every_change(change: str) -> None:
    torch.manual_seed(0)
    model = net()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_step(model, optimizer)
    assert pruned_entries_are_zero(model)

    if change == "prune_again":
        prunus.prune(model, "l1_unstructured", amount=0.5)
    elif change == "restore_then_prune":
        prunus.restore(model)
        prunus.prune(model, "random_unstructured", amount=0.7, seed=1)
    elif change == "new_param_group":
        extra = nn.Linear(4, 4)
        prunus.prune(extra, "l1_unstructured", amount=0.5)
        optimizer.add_param_group({"params": list(extra.parameters())})
        model.append(extra)
    elif change == "replaced_parameter":
        layer = model[0]
        assert isinstance(layer, nn.Linear)
        layer.weight.data = torch.randn(16, 12)  # new storage under the same Parameter
    elif change == "deepcopy":
        model = copy.deepcopy(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    elif change == "to_double":
        model.double()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.randn(8, 12, dtype=torch.float64)).pow(2).sum().backward()
            optimizer.step()
        assert pruned_entries_are_zero(model)
        return
    for _ in range(2):
        train_step(model, optimizer)
    assert pruned_entries_are_zero(model)


def test_the_step_hook_leaves_other_optimizers_parameters_alone() -> None:
    pruned, other = net(), net()
    prunus.prune(pruned, "l1_unstructured", amount=0.5)
    # `other` shares nothing with `pruned`: stepping its optimizer must not touch `pruned`'s weights.
    with torch.no_grad():
        for name in prunus.masks(pruned):
            pruned.get_parameter(name).add_(1.0)  # pruned entries now read 1
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    train_step(other, optimizer)
    assert all(
        bool((pruned.get_parameter(name).detach()[~mask] == 1).all())
        for name, mask in prunus.masks(pruned).items()
    )


def test_removed_masks_are_no_longer_enforced() -> None:
    model = net()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_step(model, optimizer)
    zeros_before = sum(int((p == 0).sum()) for p in model.parameters())
    prunus.remove(model)
    for _ in range(2):
        train_step(model, optimizer)
    assert sum(int((p == 0).sum()) for p in model.parameters()) < zeros_before


@pytest.mark.parametrize("amount", [0.3, 0.5, 1234])
def test_holding_scores_between_passes_changes_nothing(
    amount: float | int, small_chunks: None
) -> None:
    # restorable=True lets the ranking hold some scores between its passes (the memory the restore data takes
    # anyway); the masks must be the same as with every score computed twice.
    gen = torch.Generator().manual_seed(5)
    tensors = [torch.randint(-20, 20, (30, 40), generator=gen).float() for _ in range(3)]
    targets = targets_of(tensors)
    want = reference(targets, amount)
    for keep_bytes in (0, 4_800, 10**9):
        got = lean.global_keep_masks(targets, raw_scores, amount, keep_bytes)
        assert all(torch.equal(got[t.name], want[t.name]) for t in targets)
    model_a = nn.Sequential(nn.Linear(40, 30), nn.Linear(30, 40))
    model_b = copy.deepcopy(model_a)
    prunus.prune(model_a, "l1_global", amount=amount, restorable=True)
    prunus.prune(model_b, "l1_global", amount=amount, restorable=False)
    masks_a, masks_b = prunus.masks(model_a), prunus.masks(model_b)
    assert all(torch.equal(masks_a[name], masks_b[name]) for name in masks_a)


def test_the_device_paths_give_the_same_masks(
    monkeypatch: pytest.MonkeyPatch, small_chunks: None
) -> None:
    # The paths other devices take (bool masks written directly, torch's nonzero) checked on CPU.
    gen = torch.Generator().manual_seed(9)
    targets = targets_of([torch.randn(30, 40, generator=gen), torch.randn(25, 7, generator=gen)])
    want = reference(targets, 0.45)
    monkeypatch.setattr(lean, "PACK_ON_CPU", False)
    monkeypatch.setattr(lean, "_nonzero", lambda flat: flat.nonzero().squeeze(1))
    got = lean.global_keep_masks(targets, raw_scores, 0.45)
    assert all(torch.equal(got[t.name], want[t.name]) for t in targets)


def test_a_non_contiguous_parameter_is_enforced_through_foreach() -> None:
    model = net()
    layer = model[0]
    assert isinstance(layer, nn.Linear)
    layer.weight = nn.Parameter(torch.randn(12, 16).t())  # (16, 12), not contiguous
    prunus.prune(model, "l1_unstructured", amount=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        train_step(model, optimizer)
    assert not layer.weight.is_contiguous()
    assert pruned_entries_are_zero(model)
