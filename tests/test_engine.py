"""How a pruned model behaves: state_dict, forward, optimizers, copies, compile, composition, remove, restore."""

from __future__ import annotations

import copy
import io
import json
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import torch
from support import pruned_entries_are_zero
from torch import Tensor, nn

import prunus
from prunus import masking

KNOWN_OPTIONS: dict[str, Any] = {"amount": 0.5, "n": 2, "seed": 1}
"""Values for the required options of composed strategies (and the seed, so random masks are reproducible)."""


def options_for(name: str, model: nn.Module) -> dict[str, Any]:
    """Options for strategy ``name`` that prune about half of the default targets of ``model``."""
    targets = prunus.select_targets(model)
    if name == "custom_mask":
        generator = torch.Generator().manual_seed(4)
        return {
            "masks": {
                target: torch.rand(module._parameters[pname].shape, generator=generator) > 0.5
                for target, module, pname in targets
            }
        }
    if name == "magnitude_threshold":
        weights = torch.cat([m._parameters[p].detach().abs().reshape(-1) for _, m, p in targets])
        return {"threshold": float(weights.median())}
    fields = prunus.registry.info(name).config.model_fields
    options = {key: value for key, value in KNOWN_OPTIONS.items() if key in fields}
    missing = [key for key, field in fields.items() if field.is_required() and key not in options]
    if missing:
        pytest.skip(f"{name} needs options {missing} that this test does not know")
    return options


BUILTIN = [
    "custom_mask",
    "global_unstructured",
    "l1_global",
    "l1_structured",
    "l1_unstructured",
    "ln_global",
    "ln_structured",
    "ln_unstructured",
    "magnitude_threshold",
    "random_global",
    "random_structured",
    "random_unstructured",
]


def test_every_builtin_strategy_is_registered() -> None:
    assert set(BUILTIN) <= set(prunus.registry.names())


@pytest.fixture(params=prunus.registry.names())
def strategy(request: pytest.FixtureRequest) -> str:
    """Each registered strategy in turn."""
    return str(request.param)


def prune_half(model: nn.Module, name: str, **kwargs: Any) -> prunus.PruneReport:
    if prunus.registry.info(name).statistics:
        # A data-aware strategy calibrates on a batch of the model's inputs; without a reconstruction, so that
        # the kept entries keep their values as with every other strategy.
        kwargs = {"data": [calibration_batch(model)], "reconstruct": False, **kwargs}
    return prunus.prune(model, name, **kwargs, **options_for(name, model))


def calibration_batch(model: nn.Module) -> Tensor:
    """A batch of inputs for one of the conftest models."""
    from conftest import MODELS, _inputs

    kind = next(name for name, build in MODELS.items() if type(model) is build)
    return _inputs(kind, batch=6)


# -- state_dict and forward -------------------------------------------------------------------------------------


def test_state_dict_keeps_exactly_the_original_keys(
    strategy: str, make_model: Callable[..., nn.Module]
) -> None:
    model = make_model("lenet")
    before = list(model.state_dict())
    prune_half(model, strategy)
    assert list(model.state_dict()) == before


def test_state_dict_loads_strictly_into_a_fresh_instance(
    strategy: str, make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("lenet")
    prune_half(model, strategy)
    fresh = make_model("lenet", seed=5)
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = example_input("lenet")
    assert torch.equal(fresh(x), model(x))


def test_state_dict_of_every_model_loads_strictly(
    model_name: str, make_model: Callable[..., nn.Module]
) -> None:
    model = make_model(model_name)
    prunus.prune(model, "l1_unstructured", amount=0.5)
    fresh = make_model(model_name, seed=3)
    fresh.load_state_dict(model.state_dict(), strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_pruned_entries_are_zero_and_kept_entries_untouched(
    strategy: str, make_model: Callable[..., nn.Module]
) -> None:
    model = make_model("mlp")
    original = copy.deepcopy(model)
    prune_half(model, strategy)
    found = prunus.masks(model)
    assert found
    for name, mask in found.items():
        param = model.get_parameter(name)
        assert mask.dtype == torch.bool and mask.shape == param.shape
        assert bool((param[~mask] == 0).all())
        assert torch.equal(param[mask], original.get_parameter(name)[mask])


def test_report_counts_match_the_masks(strategy: str, make_model: Callable[..., nn.Module]) -> None:
    model = make_model("mlp")
    report = prune_half(model, strategy)
    masks = prunus.masks(model)
    assert {p.name for p in report.parameters} == set(masks)
    for entry in report.parameters:
        assert entry.pruned == int((~masks[entry.name]).sum())
        assert entry.newly_pruned == entry.pruned
        assert entry.numel == masks[entry.name].numel()
    assert json.loads(report.model_dump_json())["strategy"] == strategy
    assert strategy in str(report)


def test_forward_adds_no_hooks(
    model_name: str, make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model(model_name)
    prunus.prune(model, "l1_unstructured", amount=0.5)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks
    assert not nn.modules.module._global_forward_hooks
    assert not nn.modules.module._global_forward_pre_hooks
    dense = make_model(model_name)
    dense.load_state_dict(model.state_dict())
    x = example_input(model_name)
    assert torch.equal(model(x), dense(x))


def test_parameters_stay_plain_parameters(
    model_name: str, make_model: Callable[..., nn.Module]
) -> None:
    model = make_model(model_name)
    before = {name: id(p) for name, p in model.named_parameters()}
    prunus.prune(model, "l1_unstructured", amount=0.5)
    assert {name: id(p) for name, p in model.named_parameters()} == before
    assert all(type(p) is nn.Parameter for p in model.parameters())


def test_every_model_prunes_every_default_layer(
    model_name: str, make_model: Callable[..., nn.Module]
) -> None:
    model = make_model(model_name)
    report = prunus.prune(model, "l1_unstructured", amount=0.5)
    expected = {id(m.weight) for m in model.modules() if isinstance(m, prunus.DEFAULT_LAYERS)}
    pruned = {id(model.get_parameter(p.name)) for p in report.parameters}
    assert pruned == expected


def test_tied_weight_is_pruned_once_and_seen_through_both_modules(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("tied")
    report = prunus.prune(model, "l1_unstructured", amount=0.5)
    assert sorted(p.name for p in report.parameters) == ["head.weight", "hidden.weight"]
    assert report["head.weight"].pruned == model.head.weight.numel() // 2
    assert model.embed.weight is model.head.weight
    assert int((model.embed.weight == 0).sum()) == model.head.weight.numel() // 2
    prunus.restore(model)
    assert model.embed.weight is model.head.weight
    assert torch.equal(model.embed.weight, make_model("tied").embed.weight)


def test_tied_weight_can_be_chosen_by_either_name(make_model: Callable[..., nn.Module]) -> None:
    for name in ("embed.weight", "head.weight"):
        model = make_model("tied")
        report = prunus.prune(model, "l1_unstructured", include=name, amount=0.25)
        assert len(report.parameters) == 1
        assert int((model.head.weight == 0).sum()) == round(0.25 * model.head.weight.numel())


def test_excluding_either_name_of_a_tied_weight_excludes_it(
    make_model: Callable[..., nn.Module],
) -> None:
    for name in ("embed.weight", "head.weight"):
        model = make_model("tied")
        report = prunus.prune(
            model, "l1_unstructured", include="*.weight", exclude=name, amount=0.5
        )
        assert [p.name for p in report.parameters] == ["hidden.weight"]
        assert int((model.embed.weight == 0).sum()) == 0


def test_a_tied_weight_pruned_under_one_name_composes_under_the_other(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("tied")
    original = model.embed.weight.detach().clone()
    prunus.prune(model, "l1_unstructured", include="head.weight", amount=0.5)
    report = prunus.prune(model, "l1_unstructured", include="embed.weight", amount=0.5)
    numel = original.numel()
    assert list(prunus.masks(model)) == ["head.weight"]  # one mask, where the first prune put it
    assert report.parameters[0].newly_pruned == numel // 4
    assert int((model.embed.weight == 0).sum()) == numel // 2 + numel // 4
    prunus.restore(model)
    assert torch.equal(model.embed.weight, original)


def test_a_tied_weight_stays_zero_under_an_optimizer(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("tied")
    prunus.prune(model, "l1_unstructured", amount=0.5)
    train(model, torch.optim.Adam(model.parameters(), lr=0.05), example_input("tied"))
    mask = prunus.masks(model)["head.weight"]
    assert bool((model.embed.weight[~mask] == 0).all())


# -- optimizers ---------------------------------------------------------------------------------------------------


def train(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, steps: int = 4) -> None:
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()


def assert_masked_zero(model: nn.Module) -> None:
    assert prunus.masks(model)
    assert pruned_entries_are_zero(model)


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    "sgd_nesterov_wd": lambda params: torch.optim.SGD(
        params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01
    ),
    "adam": lambda params: torch.optim.Adam(params, lr=0.05),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.05, weight_decay=0.1),
    "adam_foreach": lambda params: torch.optim.Adam(params, lr=0.05, foreach=True),
    "rmsprop": lambda params: torch.optim.RMSprop(params, lr=0.01),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_pruned_entries_stay_zero_through_optimizer_steps(
    optimizer: str,
    model_name: str,
    make_model: Callable[..., nn.Module],
    example_input: Callable[..., Tensor],
) -> None:
    model = make_model(model_name)
    opt = OPTIMIZERS[optimizer](model.parameters())
    prunus.prune(model, "l1_unstructured", amount=0.6)
    train(model, opt, example_input(model_name))
    assert_masked_zero(model)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam", "adamw"])
def test_optimizer_state_from_before_pruning_does_not_revive_entries(
    optimizer: str, make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("mlp")
    opt = OPTIMIZERS[optimizer](model.parameters())
    x = example_input("mlp")
    train(model, opt, x, steps=3)  # momentum / moment estimates now push every entry
    assert all(opt.state[p] for p in model.parameters())
    prunus.prune(model, "l1_unstructured", amount=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, opt, x, steps=3)
    assert_masked_zero(model)
    # ...and the kept entries did train.
    for name, mask in prunus.masks(model).items():
        assert not torch.equal(model.get_parameter(name)[mask], before[name][mask])


def test_optimizer_over_a_subset_zeroes_only_its_parameters(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", amount=0.5)
    opt = torch.optim.SGD(model.fc1.parameters(), lr=0.1)
    with (
        torch.no_grad()
    ):  # someone writes into a pruned entry of a layer this optimizer does not own
        model.fc2.weight[~prunus.masks(model)["fc2.weight"]] = 1.0
    train(model, opt, example_input("mlp"), steps=1)
    assert bool((model.fc1.weight[~prunus.masks(model)["fc1.weight"]] == 0).all())
    assert bool((model.fc2.weight[~prunus.masks(model)["fc2.weight"]] == 1.0).all())


def test_other_unpruned_models_train_normally(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    pruned, dense = make_model("mlp"), make_model("mlp")
    prunus.prune(pruned, "l1_unstructured", amount=0.5)
    reference = make_model("mlp")
    x = example_input("mlp")
    train(dense, torch.optim.SGD(dense.parameters(), lr=0.1), x)
    train(reference, torch.optim.SGD(reference.parameters(), lr=0.1), x)
    for a, b in zip(dense.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


# -- copies ---------------------------------------------------------------------------------------------------


def pickle_round_trip(model: nn.Module) -> nn.Module:
    return pickle.loads(pickle.dumps(model))  # type: ignore[no-any-return]


def torch_save_round_trip(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)  # type: ignore[no-any-return]


COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": pickle_round_trip,
    "torch_save": torch_save_round_trip,
}


@pytest.mark.parametrize("how", sorted(COPIES))
def test_copies_keep_their_masks(
    how: str, model_name: str, make_model: Callable[..., nn.Module]
) -> None:
    model = make_model(model_name)
    prunus.prune(model, "l1_unstructured", amount=0.5)
    clone = COPIES[how](model)
    original, copied = prunus.masks(model), prunus.masks(clone)
    assert original.keys() == copied.keys()
    for name, mask in original.items():
        assert torch.equal(mask, copied[name])
        assert mask.data_ptr() != copied[name].data_ptr()
    assert list(clone.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("how", sorted(COPIES))
def test_copies_keep_enforcing_zeros_under_an_optimizer(
    how: str, make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("lenet")
    prunus.prune(model, "l1_unstructured", amount=0.5)
    clone = COPIES[how](model)
    del model
    import gc

    gc.collect()
    train(clone, torch.optim.Adam(clone.parameters(), lr=0.05), example_input("lenet"))
    assert_masked_zero(clone)


@pytest.mark.parametrize("how", sorted(COPIES))
def test_copies_can_be_restored(how: str, make_model: Callable[..., nn.Module]) -> None:
    model = make_model("mlp")
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    prunus.prune(model, "l1_unstructured", amount=0.5)
    clone = COPIES[how](model)
    prunus.restore(clone)
    assert not prunus.is_pruned(clone)
    for key, value in clone.state_dict().items():
        assert torch.equal(value, expected[key])
    assert prunus.is_pruned(model)


def test_deepcopy_of_a_submodule_keeps_enforcing(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", amount=0.5)
    layer = copy.deepcopy(model.fc2)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(torch.randn(3, 32)).sum().backward()
    opt.step()
    assert bool((layer.weight[~prunus.masks(layer)["weight"]] == 0).all())


# -- torch.compile ------------------------------------------------------------------------------------------------


def _compile_available() -> bool:
    try:
        import torch._dynamo
    except Exception:
        return False
    return hasattr(torch, "compile")


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # emitted by torch internals while compiling
@pytest.mark.skipif(not _compile_available(), reason="torch.compile is not available")
def test_torch_compile_matches_eager(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_structured", amount=0.5, dim=0)
    x = example_input("mlp")
    eager = model(x)
    try:
        compiled = torch.compile(model)
        out = compiled(x)
    except Exception as error:  # e.g. no C++ compiler for inductor on this machine
        if "compiler" in str(error).lower() or "InvalidCxxCompiler" in type(error).__name__:
            pytest.skip(f"torch.compile cannot build here: {error}")
        raise
    torch.testing.assert_close(out, eager)
    assert prunus.is_pruned(model)


# -- composition ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("l1_unstructured", {"amount": 0.5}), ("l1_unstructured", {"amount": 0.5})),
        (("l1_structured", {"amount": 0.5, "dim": 0}), ("l1_unstructured", {"amount": 0.5})),
        (("l1_unstructured", {"amount": 0.5}), ("l1_structured", {"amount": 0.5, "dim": 1})),
        (("random_unstructured", {"amount": 0.5, "seed": 1}), ("l1_global", {"amount": 0.5})),
        (("l1_global", {"amount": 0.4}), ("random_structured", {"amount": 0.3, "seed": 2})),
        (("magnitude_threshold", {"threshold": 0.05}), ("ln_structured", {"amount": 0.5, "n": 2})),
    ],
)
def test_a_second_prune_never_revives(
    first: tuple[str, dict[str, Any]],
    second: tuple[str, dict[str, Any]],
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("lenet")
    prunus.prune(model, first[0], **first[1])
    before = {k: v.clone() for k, v in prunus.masks(model).items()}
    report = prunus.prune(model, second[0], **second[1])
    after = prunus.masks(model)
    for name, mask in after.items():
        assert not bool((mask & ~before[name]).any()), name
        assert report[name].newly_pruned == int((before[name] & ~mask).sum())
    assert_masked_zero(model)


def test_a_second_unstructured_prune_counts_against_the_kept_entries(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", include="fc1.weight", amount=0.5)
    report = prunus.prune(model, "l1_unstructured", include="fc1.weight", amount=0.5)
    numel = model.fc1.weight.numel()
    assert report["fc1.weight"].newly_pruned == numel // 4
    assert report["fc1.weight"].pruned == numel // 2 + numel // 4


def test_a_second_structured_prune_counts_against_the_kept_slices(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("mlp")  # fc1: 32 output rows
    prunus.prune(model, "l1_structured", include="fc1.weight", amount=0.5, dim=0)
    prunus.prune(model, "l1_structured", include="fc1.weight", amount=0.5, dim=0)
    rows_kept = int(prunus.masks(model)["fc1.weight"].any(dim=1).sum())
    assert rows_kept == 8


def test_pruning_everything_then_again_is_a_no_op(make_model: Callable[..., nn.Module]) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", amount=1.0)
    report = prunus.prune(model, "l1_unstructured", amount=0.5)
    assert all(p.newly_pruned == 0 for p in report.parameters)
    assert all(not bool(m.any()) for m in prunus.masks(model).values())


# -- remove and restore --------------------------------------------------------------------------------------------


def test_remove_leaves_plain_parameters_with_zeros(
    strategy: str, make_model: Callable[..., nn.Module], snapshot: Callable[[nn.Module], Any]
) -> None:
    model = make_model("lenet")
    dense = snapshot(model)
    prune_half(model, strategy)
    masks = {k: v.clone() for k, v in prunus.masks(model).items()}
    removed = prunus.remove(model)
    assert sorted(removed) == sorted(masks)
    assert not prunus.is_pruned(model)
    for name, mask in masks.items():
        assert bool((model.get_parameter(name)[~mask] == 0).all())
    for module in model.modules():
        assert not any(key.startswith("_prunus") for key in module._buffers)
        assert not any(key.startswith("_prunus") for key in vars(module))
        assert module not in masking._LIVE
    after = snapshot(model)
    for name in after["modules"]:  # the same structure: only parameter values differ
        for key in ("dict_keys", "buffers", "hooks", "non_persistent"):
            if key != "buffers":
                assert after["modules"][name][key] == dense["modules"][name][key]
        assert after["modules"][name]["buffers"].keys() == dense["modules"][name]["buffers"].keys()


def test_after_remove_the_optimizer_no_longer_zeroes(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", amount=0.5)
    prunus.remove(model)
    zeros = (model.fc1.weight == 0).sum()
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), example_input("mlp"), steps=1)
    assert int((model.fc1.weight == 0).sum()) < int(zeros)


def test_restore_gives_back_the_original_state_dict_bit_for_bit(
    strategy: str, make_model: Callable[..., nn.Module], snapshot: Callable[[nn.Module], Any]
) -> None:
    model = make_model("resnet")
    before = snapshot(model)
    prune_half(model, strategy)
    restored = prunus.restore(model)
    assert restored
    assert snapshot(model) == before


def test_restore_after_two_composed_prunes_is_bit_for_bit(
    model_name: str, make_model: Callable[..., nn.Module], snapshot: Callable[[nn.Module], Any]
) -> None:
    model = make_model(model_name)
    with torch.no_grad():  # negative zeros and tiny values must come back exactly too
        first = next(iter(model.parameters()))
        first.view(-1)[0] = -0.0
        first.view(-1)[1] = 1e-40
    before = snapshot(model)
    prunus.prune(model, "l1_structured", amount=0.3, dim=0)
    prunus.prune(model, "l1_unstructured", amount=0.5)
    prunus.prune(model, "random_global", amount=0.2, seed=4)
    prunus.restore(model)
    assert snapshot(model) == before


def test_restore_keeps_trained_values_of_kept_entries(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("mlp")
    original = model.fc1.weight.detach().clone()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    mask = prunus.masks(model)["fc1.weight"].clone()
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), example_input("mlp"))
    trained = model.fc1.weight.detach().clone()
    prunus.restore(model)
    assert torch.equal(model.fc1.weight[~mask], original[~mask])
    assert torch.equal(model.fc1.weight[mask], trained[mask])


def test_restore_without_saved_values_raises_and_changes_nothing(
    make_model: Callable[..., nn.Module], snapshot: Callable[[nn.Module], Any]
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", amount=0.5, restorable=False)
    assert not any(
        key.startswith(masking.VALUES_PREFIX) for m in model.modules() for key in m._buffers
    )
    before = snapshot(model)
    with pytest.raises(prunus.NotPrunedError, match=r"restorable=False.*prunus\.remove"):
        prunus.restore(model)
    assert snapshot(model) == before


def test_restore_raises_when_one_of_several_parameters_is_not_restorable(
    make_model: Callable[..., nn.Module], snapshot: Callable[[nn.Module], Any]
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", include="fc1.weight", amount=0.5)
    prunus.prune(model, "l1_unstructured", include="fc3.weight", amount=0.5, restorable=False)
    before = snapshot(model)
    with pytest.raises(prunus.NotPrunedError, match=r"fc3\.weight"):
        prunus.restore(model)
    assert snapshot(model) == before


def test_a_non_restorable_prune_makes_earlier_values_unrestorable(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", include="fc1.weight", amount=0.3)
    prunus.prune(model, "l1_unstructured", include="fc1.weight", amount=0.3, restorable=False)
    with pytest.raises(prunus.NotPrunedError):
        prunus.restore(model)
    assert prunus.remove(model) == ["fc1.weight"]


@pytest.mark.parametrize("verb", [prunus.remove, prunus.restore])
def test_remove_and_restore_of_an_unpruned_model_raise(
    verb: Callable[[nn.Module], list[str]], make_model: Callable[..., nn.Module]
) -> None:
    with pytest.raises(prunus.NotPrunedError, match="MLP has no pruned parameters"):
        verb(make_model("mlp"))


def test_remove_then_prune_again_starts_from_the_zeros(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", include="fc1.weight", amount=0.5)
    prunus.remove(model)
    report = prunus.prune(model, "l1_unstructured", include="fc1.weight", amount=0.5)
    # The zeros left by remove are the smallest magnitudes, so they are the ones pruned again.
    assert report["fc1.weight"].pruned == model.fc1.weight.numel() // 2
    assert int((model.fc1.weight == 0).sum()) == model.fc1.weight.numel() // 2


def test_custom_mask_is_copied_not_shared(make_model: Callable[..., nn.Module]) -> None:
    model = make_model("mlp")
    mask = torch.ones_like(model.fc1.weight, dtype=torch.bool)
    mask[0] = False
    prunus.prune(model, "custom_mask", masks={"fc1.weight": mask})
    mask[1] = False  # the caller reuses its tensor
    assert bool(prunus.masks(model)["fc1.weight"][1].all())
    prunus.restore(model)
    assert bool((model.fc1.weight[1] != 0).all())


# -- selection --------------------------------------------------------------------------------------------------


def pruned_names(model: nn.Module, **selection: Any) -> list[str]:
    report = prunus.prune(model, "l1_unstructured", amount=0.5, **selection)
    return sorted(p.name for p in report.parameters)


def test_default_selection_is_the_weight_of_linear_and_conv_layers(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("resnet")
    assert pruned_names(model) == [
        "block.conv1.weight",
        "block.conv2.weight",
        "head.weight",
        "stem.weight",
    ]


def test_include_patterns_choose_any_parameter(make_model: Callable[..., nn.Module]) -> None:
    assert pruned_names(
        make_model("resnet"), include=["stem.bias", "head.bias", "block.bn*.weight"]
    ) == [
        "block.bn1.weight",
        "block.bn2.weight",
        "head.bias",
        "stem.bias",
    ]


def test_include_takes_a_single_string(make_model: Callable[..., nn.Module]) -> None:
    assert pruned_names(make_model("mlp"), include="fc2.*") == ["fc2.bias", "fc2.weight"]


def test_exclude_removes_from_the_default_selection(make_model: Callable[..., nn.Module]) -> None:
    assert pruned_names(make_model("mlp"), exclude="fc3.*") == ["fc1.weight", "fc2.weight"]


def test_exclude_removes_from_include(make_model: Callable[..., nn.Module]) -> None:
    assert pruned_names(make_model("mlp"), include="fc*", exclude=["*.bias", "fc1.*"]) == [
        "fc2.weight",
        "fc3.weight",
    ]


def test_filter_fn_chooses_by_module_and_name(make_model: Callable[..., nn.Module]) -> None:
    names = pruned_names(
        make_model("resnet"),
        filter_fn=lambda module, name: isinstance(module, nn.Conv2d) and name.startswith("block."),
    )
    assert names == ["block.conv1.weight", "block.conv2.weight"]


def test_filter_fn_combines_with_include(make_model: Callable[..., nn.Module]) -> None:
    names = pruned_names(
        make_model("mlp"),
        include="*.weight",
        filter_fn=lambda module, name: module.out_features > 10,
    )
    assert names == ["fc1.weight", "fc2.weight"]


def test_select_targets_matches_what_prune_prunes(make_model: Callable[..., nn.Module]) -> None:
    model = make_model("lenet")
    chosen = [name for name, _, _ in prunus.select_targets(model, exclude="conv1.weight")]
    assert chosen == pruned_names(make_model("lenet"), exclude="conv1.weight") == sorted(chosen)


def test_is_pruned_and_masks(make_model: Callable[..., nn.Module]) -> None:
    model = make_model("mlp")
    assert not prunus.is_pruned(model) and prunus.masks(model) == {}
    prunus.prune(model, "l1_unstructured", include="fc2.weight", amount=0.5)
    assert prunus.is_pruned(model)
    assert list(prunus.masks(model)) == ["fc2.weight"]
    assert prunus.is_pruned(model.fc2) and not prunus.is_pruned(model.fc1)


def test_prune_accepts_a_configured_strategy(make_model: Callable[..., nn.Module]) -> None:
    a, b = make_model("mlp"), make_model("mlp")
    prunus.prune(a, prunus.registry.get("l1_structured", amount=0.25, dim=1))
    prunus.prune(b, "l1_structured", amount=0.25, dim=1)
    for name, mask in prunus.masks(a).items():
        assert torch.equal(mask, prunus.masks(b)[name])


def test_prune_keeps_the_parameters_of_a_model_on_its_dtype(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("mlp").double()
    prunus.prune(model, "l1_global", amount=0.5)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    prunus.restore(model)
    reference = make_model("mlp").double()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_half_precision_weights_prune_with_exact_counts() -> None:
    layer = nn.Linear(20, 10).to(torch.bfloat16)
    report = prunus.prune(layer, "l1_unstructured", amount=0.3)
    assert report["weight"].pruned == 60
    assert int((layer.weight == 0).sum()) >= 60


# -- random masks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy_name", ["random_unstructured", "random_structured", "random_global"]
)
def test_same_seed_gives_the_same_random_mask(
    strategy_name: str, make_model: Callable[..., nn.Module]
) -> None:
    a, b = (
        make_model("lenet"),
        make_model("lenet", seed=9),
    )  # different weights: the mask must not depend on them
    prunus.prune(a, strategy_name, amount=0.5, seed=7)
    prunus.prune(b, strategy_name, amount=0.5, seed=7)
    for name, mask in prunus.masks(a).items():
        assert torch.equal(mask, prunus.masks(b)[name])


@pytest.mark.parametrize("strategy_name", ["random_unstructured", "random_global"])
def test_different_seeds_give_different_random_masks(
    strategy_name: str, make_model: Callable[..., nn.Module]
) -> None:
    a, b = make_model("lenet"), make_model("lenet")
    prunus.prune(a, strategy_name, amount=0.5, seed=1)
    prunus.prune(b, strategy_name, amount=0.5, seed=2)
    assert any(
        not torch.equal(mask, prunus.masks(b)[name]) for name, mask in prunus.masks(a).items()
    )


def test_random_pruning_does_not_touch_the_global_rng(make_model: Callable[..., nn.Module]) -> None:
    model = make_model("mlp")
    state = torch.get_rng_state()
    prunus.prune(model, "random_unstructured", amount=0.5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_random_masks_are_the_same_in_another_process(make_model: Callable[..., nn.Module]) -> None:
    code = textwrap.dedent(
        """
        import json, torch, prunus
        torch.manual_seed(1234)  # a different global RNG state than the test process
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Conv1d(4, 6, 3))
        out = {}
        for name in ("random_unstructured", "random_structured", "random_global"):
            m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Conv1d(4, 6, 3))
            prunus.prune(m, name, amount=0.5, seed=11)
            out[name] = {k: v.int().flatten().tolist() for k, v in prunus.masks(m).items()}
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    theirs = json.loads(result.stdout)
    for name, masks in theirs.items():
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Conv1d(4, 6, 3))
        prunus.prune(model, name, amount=0.5, seed=11)
        ours = {k: v.int().flatten().tolist() for k, v in prunus.masks(model).items()}
        assert ours == masks, name


class SharedLayer(nn.Module):
    """The same Linear registered twice: its parameters have two names in the state_dict."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(6, 6)
        self.again = self.first
        self.out = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.again(torch.relu(self.first(x))))


def test_a_shared_module_is_pruned_once() -> None:
    model = SharedLayer()
    report = prunus.prune(model, "l1_unstructured", amount=0.5)
    assert sorted(p.name for p in report.parameters) == ["first.weight", "out.weight"]
    assert int((model.first.weight == 0).sum()) == 18
    assert list(model.state_dict()) == [
        "first.weight",
        "first.bias",
        "again.weight",
        "again.bias",
        "out.weight",
        "out.bias",
    ]


def test_a_shared_module_can_be_chosen_by_its_second_name() -> None:
    model = SharedLayer()
    report = prunus.prune(model, "l1_unstructured", include="again.weight", amount=0.5)
    assert report.pruned == 18
    assert int((model.first.weight == 0).sum()) == 18


def test_structured_pruning_of_one_dimensional_parameters(
    make_model: Callable[..., nn.Module],
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_structured", include="*.bias", amount=0.5)
    report = prunus.prune(model, "l1_structured", include="*.bias", amount=0.5)
    for entry in report.parameters:
        assert entry.pruned == round(0.5 * entry.numel) + round(
            0.5 * (entry.numel - round(0.5 * entry.numel))
        )


def test_ln_unstructured_is_l1_unstructured(make_model: Callable[..., nn.Module]) -> None:
    a, b = make_model("lenet"), make_model("lenet")
    prunus.prune(a, "ln_unstructured", amount=0.4, n=3)
    prunus.prune(b, "l1_unstructured", amount=0.4)
    for name, mask in prunus.masks(a).items():
        assert torch.equal(mask, prunus.masks(b)[name])
