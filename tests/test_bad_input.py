"""Bad input: the right typed error, a message that names the offending value and what is valid, and a model
left exactly as it was (compared with ``snapshot``)."""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from support import registers
from torch import Tensor, nn

import prunus
from prunus import (
    ConfigError,
    Criterion,
    MaskError,
    PluginError,
    PruneContext,
    Registry,
    Strategy,
    Target,
    TargetError,
)
from prunus.masking import attach_mask

Snapshot = Callable[[nn.Module], Any]


@pytest.fixture
def model(make_model: Callable[..., nn.Module]) -> Iterator[nn.Module]:
    yield make_model("lenet")


@pytest.fixture
def unchanged(model: nn.Module, snapshot: Snapshot) -> Iterator[nn.Module]:
    """The model, checked after the test to be exactly as it was before."""
    before = snapshot(model)
    yield model
    assert snapshot(model) == before


def raises(error: type[BaseException], *fragments: str) -> Any:
    """``pytest.raises`` that also checks the message contains every fragment (taken literally)."""
    return pytest.raises(error, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


AMOUNT_STRATEGIES = [
    ("l1_unstructured", {}),
    ("random_unstructured", {"seed": 1}),
    ("l1_structured", {"dim": 0}),
    ("ln_structured", {"n": 2, "dim": 1}),
    ("l1_global", {}),
    ("global_unstructured", {}),
]
AMOUNT_IDS = [name for name, _ in AMOUNT_STRATEGIES]


# -- amount ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("strategy", "options"), AMOUNT_STRATEGIES, ids=AMOUNT_IDS)
@pytest.mark.parametrize("amount", [-0.1, 1.5, math.nan, math.inf, -1])
def test_out_of_range_amount(
    strategy: str, options: dict[str, Any], amount: float, unchanged: nn.Module
) -> None:
    valid = "an int count" if isinstance(amount, float) else "a count must be an int >= 0"
    with raises(ConfigError, f"amount={amount!r}", valid):
        prunus.prune(unchanged, strategy, amount=amount, **options)


@pytest.mark.parametrize(("strategy", "options"), AMOUNT_STRATEGIES, ids=AMOUNT_IDS)
@pytest.mark.parametrize("amount", ["0.5", True, None, [0.5], {"fc1": 0.5}])
def test_amount_of_the_wrong_type(
    strategy: str, options: dict[str, Any], amount: object, unchanged: nn.Module
) -> None:
    with raises(ConfigError, repr(amount), "fraction in [0, 1]", "int count"):
        prunus.prune(unchanged, strategy, amount=amount, **options)


def test_amount_errors_are_value_errors(unchanged: nn.Module) -> None:
    with pytest.raises(ValueError):
        prunus.prune(unchanged, "l1_unstructured", amount=2.0)


def test_int_amount_larger_than_a_parameter(unchanged: nn.Module) -> None:
    # conv1.weight has 36 entries; the error is raised before any parameter is changed.
    with raises(
        prunus.AmountError, "amount=37", "'conv1.weight'", "count <= 36", "fraction in [0, 1]"
    ):
        prunus.prune(unchanged, "l1_unstructured", amount=37)


def test_int_amount_larger_than_the_later_of_two_parameters(unchanged: nn.Module) -> None:
    # Fits fc1.weight (6400 entries) but not fc2.weight (320): nothing may be pruned at all.
    with raises(prunus.AmountError, "amount=1000", "'fc2.weight'", "count <= 320"):
        prunus.prune(
            unchanged, "l1_unstructured", include=["fc1.weight", "fc2.weight"], amount=1000
        )


def test_int_amount_larger_than_the_slices(unchanged: nn.Module) -> None:
    with raises(
        prunus.AmountError, "amount=5", "slices of 'conv1.weight' along dim 0", "count <= 4"
    ):
        prunus.prune(unchanged, "l1_structured", amount=5, dim=0)


def test_int_amount_larger_than_all_entries_together(unchanged: nn.Module) -> None:
    total = sum(
        m.weight.numel() for m in unchanged.modules() if isinstance(m, prunus.DEFAULT_LAYERS)
    )
    with raises(prunus.AmountError, f"amount={total + 1}", f"count <= {total}"):
        prunus.prune(unchanged, "global_unstructured", amount=total + 1)


def test_int_amount_larger_than_the_entries_still_kept(
    unchanged: nn.Module, snapshot: Snapshot
) -> None:
    prunus.prune(unchanged, "l1_unstructured", include="conv1.weight", amount=30)
    before = snapshot(unchanged)
    with raises(prunus.AmountError, "amount=7", "still kept", "count <= 6"):
        prunus.prune(unchanged, "l1_unstructured", include="conv1.weight", amount=7)
    assert snapshot(unchanged) == before
    prunus.restore(unchanged)


# -- names and options ----------------------------------------------------------------------------------------


def test_unknown_strategy_suggests_close_names(unchanged: nn.Module) -> None:
    with raises(
        prunus.UnknownStrategyError,
        "'l1_unstructed'",
        "Did you mean",
        "'l1_unstructured'",
        "Available",
    ):
        prunus.prune(unchanged, "l1_unstructed", amount=0.5)


def test_unknown_strategy_is_a_lookup_error(unchanged: nn.Module) -> None:
    with pytest.raises(LookupError):
        prunus.prune(unchanged, "no_such_strategy", amount=0.5)


def test_strategy_of_the_wrong_type(unchanged: nn.Module) -> None:
    with raises(ConfigError, "not int", "registered name"):
        prunus.prune(unchanged, 3)  # type: ignore[arg-type]


def test_options_with_a_configured_strategy(unchanged: nn.Module) -> None:
    strategy = prunus.registry.get("l1_unstructured", amount=0.5)
    with raises(ConfigError, "['amount']", "'l1_unstructured'"):
        prunus.prune(unchanged, strategy, amount=0.3)


def test_misspelled_option(unchanged: nn.Module) -> None:
    with raises(ConfigError, "amout", "unknown option", "valid options: amount"):
        prunus.prune(unchanged, "l1_unstructured", amout=0.5)


def test_missing_option(unchanged: nn.Module) -> None:
    with raises(ConfigError, "amount: required option is missing"):
        prunus.prune(unchanged, "l1_unstructured")


def test_option_of_another_strategy(unchanged: nn.Module) -> None:
    with raises(ConfigError, "dim", "unknown option", "valid options: amount"):
        prunus.prune(unchanged, "l1_unstructured", amount=0.5, dim=0)


@pytest.mark.parametrize("n", [math.nan, "2", None])
def test_bad_norm_order(n: object, unchanged: nn.Module) -> None:
    with raises(ConfigError, "'ln_structured'", repr(n), "valid"):
        prunus.prune(unchanged, "ln_structured", amount=0.5, n=n)


@pytest.mark.parametrize("seed", [-1, 1.5, "1"])
def test_bad_seed(seed: object, unchanged: nn.Module) -> None:
    with raises(ConfigError, "seed", repr(seed)):
        prunus.prune(unchanged, "random_unstructured", amount=0.5, seed=seed)


@pytest.mark.parametrize("threshold", [-0.1, math.inf, math.nan, "0.1"])
def test_bad_threshold(threshold: object, unchanged: nn.Module) -> None:
    with raises(ConfigError, "threshold", repr(threshold)):
        prunus.prune(unchanged, "magnitude_threshold", threshold=threshold)


def test_global_unstructured_with_an_unknown_criterion(unchanged: nn.Module) -> None:
    with raises(prunus.UnknownCriterionError, "'l2'", "l1"):
        prunus.prune(unchanged, "global_unstructured", amount=0.5, criterion="l2")


def test_global_unstructured_with_bad_criterion_options(unchanged: nn.Module) -> None:
    with raises(ConfigError, "sed", "unknown option"):
        prunus.prune(
            unchanged,
            "global_unstructured",
            amount=0.5,
            criterion="random",
            criterion_options={"sed": 1},
        )


@pytest.mark.parametrize("dim", [2, -3, 10])
def test_dim_out_of_range(dim: int, unchanged: nn.Module) -> None:
    with raises(ConfigError, f"dim={dim}", "'fc1.weight'", "(32, 200)", "valid dims are -2 to 1"):
        prunus.prune(unchanged, "l1_structured", include="fc1.weight", amount=0.5, dim=dim)


def test_dim_valid_for_convs_but_not_for_linears(unchanged: nn.Module) -> None:
    # dim=3 fits both conv weights (computed first) but not fc1.weight: nothing may change.
    with raises(ConfigError, "dim=3", "'fc1.weight'", "valid dims are -2 to 1"):
        prunus.prune(unchanged, "l1_structured", amount=0.5, dim=3)


# -- custom masks ------------------------------------------------------------------------------------------------


def test_custom_mask_of_the_wrong_shape(unchanged: nn.Module) -> None:
    mask = torch.ones(4, 9, dtype=torch.bool)
    with raises(MaskError, "'conv1.weight'", "(4, 9)", "(4, 1, 3, 3)"):
        prunus.prune(unchanged, "custom_mask", masks={"conv1.weight": mask})


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64])
def test_custom_mask_of_the_wrong_dtype(dtype: torch.dtype, unchanged: nn.Module) -> None:
    mask = torch.ones(4, 1, 3, 3, dtype=dtype)
    with raises(MaskError, "'conv1.weight'", str(dtype), "torch.bool", "mask.bool()"):
        prunus.prune(unchanged, "custom_mask", masks={"conv1.weight": mask})


def test_custom_mask_for_an_unknown_name(unchanged: nn.Module) -> None:
    mask = torch.ones(4, 1, 3, 3, dtype=torch.bool)
    with raises(MaskError, "'conv3.weight'", "conv1.weight, conv2.weight, fc1.weight, fc2.weight"):
        prunus.prune(unchanged, "custom_mask", masks={"conv3.weight": mask})


def test_custom_mask_for_a_parameter_not_chosen(unchanged: nn.Module) -> None:
    mask = torch.ones(4, dtype=torch.bool)
    with raises(MaskError, "'conv1.bias'", "include=['conv1.bias']"):
        prunus.prune(unchanged, "custom_mask", masks={"conv1.bias": mask})


def test_custom_mask_bad_one_after_a_good_one(unchanged: nn.Module) -> None:
    masks = {
        "conv1.weight": torch.zeros(4, 1, 3, 3, dtype=torch.bool),
        "fc2.weight": torch.zeros(3, 3, dtype=torch.bool),
    }
    with raises(MaskError, "'fc2.weight'", "(3, 3)", "(10, 32)"):
        prunus.prune(unchanged, "custom_mask", masks=masks)


def test_custom_mask_that_is_not_a_tensor(unchanged: nn.Module) -> None:
    with raises(ConfigError, "masks", "Tensor"):
        prunus.prune(unchanged, "custom_mask", masks={"conv1.weight": [[True]]})


# -- targets -------------------------------------------------------------------------------------------------------


def test_include_pattern_that_matches_nothing(unchanged: nn.Module) -> None:
    with raises(
        TargetError, "'fc9.*'", "matches no parameter of LeNet", "conv1.weight", "fc2.bias"
    ):
        prunus.prune(unchanged, "l1_unstructured", include=["conv1.weight", "fc9.*"], amount=0.5)


def test_exclude_pattern_that_matches_nothing(unchanged: nn.Module) -> None:
    with raises(
        TargetError, "'conv1.bias'", "matches none of the parameters chosen", "conv1.weight"
    ):
        prunus.prune(unchanged, "l1_unstructured", exclude="conv1.bias", amount=0.5)


def test_exclude_everything(unchanged: nn.Module) -> None:
    with raises(TargetError, "nothing to prune in LeNet", "no parameter left", "include="):
        prunus.prune(unchanged, "l1_unstructured", exclude="*", amount=0.5)


def test_filter_fn_that_rejects_everything(unchanged: nn.Module) -> None:
    with raises(TargetError, "nothing to prune", "filter_fn"):
        prunus.prune(unchanged, "l1_unstructured", filter_fn=lambda module, name: False, amount=0.5)


@pytest.mark.parametrize("pattern", [3, [None], b"fc1.weight"])
def test_include_that_is_not_a_pattern(pattern: object, unchanged: nn.Module) -> None:
    with raises(TargetError, "include must be a glob pattern", repr(pattern)):
        prunus.prune(unchanged, "l1_unstructured", include=pattern, amount=0.5)


def test_model_with_nothing_to_prune(snapshot: Snapshot) -> None:
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU(), nn.LayerNorm(4))
    before = snapshot(model)
    with raises(
        TargetError,
        "nothing to prune in Sequential",
        "no Linear or Conv layer",
        "0.weight",
        "include=[...]",
    ):
        prunus.prune(model, "l1_unstructured", amount=0.5)
    assert snapshot(model) == before


def test_model_without_parameters() -> None:
    with raises(TargetError, "nothing to prune in ReLU", "(none)"):
        prunus.prune(nn.ReLU(), "l1_unstructured", amount=0.5)


def test_integer_parameter(snapshot: Snapshot) -> None:
    model = nn.Linear(3, 2)
    model.register_parameter(
        "steps", nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)
    )
    before = snapshot(model)
    with raises(TargetError, "'steps'", "torch.int64", "floating-point"):
        prunus.prune(model, "l1_unstructured", include="*", amount=0.5)
    assert snapshot(model) == before


@pytest.mark.parametrize("thing", [torch.zeros(3, 3), {"weight": torch.zeros(3)}, None, "model"])
def test_model_that_is_not_a_module(thing: object) -> None:
    with raises(TargetError, "torch.nn.Module", type(thing).__name__):
        prunus.prune(thing, "l1_unstructured", amount=0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("verb", [prunus.remove, prunus.restore])
def test_remove_and_restore_of_a_non_module(verb: Callable[[Any], Any]) -> None:
    with raises(TargetError, "torch.nn.Module", "Tensor"):
        verb(torch.zeros(3))


# -- misbehaving in-process plugins -----------------------------------------------------------------------------


def criterion_plugin(name: str, score: Callable[[Target], Any]) -> types.ModuleType:
    """A plugin object registering criterion ``name`` that scores with ``score``."""

    class Bad(Criterion):
        def score(self, target: Target, context: PruneContext) -> Tensor:
            return score(target)  # type: ignore[no-any-return]

    Bad.name = name
    return registers(Bad)


def _boom(target: Target) -> Tensor:
    raise RuntimeError(f"cannot score {target.name}")


BAD_CRITERIA: dict[str, tuple[Callable[[Target], Any], type[Exception], tuple[str, ...]]] = {
    "raises": (
        _boom,
        PluginError,
        ("RuntimeError", "cannot score conv1.weight", "from badplugin", "not changed"),
    ),
    "wrong_shape": (
        lambda t: t.tensor.abs().reshape(-1),
        PluginError,
        ("'conv1.weight'", "shape (36,)", "(4, 1, 3, 3)", "every entry"),
    ),
    "nan": (
        lambda t: torch.full_like(t.tensor, math.nan),
        PluginError,
        ("36 scores", "'conv1.weight'", "NaN", "-inf"),
    ),
    "not_a_tensor": (
        lambda t: t.tensor.abs().tolist(),
        PluginError,
        ("returned list", "'conv1.weight'", "torch.Tensor"),
    ),
    "integer": (
        lambda t: torch.ones_like(t.tensor, dtype=torch.int64),
        PluginError,
        ("'conv1.weight'", "torch.int64", "floating point"),
    ),
}


@pytest.mark.parametrize("granularity", ["unstructured", "structured", "global"])
@pytest.mark.parametrize("case", sorted(BAD_CRITERIA))
def test_misbehaving_criterion(
    case: str, granularity: str, private_registry: Registry, unchanged: nn.Module
) -> None:
    score, error, fragments = BAD_CRITERIA[case]
    private_registry.register_plugin(criterion_plugin("bad", score), name="badplugin")
    with raises(error, f"bad_{granularity}", *fragments):
        prunus.prune(unchanged, f"bad_{granularity}", amount=0.5, registry=private_registry)


def test_misbehaving_criterion_on_a_later_parameter(
    private_registry: Registry, unchanged: nn.Module
) -> None:
    def score(target: Target) -> Tensor:
        if target.name == "fc2.weight":
            raise RuntimeError("only fails on the last one")
        return target.tensor.abs()

    private_registry.register_plugin(criterion_plugin("late", score), name="lateplugin")
    for granularity in ("unstructured", "structured", "global"):
        with raises(PluginError, "only fails on the last one", "lateplugin"):
            prunus.prune(unchanged, f"late_{granularity}", amount=0.5, registry=private_registry)


def test_criterion_that_modifies_nothing_but_raises_a_prunus_error_keeps_its_type(
    private_registry: Registry, unchanged: nn.Module
) -> None:
    def score(target: Target) -> Tensor:
        raise MaskError("a plugin's own typed error")

    private_registry.register_plugin(criterion_plugin("typed", score), name="typedplugin")
    with raises(MaskError, "a plugin's own typed error"):
        prunus.prune(unchanged, "typed_unstructured", amount=0.5, registry=private_registry)


def test_errors_of_an_in_process_criterion_name_the_user_as_provider(
    private_registry: Registry, unchanged: nn.Module
) -> None:
    class Explodes(Criterion):
        name = "explodes"

        def score(self, target: Target, context: PruneContext) -> Tensor:
            raise RuntimeError("kaboom")

    private_registry.register(Explodes)
    assert private_registry.info("explodes_structured").provider.plugin == "<user>"
    with pytest.raises(PluginError, match="from <user>") as caught:
        prunus.prune(unchanged, "explodes_structured", amount=0.5, registry=private_registry)
    assert "prunus.granularities" not in str(caught.value)


def strategy_class(name: str, masks: Callable[[PruneContext], Any]) -> type[Strategy]:
    class Custom(Strategy):
        def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
            return masks(context)  # type: ignore[no-any-return]

    Custom.name = name
    return Custom


BAD_STRATEGIES: dict[str, tuple[Callable[[PruneContext], Any], tuple[str, ...]]] = {
    "float_mask": (
        lambda c: {t.name: torch.ones_like(t.tensor) for t in c.targets},
        ("'conv1.weight'", "torch.float32", "torch.bool"),
    ),
    "wrong_shape": (
        lambda c: {t.name: torch.ones(3, dtype=torch.bool) for t in c.targets},
        ("'conv1.weight'", "shape (3,)", "(4, 1, 3, 3)"),
    ),
    "not_a_tensor": (
        lambda c: {c.targets[0].name: [True]},
        ("'conv1.weight'", "is a list", "not a Tensor"),
    ),
    "not_a_dict": (
        lambda c: [torch.ones(1, dtype=torch.bool)],
        ("returned list", "dict of parameter name"),
    ),
    "unknown_name": (
        lambda c: {"fc9.weight": torch.ones(1, dtype=torch.bool)},
        ("'fc9.weight'", "not being pruned", "conv1.weight"),
    ),
    "bad_last": (
        lambda c: {
            t.name: (torch.zeros_like(t.tensor, dtype=torch.bool) if i < 3 else torch.zeros(1))
            for i, t in enumerate(c.targets)
        },
        ("'fc2.weight'",),
    ),
    "raises": (lambda c: 1 / 0, ("ZeroDivisionError", "division by zero", "<user>", "not changed")),
}


@pytest.mark.parametrize("case", sorted(BAD_STRATEGIES))
def test_misbehaving_strategy(case: str, private_registry: Registry, unchanged: nn.Module) -> None:
    masks, fragments = BAD_STRATEGIES[case]
    private_registry.register(strategy_class("bad_masks", masks))
    with raises(PluginError, *fragments):
        prunus.prune(unchanged, "bad_masks", registry=private_registry)


def test_strategy_that_revives_pruned_entries(
    private_registry: Registry, unchanged: nn.Module, snapshot: Snapshot
) -> None:
    prunus.prune(unchanged, "l1_unstructured", amount=0.5)
    before = snapshot(unchanged)
    private_registry.register(
        strategy_class(
            "revives",
            lambda c: {t.name: torch.ones_like(t.tensor, dtype=torch.bool) for t in c.targets},
        )
    )
    with raises(PluginError, "'conv1.weight'", "revives 18 entries", "target.prior"):
        prunus.prune(unchanged, "revives", registry=private_registry)
    assert snapshot(unchanged) == before
    prunus.restore(unchanged)


# -- a mask application that fails part-way ------------------------------------------------------------------------


class FailsOnSecond:
    """A ``prunus_apply_mask`` plugin that applies the first mask (the built-in way) and fails on the second."""

    def __init__(self, error: Exception) -> None:
        self.calls = 0
        self.error = error

    @prunus.hookimpl
    def prunus_apply_mask(
        self, target: Target, mask: Tensor, restorable: bool
    ) -> Callable[[], None]:
        self.calls += 1
        if self.calls == 2:
            raise self.error
        return attach_mask(target.module, target.param_name, mask, restorable=restorable)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RuntimeError("disk full"), PluginError),
        (MaskError("typed"), MaskError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
    ids=["runtime_error", "prunus_error", "keyboard_interrupt"],
)
def test_failing_mask_application_undoes_the_first_target(
    error: BaseException,
    expected: type[BaseException],
    private_registry: Registry,
    unchanged: nn.Module,
) -> None:
    plugin = FailsOnSecond(error)  # type: ignore[arg-type]
    private_registry.register_plugin(plugin, name="fails")
    with pytest.raises(expected) as caught:
        prunus.prune(unchanged, "l1_unstructured", amount=0.5, registry=private_registry)
    assert plugin.calls == 2
    if expected is PluginError:
        assert "disk full" in str(caught.value) and "left as it was" in str(caught.value)


def test_failing_mask_application_on_a_second_prune_restores_the_first_prune(
    private_registry: Registry, model: nn.Module, snapshot: Snapshot
) -> None:
    prunus.prune(model, "l1_unstructured", amount=0.3)
    before = snapshot(model)
    private_registry.register_plugin(FailsOnSecond(RuntimeError("disk full")), name="fails")
    with pytest.raises(PluginError):
        prunus.prune(model, "l1_structured", amount=0.5, registry=private_registry)
    assert snapshot(model) == before
    prunus.restore(model)


def test_failing_mask_application_with_restorable_false(
    private_registry: Registry, model: nn.Module, snapshot: Snapshot
) -> None:
    before = snapshot(model)
    private_registry.register_plugin(FailsOnSecond(RuntimeError("disk full")), name="fails")
    with pytest.raises(PluginError):
        prunus.prune(
            model, "l1_unstructured", amount=0.5, restorable=False, registry=private_registry
        )
    assert snapshot(model) == before


def test_an_unchanged_model_is_still_usable_after_a_failed_prune(unchanged: nn.Module) -> None:
    with pytest.raises(ConfigError):
        prunus.prune(unchanged, "l1_structured", amount=0.5, dim=3)
    assert not prunus.is_pruned(unchanged)
    with pytest.raises(prunus.NotPrunedError):
        prunus.remove(unchanged)


# -- the built-in hook implementations disabled ---------------------------------------------------------------


def test_without_the_default_scorer_a_composed_strategy_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, unchanged: nn.Module
) -> None:
    monkeypatch.setenv("PRUNUS_DISABLED_PLUGINS", "prunus.defaults")
    reg = Registry()
    with raises(PluginError, "no plugin scored", "'conv1.weight'", "prunus.defaults"):
        prunus.prune(unchanged, "l1_unstructured", amount=0.5, registry=reg)


def test_without_the_default_applier_nothing_is_applied(
    monkeypatch: pytest.MonkeyPatch, unchanged: nn.Module
) -> None:
    monkeypatch.setenv("PRUNUS_DISABLED_PLUGINS", "prunus.defaults")
    reg = Registry()
    with raises(PluginError, "no plugin applied the mask", "'conv1.weight'", "prunus.defaults"):
        prunus.prune(unchanged, "magnitude_threshold", threshold=0.1, registry=reg)


class AppliesThenReturnsGarbage:
    """Applies the first mask the built-in way, then returns something that is not an undo function."""

    def __init__(self) -> None:
        self.calls = 0

    @prunus.hookimpl
    def prunus_apply_mask(self, target: Target, mask: Tensor, restorable: bool) -> object:
        self.calls += 1
        if self.calls == 1:
            return attach_mask(target.module, target.param_name, mask, restorable=restorable)
        if self.calls == 2:
            return True  # not callable
        raise AssertionError("never reached")


def test_an_applier_that_returns_no_undo_function(
    private_registry: Registry, model: nn.Module
) -> None:
    private_registry.register_plugin(AppliesThenReturnsGarbage(), name="garbage")
    with raises(PluginError, "'conv2.weight'", "bool", "undo"):
        prunus.prune(model, "l1_unstructured", amount=0.5, registry=private_registry)
    # The first mask (applied the built-in way) was undone.
    assert not prunus.is_pruned(model.conv1)


@pytest.mark.parametrize("option", ["include", "exclude"])
def test_an_empty_pattern_list_is_an_error(option: str, unchanged: nn.Module) -> None:
    with raises(TargetError, f"{option}=[]", "at least one"):
        prunus.prune(unchanged, "l1_unstructured", amount=0.5, **{option: []})
