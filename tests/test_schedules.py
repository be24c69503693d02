"""Schedules as registry entries, and GradualPruner reaching exactly the scheduled sparsity at each step."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from pydantic import Field
from support import pruned_counts, registers
from torch import nn

import prunus
from prunus import ConfigError, GradualPruner, Schedule, StrategyConfig
from prunus.errors import RegistrationError
from prunus.schedules import UnknownScheduleError
from prunus.testing import zoo


def mlp(seed: int = 0) -> nn.Sequential:
    return zoo.mlp((12, 20, 9, 3), seed=seed)


# -- the built-in schedules -------------------------------------------------------------------------------


def test_builtin_schedules_are_registered_by_their_plugin() -> None:
    assert prunus.registry.schedules() == ["cubic", "iterative", "linear", "one_shot"]
    for name in prunus.registry.schedules():
        provider = prunus.registry.provider("schedule", name)
        assert provider.plugin == "prunus.schedules"
        assert provider.distribution == "prunus"


def test_cubic_follows_zhu_and_gupta() -> None:
    s_i, s_f, t0, n, dt = 0.1, 0.9, 10, 5, 20
    schedule = prunus.registry.schedule(
        "cubic", initial_sparsity=s_i, final_sparsity=s_f, start=t0, end=t0 + n * dt, every=dt
    )
    expected = [
        (t, s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3)
        for t in range(t0, t0 + n * dt + 1, dt)
    ]
    assert schedule.steps == [t for t, _ in expected]
    for (_step, value), (_, want) in zip(schedule.points(), expected, strict=True):
        assert value == pytest.approx(want, abs=1e-12)
    assert schedule.final_sparsity == s_f  # exactly, not approximately
    assert schedule.sparsity(t0 - 1) == 0.0
    assert schedule.sparsity(t0 + dt + 3) == schedule.points()[1][1]
    assert schedule.sparsity(10**6) == s_f


def test_linear_and_an_end_that_is_not_a_multiple_of_every() -> None:
    schedule = prunus.registry.schedule("linear", final_sparsity=0.5, end=25, every=10)
    assert schedule.points() == [(0, 0.0), (10, 0.2), (20, 0.4), (25, 0.5)]


def test_iterative_absolute_and_relative() -> None:
    absolute = prunus.registry.schedule("iterative", steps=[[0, 0.5], [100, 0.75], [200, 0.9]])
    assert absolute.points() == [(0, 0.5), (100, 0.75), (200, 0.9)]
    relative = prunus.registry.schedule("iterative", steps=[(0, 0.5), (10, 0.5)], relative=True)
    assert relative.points() == [(0, 0.5), (10, 0.75)]  # like two torch.nn.utils.prune calls


def test_one_shot() -> None:
    assert prunus.registry.schedule("one_shot", sparsity=0.7, step=3).points() == [(3, 0.7)]


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("cubic", {"final_sparsity": 0.9, "end": 10, "evry": 2}, "evry"),
        ("cubic", {"final_sparsity": 1.5, "end": 10}, "final_sparsity"),
        ("cubic", {"final_sparsity": 0.9, "start": 20, "end": 10}, "before start"),
        ("linear", {"final_sparsity": 0.2, "initial_sparsity": 0.5, "end": 10}, "never revived"),
        ("iterative", {"steps": [[0, 0.8], [10, 0.5]]}, "must not decrease"),
        ("iterative", {"steps": [[10, 0.1], [5, 0.5]]}, "strictly increase"),
        ("one_shot", {}, "sparsity"),
    ],
)
def test_bad_schedule_options_name_the_problem(
    name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        prunus.registry.schedule(name, **options)


def test_unknown_schedule_suggests_the_close_name() -> None:
    with pytest.raises(UnknownScheduleError, match="Did you mean 'cubic'"):
        prunus.registry.schedule("cubik")
    with pytest.raises(LookupError):
        prunus.registry.schedule("nope")


# -- third-party schedules --------------------------------------------------------------------------------


class ExponentialConfig(StrategyConfig):
    final_sparsity: float = Field(ge=0, le=1)
    rounds: int = Field(default=3, ge=1)


class Exponential(Schedule):
    """Each round removes the same fraction of what is left."""

    name = "exponential"
    summary = "same fraction of the remaining entries each round"
    Config = ExponentialConfig

    def points(self) -> list[tuple[int, float]]:
        assert isinstance(self.config, ExponentialConfig)
        keep = (1 - self.config.final_sparsity) ** (1 / self.config.rounds)
        return [(r, 1 - keep ** (r + 1)) for r in range(self.config.rounds)]


def test_a_plugin_registers_a_schedule_through_the_hook(private_registry: prunus.Registry) -> None:
    private_registry.register_plugin(registers(Exponential, kind="schedules"), name="acme")
    assert "exponential" in private_registry.schedules()
    assert private_registry.provider("schedule", "exponential").plugin == "acme"
    assert "exponential" not in prunus.registry.schedules()

    model = mlp()
    pruner = GradualPruner(
        model,
        "l1_unstructured",
        schedule="exponential",
        final_sparsity=0.875,
        rounds=3,
        registry=private_registry,
    )
    for step in range(3):
        pruner.step(step)
    assert pruner.sparsity == pytest.approx(0.875, abs=0.01)

    private_registry.unregister_plugin("acme")
    assert "exponential" not in private_registry.schedules()


def test_register_a_schedule_class_directly_and_clashes(private_registry: prunus.Registry) -> None:
    private_registry.register(Exponential)
    assert private_registry.provider("schedule", "exponential").plugin == "<user>"
    with pytest.raises(RegistrationError, match="already registered"):
        private_registry.register(Exponential)
    private_registry.register(Exponential, replace=True)
    private_registry.unregister("exponential")
    assert "exponential" not in private_registry.schedules()


def test_registering_a_non_schedule_as_a_schedule_fails(private_registry: prunus.Registry) -> None:
    with pytest.raises(RegistrationError, match=r"prunus\.Schedule"):
        private_registry.register_plugin(registers(int, kind="schedules"), name="bad")
    assert private_registry.schedules() == prunus.registry.schedules()


def test_a_schedule_that_decreases_is_refused_by_the_pruner() -> None:
    class Down(Schedule):
        name = "down"

        def points(self) -> list[tuple[int, float]]:
            return [(0, 0.5), (1, 0.2)]

    with pytest.raises(prunus.PluginError, match="never revived"):
        GradualPruner(mlp(), "l1_unstructured", schedule=Down(prunus.NoOptions()))


# -- GradualPruner ----------------------------------------------------------------------------------------


def test_unstructured_reaches_the_exact_scheduled_count_in_every_layer_at_every_step() -> None:
    model = mlp()
    pruner = GradualPruner(
        model, "l1_unstructured", schedule="cubic", final_sparsity=0.9, start=0, end=50, every=10
    )
    sizes = {name: model.get_parameter(name).numel() for name in pruner.targets}
    previous: dict[str, torch.Tensor] = {}
    for step in range(60):
        report = pruner.step(step)
        target = pruner.schedule.sparsity(step)
        if step in pruner.schedule.steps and target > 0:
            assert report is not None
        counts = pruned_counts(model)
        for name, size in sizes.items():
            assert counts.get(name, 0) == round(target * size)
        for name, mask in prunus.masks(model).items():  # masks only shrink: nothing is revived
            if name in previous:
                assert not bool((mask & ~previous[name]).any())
            previous[name] = mask.clone()
    assert [h.step for h in pruner.history] == [10, 20, 30, 40, 50]
    assert pruner.history[-1].target == 0.9
    assert pruner.step(60) is None


def test_global_reaches_the_exact_total() -> None:
    model = mlp()
    pruner = GradualPruner(
        model, "l1_global", schedule="linear", final_sparsity=0.8, end=40, every=10
    )
    for step in range(0, 41, 10):
        pruner.step(step)
        assert pruner.pruned == round(pruner.schedule.sparsity(step) * pruner.numel)
    assert pruner.sparsity == pytest.approx(0.8, abs=1 / pruner.numel)


def test_global_unstructured_with_a_criterion_option() -> None:
    model = mlp()
    pruner = GradualPruner(
        model,
        "global_unstructured",
        schedule="one_shot",
        sparsity=0.5,
        strategy_options={"criterion": "random", "criterion_options": {"seed": 3}},
    )
    pruner.step(0)
    assert pruner.pruned == round(0.5 * pruner.numel)


def test_structured_counts_whole_slices() -> None:
    model = mlp()
    pruner = GradualPruner(
        model,
        "l1_structured",
        schedule="iterative",
        steps=[(0, 0.25), (1, 0.5)],
        strategy_options={"dim": 0},
    )
    for step in (0, 1):
        pruner.step(step)
        target = pruner.schedule.sparsity(step)
        for name, mask in prunus.masks(model).items():
            rows_gone = int((~mask.any(dim=1)).sum())
            assert rows_gone == round(target * mask.shape[0]), name


def test_skipped_steps_still_reach_the_target_of_the_last_point() -> None:
    model = mlp()
    pruner = GradualPruner(
        model, "l1_unstructured", schedule="cubic", final_sparsity=0.6, end=100, every=10
    )
    pruner.step(55)  # between points: the target of step 50
    assert pruner.history[-1].target == pruner.schedule.sparsity(50)
    assert pruner.step(57) is None
    pruner.step(1000)
    assert pruner.history[-1].target == 0.6


def test_pruned_weights_stay_zero_through_training() -> None:
    model = mlp()
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    pruner = GradualPruner(
        model, "l1_unstructured", schedule="iterative", steps=[(0, 0.5), (4, 0.8)]
    )
    result = prunus.fine_tune(model, (x, y), epochs=3, batch_size=16, pruner=pruner, lr=1e-2)
    assert result.steps == 12 and len(result.losses) == 3
    assert [h.step for h in result.history] == [0, 4]
    for name, mask in prunus.masks(model).items():
        weight = model.get_parameter(name)
        assert not bool(weight[~mask].any()), name
        assert int((~mask).sum()) == round(0.8 * mask.numel())


def test_fine_tune_refuses_a_schedule_longer_than_the_training() -> None:
    model = mlp()
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    pruner = GradualPruner(model, "l1_unstructured", schedule="linear", final_sparsity=0.5, end=100)
    with pytest.raises(ConfigError, match="end at step 3"):
        prunus.fine_tune(model, (x, y), epochs=1, batch_size=8, pruner=pruner)


def test_fine_tune_takes_batches_and_an_evaluator() -> None:
    model = mlp()
    loader = [(torch.randn(8, 12), torch.randint(0, 3, (8,))) for _ in range(3)]
    result = prunus.fine_tune(model, loader, epochs=2, evaluate=lambda m: 0.5)
    assert result.steps == 6 and result.metrics == [0.5, 0.5]


def test_fine_tune_cosine_schedule_decays_the_learning_rate_to_zero() -> None:
    model = mlp()
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))
    result = prunus.fine_tune(
        model, (x, y), epochs=2, batch_size=8, optimizer=optimizer, lr_schedule="cosine"
    )
    expected = [0.05 * (1 + math.cos(math.pi * t / 8)) for t in range(8)]
    assert result.steps == 8 and seen == pytest.approx(expected)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_fine_tune_cosine_schedule_needs_a_known_length() -> None:
    model = mlp()
    batches = iter([(torch.randn(8, 12), torch.randint(0, 3, (8,)))])
    with pytest.raises(ConfigError, match="no len"):
        prunus.fine_tune(model, batches, lr_schedule="cosine")
    with pytest.raises(ConfigError, match="'constant', 'cosine'"):
        prunus.fine_tune(model, [], lr_schedule="linear")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("magnitude_threshold",), {"final_sparsity": 0.5, "end": 10}, "no 'amount' option"),
        (
            ("l1_unstructured",),
            {"final_sparsity": 0.5, "end": 10, "strategy_options": {"amount": 0.3}},
            "must not hold 'amount'",
        ),
        (
            ("l1_structured",),
            {"final_sparsity": 0.5, "end": 10, "strategy_options": {"dimm": 0}},
            "dimm",
        ),
        (("l1_unstructured",), {"final_sparsity": 0.5}, "end"),
    ],
)
def test_pruner_configuration_errors(
    args: tuple[str], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        GradualPruner(mlp(), *args, **kwargs)


def test_a_built_schedule_takes_no_more_options() -> None:
    schedule = prunus.registry.schedule("one_shot", sparsity=0.5)
    with pytest.raises(ConfigError, match="already built"):
        GradualPruner(mlp(), "l1_unstructured", schedule=schedule, end=3)


def test_include_limits_the_targets() -> None:
    model = mlp()
    pruner = GradualPruner(
        model, "l1_unstructured", schedule="one_shot", sparsity=0.5, include=["0.weight"]
    )
    pruner.step(0)
    assert list(prunus.masks(model)) == ["0.weight"]
    assert "sparsity 50.00%" in repr(pruner)
