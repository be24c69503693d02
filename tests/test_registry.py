"""The registry: lookups, in-process registration, providers, and registration errors."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from pydantic import Field, StrictInt, ValidationError
from support import plugin, registers
from torch import Tensor, nn

import prunus
from prunus import (
    Criterion,
    Granularity,
    NoOptions,
    PruneContext,
    RegistrationError,
    Registry,
    Strategy,
    StrategyConfig,
    Target,
)


class Squares(Criterion):
    """Scores ``w**2``: the same ranking as ``l1`` for unstructured pruning."""

    name = "squares"
    summary = "w squared"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return target.tensor.square()


class Negated(Criterion):
    """Scores ``-|w|``: keeps the smallest weights, the opposite of ``l1``."""

    name = "l1"
    summary = "negated magnitude"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return -target.tensor.abs()


class KeepAll(Strategy):
    name = "keep_all"
    summary = "prunes nothing"

    def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
        return {t.name: torch.ones_like(t.tensor, dtype=torch.bool) for t in context.targets}


# -- lookups ---------------------------------------------------------------------------------------------------


def test_every_criterion_is_composed_with_every_granularity() -> None:
    reg = prunus.registry
    for criterion in reg.criteria():
        for granularity in reg.granularities():
            name = f"{criterion}_{granularity}"
            assert name in reg
            info = reg.info(name)
            assert info.criterion == criterion and info.granularity == granularity


def test_builtin_criteria_and_granularities() -> None:
    assert {"l1", "ln", "random"} <= set(prunus.registry.criteria())
    assert {"unstructured", "structured", "global"} <= set(prunus.registry.granularities())


def test_names_are_sorted_and_filter_by_glob() -> None:
    names = prunus.registry.names()
    assert names == sorted(names)
    assert prunus.registry.names("l1_*") == [n for n in names if n.startswith("l1_")]
    assert "l1_structured" in prunus.registry.names("*_structured")
    assert prunus.registry.names("nothing*") == []


def test_len_iter_and_contains_agree() -> None:
    reg = prunus.registry
    assert len(reg) == len(reg.names()) == len(list(reg))
    assert list(reg) == reg.names()
    assert "l1_unstructured" in reg and "l1_unstructed" not in reg and 3 not in reg


@pytest.mark.parametrize("name", prunus.registry.names())
def test_info_describes_every_strategy(name: str) -> None:
    info = prunus.registry.info(name)
    assert info.name == name
    assert info.summary
    assert issubclass(info.config, StrategyConfig)
    assert info.provider.plugin
    assert set(info.options()) == set(info.config.model_fields)
    assert all(("required" in text or "default" in text) for text in info.options().values())


@pytest.mark.parametrize("name", prunus.registry.names())
def test_every_strategy_rejects_unknown_options(name: str) -> None:
    with pytest.raises(prunus.ConfigError, match="not_an_option"):
        prunus.registry.get(name, not_an_option=1)


@pytest.mark.parametrize("name", prunus.registry.names())
def test_every_strategy_config_is_frozen(name: str) -> None:
    config = prunus.registry.info(name).config
    assert config.model_config.get("frozen") is True
    assert config.model_config.get("extra") == "forbid"


def test_builtin_providers_are_the_prunus_distribution() -> None:
    for name in ("l1_unstructured", "random_structured", "custom_mask", "global_unstructured"):
        provider = prunus.registry.info(name).provider
        assert provider.distribution == "prunus"
        assert provider.plugin.startswith("prunus.")
    assert prunus.registry.info("ln_global").provider.plugin == "prunus.criteria"


def test_get_builds_a_configured_strategy() -> None:
    strategy = prunus.registry.get("ln_structured", amount=0.25, n=2, dim=1)
    assert isinstance(strategy, Strategy)
    assert strategy.name == "ln_structured"
    assert strategy.options == {"amount": 0.25, "dim": 1, "n": 2}
    assert "ln_structured" in repr(strategy)


def test_random_strategies_say_they_are_not_deterministic() -> None:
    assert not prunus.registry.info("random_unstructured").deterministic
    assert prunus.registry.info("l1_unstructured").deterministic
    assert not prunus.registry.get(
        "global_unstructured", amount=0.5, criterion="random"
    ).deterministic


def test_info_of_a_non_string() -> None:
    with pytest.raises(prunus.UnknownStrategyError, match="must be a str, not int"):
        prunus.registry.info(3)  # type: ignore[arg-type]


def test_unknown_criterion_suggests_close_names() -> None:
    with pytest.raises(prunus.UnknownCriterionError, match=r"Did you mean.*'l1'"):
        prunus.registry.criterion("l2")


# -- private registries and environment switches ----------------------------------------------------------------


def test_a_private_registry_does_not_touch_the_global_one(private_registry: Registry) -> None:
    private_registry.register(Squares)
    assert "squares_unstructured" in private_registry
    assert "squares_unstructured" not in prunus.registry


def test_disabling_a_builtin_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNUS_DISABLED_PLUGINS", "prunus.strategies, prunus.nothing")
    reg = Registry()
    assert "custom_mask" not in reg and "magnitude_threshold" not in reg
    assert "l1_unstructured" in reg
    assert reg.plugin_failures == []


def test_disabling_the_builtin_criteria_leaves_no_composed_strategies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRUNUS_DISABLED_PLUGINS", "prunus.criteria,prunus.sparsegpt")
    monkeypatch.setenv("PRUNUS_DISABLE_PLUGIN_AUTOLOAD", "1")  # installed plugins may add criteria
    reg = Registry()
    assert reg.criteria() == []
    assert all(reg.info(name).criterion is None for name in reg.names())
    assert "l1_unstructured" not in reg


def test_registry_without_autoload_is_empty() -> None:
    reg = Registry(autoload=False)
    assert len(reg) == 0
    with pytest.raises(prunus.UnknownStrategyError, match=r"Available: \(none\)"):
        reg.info("l1_unstructured")


def test_repr_before_and_after_loading() -> None:
    reg = Registry()
    assert "not loaded" in repr(reg)
    reg.names()
    assert "l1_unstructured" in repr(reg)


# -- registering in process --------------------------------------------------------------------------------------


def test_register_a_criterion_composes_it_with_every_granularity(
    private_registry: Registry,
) -> None:
    private_registry.register(Squares)
    for granularity in private_registry.granularities():
        assert f"squares_{granularity}" in private_registry
    model = nn.Linear(6, 4)
    reference = nn.Linear(6, 4)
    reference.load_state_dict(model.state_dict())
    prunus.prune(model, "squares_unstructured", amount=0.5, registry=private_registry)
    prunus.prune(reference, "l1_unstructured", amount=0.5)
    assert torch.equal(prunus.masks(model)["weight"], prunus.masks(reference)["weight"])


def test_register_a_criterion_with_options(private_registry: Registry) -> None:
    class PowerConfig(StrategyConfig):
        p: StrictInt = Field(default=2, ge=1)

    class Power(Criterion):
        name = "power"
        Config = PowerConfig

        def score(self, target: Target, context: PruneContext) -> Tensor:
            assert isinstance(self.config, PowerConfig)
            return target.tensor.abs() ** self.config.p

    private_registry.register(Power)
    assert set(private_registry.info("power_structured").config.model_fields) == {
        "amount",
        "dim",
        "p",
    }
    strategy = private_registry.get("power_structured", amount=0.5, p=3)
    assert strategy.options["p"] == 3
    with pytest.raises(prunus.ConfigError, match="p=0"):
        private_registry.get("power_unstructured", amount=0.5, p=0)


def test_register_a_granularity_composes_it_with_every_criterion(
    private_registry: Registry,
) -> None:
    class FirstRow(Granularity):
        """Prunes the first row of every 2-D parameter, whatever the scores."""

        name = "first_row"
        Config = NoOptions

        def masks(
            self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
        ) -> dict[str, Tensor]:
            out = {}
            for target in context.targets:
                score(target)
                mask = torch.ones_like(target.tensor, dtype=torch.bool)
                mask[0] = False
                out[target.name] = mask
            return out

    private_registry.register(FirstRow)
    assert {f"{c}_first_row" for c in private_registry.criteria()} <= set(private_registry.names())
    model = nn.Linear(5, 3)
    prunus.prune(model, "l1_first_row", registry=private_registry)
    assert not bool(model.weight[0].any()) and bool(model.weight[1:].all())


def test_register_a_strategy(private_registry: Registry) -> None:
    private_registry.register(KeepAll)
    info = private_registry.info("keep_all")
    assert info.provider.plugin == "<user>" and info.criterion is None
    report = prunus.prune(nn.Linear(3, 3), "keep_all", registry=private_registry)
    assert report.pruned == 0


def test_register_plugin_records_its_name_as_provider(private_registry: Registry) -> None:
    name = private_registry.register_plugin(registers(Squares), name="squares-plugin")
    assert name == "squares-plugin"
    assert private_registry.info("squares_global").provider.plugin == "squares-plugin"
    assert private_registry.provider("criterion", "squares").plugin == "squares-plugin"


def test_unregister_plugin_removes_everything_it_registered(private_registry: Registry) -> None:
    before = private_registry.names()
    private_registry.register_plugin(registers(Squares), name="squares-plugin")
    private_registry.unregister_plugin("squares-plugin")
    assert private_registry.names() == before
    assert "squares" not in private_registry.criteria()


def test_unregister_a_criterion_removes_its_strategies(private_registry: Registry) -> None:
    private_registry.register(Squares)
    private_registry.unregister("squares")
    assert not private_registry.names("squares_*")


def test_unregister_a_builtin_strategy(private_registry: Registry) -> None:
    private_registry.unregister("custom_mask")
    assert "custom_mask" not in private_registry
    assert "custom_mask" in prunus.registry


def test_unregister_a_composed_name_is_refused(private_registry: Registry) -> None:
    with pytest.raises(prunus.UnknownStrategyError, match="l1_unstructured"):
        private_registry.unregister("l1_unstructured")
    assert "l1_unstructured" in private_registry


def test_unregister_an_unknown_name(private_registry: Registry) -> None:
    with pytest.raises(prunus.UnknownStrategyError, match="'nope'"):
        private_registry.unregister("nope")


# -- registration errors --------------------------------------------------------------------------------------------


def test_registering_a_taken_criterion_names_both_providers(private_registry: Registry) -> None:
    before = private_registry.names()
    with pytest.raises(RegistrationError) as caught:
        private_registry.register_plugin(registers(Negated), name="shadow")
    message = str(caught.value)
    assert "'l1'" in message and "prunus.criteria" in message and "shadow" in message
    assert "replace=True" in message
    assert private_registry.names() == before
    assert private_registry.provider("criterion", "l1").plugin == "prunus.criteria"


def test_registering_a_taken_strategy_names_both_providers(private_registry: Registry) -> None:
    class Custom(KeepAll):
        name = "custom_mask"

    with pytest.raises(RegistrationError, match=r"(?s)'custom_mask'.*prunus\.strategies.*<user>"):
        private_registry.register(Custom)
    assert private_registry.info("custom_mask").provider.plugin == "prunus.strategies"


def test_a_strategy_that_clashes_with_a_composed_name(private_registry: Registry) -> None:
    class Clash(KeepAll):
        name = "l1_global"

    with pytest.raises(RegistrationError, match="l1_global"):
        private_registry.register(Clash)


def test_a_criterion_whose_composed_name_clashes_with_a_strategy(
    private_registry: Registry,
) -> None:
    class Magnitude(Criterion):
        name = "custom"

        def score(self, target: Target, context: PruneContext) -> Tensor:
            return target.tensor.abs()

    class Mask(Granularity):
        name = "mask"

        def masks(
            self, criterion: Criterion, score: Any, context: PruneContext
        ) -> dict[str, Tensor]:
            return {}

    private_registry.register(
        Mask
    )  # custom_mask would now be composed by any criterion called "custom"
    before = private_registry.names()
    with pytest.raises(RegistrationError, match=r"(?s)'custom_mask'.*rename"):
        private_registry.register(Magnitude)
    assert private_registry.names() == before
    assert "custom" not in private_registry.criteria()


def test_replace_takes_over_a_criterion(private_registry: Registry) -> None:
    private_registry.register(Negated, replace=True)
    assert private_registry.provider("criterion", "l1").plugin == "<user>"
    assert private_registry.info("l1_structured").provider.plugin == "<user>"
    assert prunus.registry.provider("criterion", "l1").plugin == "prunus.criteria"


def test_replace_prunes_the_largest_with_a_negated_criterion(private_registry: Registry) -> None:
    private_registry.register(Negated, replace=True)
    model = nn.Linear(8, 4)
    original = model.weight.detach().clone()
    prunus.prune(model, "l1_unstructured", amount=0.25, registry=private_registry)
    mask = prunus.masks(model)["weight"]
    assert float(original[~mask].abs().min()) >= float(original[mask].abs().max())


def test_replace_takes_over_a_strategy(private_registry: Registry) -> None:
    class Custom(KeepAll):
        name = "custom_mask"

    private_registry.register(Custom, replace=True)
    assert private_registry.info("custom_mask").provider.plugin == "<user>"
    assert prunus.prune(nn.Linear(3, 3), "custom_mask", registry=private_registry).pruned == 0


@pytest.mark.parametrize(
    "thing", [Squares(NoOptions()), "squares", 3, None, types.SimpleNamespace, int]
)
def test_registering_a_non_class_or_unrelated_class(
    thing: object, private_registry: Registry
) -> None:
    before = private_registry.names()
    with pytest.raises(RegistrationError, match="must be a subclass of prunus"):
        private_registry.register(thing)  # type: ignore[arg-type]
    assert private_registry.names() == before


@pytest.mark.parametrize("name", ["", "Squares", "sq-uares", "2squares", "sq uares", None, 3])
def test_registering_a_bad_name(name: object, private_registry: Registry) -> None:
    bad = type("Bad", (Squares,), {"name": name})
    with pytest.raises(RegistrationError, match=r"(?s)Bad.*name.*snake_case"):
        private_registry.register(bad)


def test_registering_a_criterion_without_a_name(private_registry: Registry) -> None:
    class Nameless(Criterion):
        def score(self, target: Target, context: PruneContext) -> Tensor:
            return target.tensor

    with pytest.raises(RegistrationError, match="snake_case"):
        private_registry.register(Nameless)


@pytest.mark.parametrize("config", [dict, None, "options", type("Plain", (), {})])
def test_registering_a_config_that_is_not_a_strategy_config(
    config: object, private_registry: Registry
) -> None:
    bad = type("BadConfig", (Squares,), {"name": "bad_config", "Config": config})
    with pytest.raises(
        RegistrationError, match=r"BadConfig\.Config must subclass prunus\.StrategyConfig"
    ):
        private_registry.register(bad)
    assert "bad_config" not in private_registry.criteria()


def test_registering_a_pydantic_model_that_is_not_a_strategy_config(
    private_registry: Registry,
) -> None:
    from pydantic import BaseModel

    class Loose(BaseModel):
        p: int = 1

    bad = type("LooseConfig", (Squares,), {"name": "loose", "Config": Loose})
    with pytest.raises(RegistrationError, match="StrategyConfig"):
        private_registry.register(bad)


def test_a_criterion_option_that_clashes_with_a_granularity_option(
    private_registry: Registry,
) -> None:
    class AmountConfig(StrategyConfig):
        amount: float = 0.5

    bad = type("Clashing", (Squares,), {"name": "clashing", "Config": AmountConfig})
    before = private_registry.names()
    with pytest.raises(RegistrationError, match=r"(?s)'clashing'.*\['amount'\].*must differ"):
        private_registry.register(bad)
    assert private_registry.names() == before
    assert "clashing" not in private_registry.criteria()


def test_a_plugin_whose_registration_fails_leaves_nothing_behind(
    private_registry: Registry,
) -> None:
    before = private_registry.names()
    bad = type("Bad", (Squares,), {"name": "Bad Name"})
    with pytest.raises(RegistrationError):
        private_registry.register_plugin(registers(Squares, bad), name="half-broken")
    assert private_registry.names() == before
    assert "squares" not in private_registry.criteria()
    # ...and the plugin itself is gone, so the same name can be used again.
    private_registry.register_plugin(registers(Squares), name="half-broken")
    assert "squares_unstructured" in private_registry


def test_register_plugin_twice_is_refused(private_registry: Registry) -> None:
    private_registry.register_plugin(registers(Squares), name="squares-plugin")
    with pytest.raises(RegistrationError, match="already registered"):
        private_registry.register_plugin(
            registers(KeepAll, kind="strategies"), name="squares-plugin"
        )


def test_register_plugin_twice_under_another_name_is_refused(private_registry: Registry) -> None:
    module = registers(Squares)
    private_registry.register_plugin(module, name="first")
    with pytest.raises(RegistrationError, match="'second'"):
        private_registry.register_plugin(module, name="second")
    assert private_registry.provider("criterion", "squares").plugin == "first"


def test_register_plugin_with_an_unknown_hook_is_refused(private_registry: Registry) -> None:
    before = private_registry.names()
    with pytest.raises(RegistrationError, match="prunus_register_criterias"):
        private_registry.register_plugin(
            plugin(prunus_register_criterias=lambda register: None), name="typo"
        )
    assert private_registry.names() == before


def test_register_plugin_with_a_hook_argument_the_spec_lacks_is_refused(
    private_registry: Registry,
) -> None:
    before = private_registry.names()
    with pytest.raises(RegistrationError, match="registrar"):
        private_registry.register_plugin(
            plugin(prunus_register_criteria=lambda registrar: None), name="args"
        )
    assert private_registry.names() == before
    assert "args" not in repr(private_registry)


def test_register_plugin_with_a_disabled_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNUS_DISABLED_PLUGINS", "blocked")
    reg = Registry()
    with pytest.raises(RegistrationError, match=r"(?s)'blocked'.*PRUNUS_DISABLED_PLUGINS"):
        reg.register_plugin(registers(Squares), name="blocked")
    assert "squares" not in reg.criteria()


# -- hooks: a third-party implementation runs before the built-in one ----------------------------------------------


def test_a_score_hook_takes_over_for_the_criteria_it_handles(private_registry: Registry) -> None:
    def prunus_score(criterion: Criterion, target: Target) -> Tensor | None:
        if criterion.name != "l1":
            return None
        return -target.tensor.abs()  # prune the largest instead

    private_registry.register_plugin(plugin(prunus_score=prunus_score), name="scorer")
    model = nn.Linear(8, 4)
    original = model.weight.detach().clone()
    prunus.prune(model, "l1_unstructured", amount=0.5, registry=private_registry)
    mask = prunus.masks(model)["weight"]
    assert float(original[~mask].abs().min()) >= float(original[mask].abs().max())
    other = nn.Linear(8, 4)
    prunus.prune(other, "random_unstructured", amount=0.5, registry=private_registry)
    assert int((~prunus.masks(other)["weight"]).sum()) == 16


def test_an_abstract_criterion_is_refused_at_registration() -> None:
    registry = prunus.Registry()

    class Unfinished(prunus.Criterion):
        name = "unfinished"

    with pytest.raises(prunus.RegistrationError, match="does not implement score"):
        registry.register(Unfinished)
    assert "unfinished" not in registry.criteria()


def test_a_composed_config_runs_its_components_validators() -> None:
    config = prunus.registry.info("ln_structured").config
    with pytest.raises(ValidationError, match="n=nan is not a norm order"):
        config.model_validate({"amount": 0.5, "n": float("nan")})
    assert config.model_validate({"amount": 0.5, "n": 2}).n == 2  # type: ignore[attr-defined]
