"""The conformance kit catches real bugs: deliberately broken strategies, each caught with a pointed message.

Every broken strategy, criterion or granularity below is registered in-process on a private ``Registry()`` (the
global one is never touched) and run through ``prunus.testing.check_strategy``. Each test checks that the kit
fails it, names the property and the strategy, shows the smallest example, and says what is wrong.

The rest covers the kit itself: its Hypothesis strategies, the pytest base class and plugin (two subclasses in
one session, no health-check noise, nothing heavy imported at start-up) and the plugin tutorial, whose code blocks
must equal the files of ``examples/prunus-taylor``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from pydantic import Field, StrictInt
from torch import Tensor, nn

import prunus
from prunus import Amount, Criterion, Granularity, PruneContext, StrategyConfig, Target
from prunus.config import count_to_prune
from prunus.ranking import keep_mask
from prunus.testing import (
    KitFailure,
    KitReport,
    StrategyCase,
    check_property,
    check_strategy,
    property_names,
    resolve_properties,
)
from prunus.testing import strategies as pst
from prunus.testing.subject import Subject

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = 25  # examples per property in these tests: the bugs below are found in far fewer


# -- broken granularities (replacing a built-in on a private registry) --------------------------------------


class AmountOnly(StrategyConfig):
    amount: Amount = Field(description="fraction or count")


class DimConfig(StrategyConfig):
    amount: Amount = Field(description="fraction or count")
    dim: StrictInt = 0


def _unstructured(
    count: Callable[[int | float, int], int], *, reverse: bool = False
) -> type[Granularity]:
    class Broken(Granularity):
        name = "unstructured"
        summary = "deliberately broken"
        Config = AmountOnly

        def masks(
            self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
        ) -> dict[str, Tensor]:
            assert isinstance(self.config, AmountOnly)
            out = {}
            for target in context.targets:
                size = target.tensor.numel() if target.prior is None else int(target.prior.sum())
                scores = score(target)
                out[target.name] = keep_mask(
                    -scores if reverse else scores, count(self.config.amount, size), target.prior
                )
            return out

    return Broken


def truncating_count(amount: int | float, size: int) -> int:
    """Off by one: int() truncates where torch rounds half to even."""
    return amount if isinstance(amount, int) else int(amount * size)


def fraction_count(amount: int | float, size: int) -> int:
    """Treats an int count as a fraction: amount=1 prunes everything."""
    return min(round(float(amount) * size), size)


class WrongDimStructured(Granularity):
    """Prunes whole slices, but along the next dim instead of ``dim``."""

    name = "structured"
    summary = "deliberately broken"
    Config = DimConfig

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, DimConfig)
        out = {}
        for target in context.targets:
            shape = target.tensor.shape
            dim = (self.config.dim + 1) % len(shape)  # the bug
            others = tuple(d for d in range(len(shape)) if d != dim)
            prior = target.prior
            eligible = None if prior is None else prior.any(dim=others) if others else prior
            size = shape[dim] if eligible is None else int(eligible.sum())
            keep = keep_mask(
                criterion.reduce(score(target), others),
                count_to_prune(self.config.amount, size),
                eligible,
            )
            view = [1] * len(shape)
            view[dim] = shape[dim]
            mask = keep.reshape(view).expand(shape).clone()
            out[target.name] = mask if prior is None else mask & prior
        return out


# -- broken whole strategies -------------------------------------------------------------------------------


class Forgetful(prunus.Strategy):
    """Ranks every entry again, ignoring what an earlier prune removed: revives pruned entries."""

    name = "forgetful"
    granularity = "unstructured"
    Config = AmountOnly

    def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountOnly)
        out = {}
        for target in context.targets:
            size = target.tensor.numel()
            out[target.name] = keep_mask(
                target.tensor.abs(), count_to_prune(self.config.amount, size)
            )
        return out


class FloatMask(prunus.Strategy):
    """Returns its keep-masks as 0./1. floats instead of bools."""

    name = "float_mask"
    granularity = "unstructured"
    Config = AmountOnly

    def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountOnly)
        out = {}
        for target in context.targets:
            size = target.tensor.numel() if target.prior is None else int(target.prior.sum())
            keep = keep_mask(
                target.tensor.abs(), count_to_prune(self.config.amount, size), target.prior
            )
            out[target.name] = keep.float()
        return out


# -- broken criteria ---------------------------------------------------------------------------------------


class SeedConfig(StrategyConfig):
    seed: StrictInt = Field(default=0, ge=0)


class GlobalRandom(Criterion):
    """Random scores from torch's global generator: the seed option is ignored."""

    name = "global_random"
    Config = SeedConfig
    deterministic = False

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return torch.rand(target.tensor.shape)


class StuckRandom(Criterion):
    """Random scores from a local generator always seeded 0: the seed option is ignored."""

    name = "stuck_random"
    Config = SeedConfig
    deterministic = False

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return torch.rand(target.tensor.shape, generator=target.generator(0))


class InPlace(Criterion):
    """Scores with ``abs_()``: overwrites the parameter it scores."""

    name = "in_place"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return target.tensor.abs_()


class ThroughNumpy(Criterion):
    """Scores through numpy, which has no bfloat16: crashes on bfloat16 parameters."""

    name = "through_numpy"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return torch.from_numpy(abs(target.tensor.numpy()))


class Flat(Criterion):
    """Returns flat scores instead of scores of the parameter's shape."""

    name = "flat"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return target.tensor.abs().reshape(-1)


# -- the bugs are caught -----------------------------------------------------------------------------------


def registry_with(*classes: type) -> prunus.Registry:
    registry = prunus.Registry()
    for cls in classes:
        registry.register(cls, replace=True)
    return registry


def caught(
    strategy: str, registry: prunus.Registry, *properties: str, examples: int = EXAMPLES
) -> KitFailure:
    """Run the kit (only ``properties``, if given) and return its failure; fail if it passes."""
    with pytest.raises(KitFailure) as info:
        check_strategy(
            strategy,
            registry=registry,
            properties=properties or None,
            max_examples=examples,
            seed=0,
        )
    failure = info.value
    assert isinstance(failure, AssertionError)
    message = str(failure)
    assert f"strategy {strategy!r}" in message
    assert "smallest failing example found:" in message
    return failure


def failed(failure: KitFailure) -> dict[str, str]:
    return {f.name: f.problem for f in failure.failures}


def test_off_by_one_count() -> None:
    failure = caught(
        "l1_unstructured", registry_with(_unstructured(truncating_count)), "exact_count"
    )
    problem = failed(failure)["exact_count"]
    assert re.search(r"pruned \d+, but amount=\S+ \(a fraction\) asks for round\(", problem), (
        problem
    )


def test_int_count_treated_as_a_fraction() -> None:
    failure = caught("l1_unstructured", registry_with(_unstructured(fraction_count)), "exact_count")
    problem = failed(failure)["exact_count"]
    assert "(an int, so a count) asks for" in problem, problem


def test_revives_an_earlier_pruned_entry() -> None:
    failure = caught("forgetful", registry_with(Forgetful), "no_revival")
    problem = failed(failure)["no_revival"]
    assert "revives" in problem and "earlier prune" in problem, problem
    assert "kept by an earlier prune" in str(failure)  # the example shows the earlier mask


def test_float_mask_instead_of_bool() -> None:
    failure = caught("float_mask", registry_with(FloatMask), "mask_shape_and_dtype")
    problem = failed(failure)["mask_shape_and_dtype"]
    assert "dtype torch.float32" in problem and "torch.bool" in problem, problem


def test_structured_along_the_wrong_dim() -> None:
    failure = caught("l1_structured", registry_with(WrongDimStructured), "whole_slices")
    problem = failed(failure)["whole_slices"]
    assert "partly pruned" in problem and "whole slices along dim=" in problem, problem


def test_random_criterion_ignoring_its_seed_for_the_global_generator() -> None:
    failure = caught(
        "global_random_unstructured",
        registry_with(GlobalRandom),
        "global_rng_untouched",
        "same_seed_same_mask",
    )
    problems = failed(failure)
    assert "torch's global random generator" in problems["global_rng_untouched"]
    assert "gave different masks" in problems["same_seed_same_mask"]


def test_random_criterion_ignoring_its_seed_for_a_fixed_one() -> None:
    failure = caught("stuck_random_structured", registry_with(StuckRandom), "seed_changes_mask")
    assert "the seed option is ignored" in failed(failure)["seed_changes_mask"]


def test_mutates_its_input() -> None:
    failure = caught("in_place_unstructured", registry_with(InPlace), "input_unchanged")
    problem = failed(failure)["input_unchanged"]
    assert "were modified" in problem and "abs_()" in problem, problem


def test_crashes_on_bfloat16() -> None:
    failure = caught(
        "through_numpy_unstructured", registry_with(ThroughNumpy), "mask_shape_and_dtype"
    )
    message = str(failure)
    assert "the strategy raised TypeError" in message
    assert "BFloat16" in message  # the error
    assert "bfloat16[" in message  # the example's parameter


def test_scores_of_the_wrong_shape() -> None:
    failure = caught("flat_global", registry_with(Flat), "scores_valid")
    problem = failed(failure)["scores_valid"]
    assert "have shape" in problem and "a criterion scores every entry" in problem, problem


def test_ranks_backwards() -> None:
    broken = _unstructured(lambda amount, size: count_to_prune(amount, size), reverse=True)
    failure = caught("l1_unstructured", registry_with(broken), "criterion_respected")
    problem = failed(failure)["criterion_respected"]
    assert "pruned a unit scored" in problem and "reversed" in problem, problem


def test_every_broken_property_is_listed() -> None:
    """The failure lists every property the bug breaks, each with its own smallest example."""
    failure = caught(
        "float_mask", registry_with(FloatMask), "mask_shape_and_dtype", "no_revival", "exact_count"
    )
    assert set(failed(failure)) == {"mask_shape_and_dtype", "no_revival", "exact_count"}
    assert str(failure).startswith("strategy 'float_mask' breaks 3 properties")


# -- running the kit ---------------------------------------------------------------------------------------


def test_a_correct_strategy_passes_and_reports_what_ran() -> None:
    report = check_strategy("l1_structured", max_examples=5)
    assert isinstance(report, KitReport)
    assert {"exact_count", "whole_slices", "criterion_respected", "prunes_real_modules"} <= set(
        report.passed
    )
    assert "seed_changes_mask" in report.skipped  # l1 is deterministic
    assert "l1_structured:" in str(report)


def test_properties_follow_the_granularity() -> None:
    applicable, skipped = resolve_properties(Subject.resolve("magnitude_threshold"))
    names = {p.name for p in applicable}
    assert "mask_shape_and_dtype" in names and "prunes_real_modules" in names
    assert "exact_count" not in names and "no amount option" in skipped["exact_count"]
    applicable, skipped = resolve_properties(Subject.resolve("custom_mask"))
    assert "config_json_roundtrip" in skipped  # its config holds tensors
    assert set(property_names()) >= {
        "mask_shape_and_dtype",
        "exact_count",
        "whole_slices",
        "criterion_respected",
    }


def test_unknown_property_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="no property named 'exact_cont'"):
        check_strategy("l1_unstructured", properties=["exact_cont"])


def test_check_property_returns_why_it_does_not_apply() -> None:
    assert check_property("l1_unstructured", "whole_slices", max_examples=2) is not None
    assert check_property("l1_structured", "whole_slices", max_examples=2) is None


def test_a_strategy_class_is_checked_on_a_private_registry() -> None:
    with pytest.raises(KitFailure, match="float_mask"):
        check_strategy(FloatMask, properties=["mask_shape_and_dtype"], max_examples=EXAMPLES)
    assert "float_mask" not in prunus.registry


def test_a_case_gives_options_and_data() -> None:
    """A data-aware criterion gets what StrategyCase(data=...) draws, and its options from options=..."""

    class ShiftConfig(StrategyConfig):
        shift: float = Field(default=0.0)

    class DataAware(Criterion):
        name = "data_aware"
        Config = ShiftConfig

        def score(self, target: Target, context: PruneContext) -> Tensor:
            if not isinstance(context.data, dict) or "scale" not in context.data:
                raise prunus.ConfigError("data_aware needs data={'scale': float}")
            assert isinstance(self.config, ShiftConfig)
            return target.tensor.abs() * context.data["scale"] + self.config.shift

    registry = registry_with(DataAware)
    seen: list[Any] = []

    def options(targets: Any, registry: Any) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"shift": st.floats(-1, 1)})

    def data(targets: Any) -> st.SearchStrategy[Any]:
        return st.builds(lambda s: seen.append(s) or {"scale": s}, st.floats(0.5, 2))

    case = StrategyCase("data_aware_unstructured", options=options, data=data)
    report = check_strategy(case, registry=registry, max_examples=5, skip=["prunes_real_modules"])
    assert "exact_count" in report.passed and seen
    with pytest.raises(KitFailure, match="data_aware needs data"):
        check_strategy(
            "data_aware_unstructured", registry=registry, properties=["exact_count"], max_examples=5
        )


def test_the_failure_example_is_readable() -> None:
    failure = caught("float_mask", registry_with(FloatMask), "mask_shape_and_dtype")
    example = failure.failures[0].example
    assert example.startswith("options: {'amount':")
    assert re.search(r"p0\.weight: (float32|float64|float16|bfloat16)\[[\dx]+\] = \[", example)
    assert "properties=['mask_shape_and_dtype'])" in str(failure)  # how to rerun it alone
    assert "rerun: prunus.testing.check_strategy(<the same strategy case>" in str(failure)


# -- the Hypothesis strategies -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(pst.tensors())
def test_tensors_are_finite_floats_of_one_to_four_dims(tensor: Tensor) -> None:
    assert 1 <= tensor.dim() <= 4
    assert tensor.dtype in pst.DTYPES
    assert bool(torch.isfinite(tensor).all())
    assert tensor.numel() <= 24


@settings(max_examples=40, deadline=None)
@given(pst.tensors(dtypes=[torch.float16], shape=(3, 4)))
def test_tensors_take_a_shape_and_dtype(tensor: Tensor) -> None:
    assert tensor.shape == (3, 4) and tensor.dtype == torch.float16


def test_tensors_reach_ties_zeros_negatives_and_extremes() -> None:
    seen = {"tie": False, "zero": False, "negative": False, "huge": False, "tiny": False}

    @settings(max_examples=200, deadline=None, database=None)
    @given(pst.tensors(dtypes=[torch.float32]))
    def look(tensor: Tensor) -> None:
        values = tensor.reshape(-1).tolist()
        seen["tie"] |= len(set(values)) < len(values)
        seen["zero"] |= 0.0 in values
        seen["negative"] |= any(v < 0 for v in values)
        seen["huge"] |= any(abs(v) > 1e30 for v in values)
        seen["tiny"] |= any(0 < abs(v) < 1e-30 for v in values)

    look()
    assert all(seen.values()), seen


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 20).flatmap(lambda n: st.tuples(st.just(n), pst.amounts(max_count=n))))
def test_amounts_are_valid_fractions_and_counts(drawn: tuple[int, int | float]) -> None:
    size, amount = drawn
    if isinstance(amount, int):
        assert 0 <= amount <= size
    else:
        assert 0.0 <= amount <= 1.0
    assert 0 <= count_to_prune(amount, size) <= size


@settings(max_examples=30, deadline=None)
@given(pst.models(dtypes=pst.DTYPES))
def test_models_are_real_and_run(drawn: tuple[nn.Module, Tensor]) -> None:
    model, inputs = drawn
    with torch.no_grad():
        out = model(inputs)
    assert out.dtype == inputs.dtype
    assert list(model.parameters())


@settings(max_examples=20, deadline=None)
@given(prunus.testing.configs("ln_structured"))
def test_configs_are_drawn_from_the_pydantic_model(config: prunus.StrategyConfig) -> None:
    assert isinstance(config, prunus.registry.info("ln_structured").config)
    assert config.dim in (-1, 0)  # valid for any parameter without targets


@pytest.mark.parametrize(
    "make",
    [
        lambda: pst.tensors(dtypes=[]),
        lambda: pst.tensors(dtypes=[torch.int64]),
        lambda: pst.tensors(dtypes=torch.float32),
        lambda: pst.shapes(min_dims=3, max_dims=2),
        lambda: pst.shapes(max_numel=-1),
        lambda: pst.amounts(max_count=-1),
        lambda: pst.amounts(fractions=False),
        lambda: pst.amounts(max_count=1.5),
        lambda: pst.models(kinds=["transformer"]),
        lambda: pst.models(kinds="linear"),
        lambda: pst.config_options(dict),
    ],
)
def test_bad_options_raise_invalid_argument(make: Callable[[], Any]) -> None:
    with pytest.raises(InvalidArgument):
        make().example()


def test_importing_prunus_imports_neither_hypothesis_nor_pytest() -> None:
    code = (
        "import sys, prunus; prunus.registry.names(); "
        "assert 'hypothesis' not in sys.modules and 'pytest' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_pytest_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys; import prunus.testing.pytest_plugin; "
        "heavy = {'hypothesis', 'prunus.testing.check', 'prunus.testing.properties'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the pytest form ---------------------------------------------------------------------------------------


def test_two_subclasses_in_one_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_two=textwrap.dedent(
            """
            import pytest
            from prunus.testing import StrategyTests

            pytest_plugins = ["prunus.testing.pytest_plugin"]


            class TestMagnitude(StrategyTests):
                @pytest.fixture(scope="class", params=["l1_unstructured", "ln_structured"])
                @classmethod
                def prunus_strategy(cls, request):
                    return request.param


            class TestMasks(StrategyTests):
                @pytest.fixture(scope="class", params=["custom_mask"])
                @classmethod
                def prunus_strategy(cls, request):
                    return request.param
            """
        )
    )
    result = pytester.runpytest(
        "-p",
        "prunus.testing.pytest_plugin",
        "--prunus-max-examples=3",
        "-W",
        "error",
        "-p",
        "no:cacheprovider",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, outcomes
    assert outcomes["passed"] >= 30  # the properties of three strategies in two classes
    result.stdout.no_fnmatch_line("*HealthCheck*")


def test_a_subclass_must_name_its_strategies(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_unnamed=textwrap.dedent(
            """
            from prunus.testing import StrategyTests

            pytest_plugins = ["prunus.testing.pytest_plugin"]


            class TestNothing(StrategyTests):
                pass
            """
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "mask_shape")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*name the strategies to test*"])


def test_prunus_check_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fixture=textwrap.dedent(
            """
            pytest_plugins = ["prunus.testing.pytest_plugin"]


            def test_it(prunus_check, prunus_max_examples):
                assert prunus_max_examples == 2
                report = prunus_check("random_unstructured", properties=["same_seed_same_mask"])
                assert report.passed == ("same_seed_same_mask",)
            """
        )
    )
    pytester.runpytest(
        "-p", "prunus.testing.pytest_plugin", "-p", "no:cacheprovider", "--prunus-max-examples=2"
    ).assert_outcomes(passed=1)


def test_max_examples_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the plugin enabled in a test module (too late for command-line options), use the variable."""
    monkeypatch.setenv("PRUNUS_TESTING_MAX_EXAMPLES", "4")
    pytester.makepyfile(
        test_env=textwrap.dedent(
            """
            pytest_plugins = ["prunus.testing.pytest_plugin"]


            def test_it(prunus_max_examples):
                assert prunus_max_examples == 4
            """
        )
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


# -- the plugin tutorial quotes the example package --------------------------------------------------------


TUTORIAL = ROOT / "docs" / "tutorial-plugin.md"
PACKAGE = ROOT / "examples" / "prunus-taylor"
FENCE = re.compile(
    r'^(?P<fence>`{3,})[a-z]* title="(?P<path>[^"]+)"\n(?P<body>.*?)^(?P=fence)$',
    re.MULTILINE | re.DOTALL,
)
LISTING = re.compile(
    r"^```console\n\$ prunus list 'taylor_\*'\n(?P<output>.*?)^```$", re.MULTILINE | re.DOTALL
)


def test_the_tutorial_quotes_every_file_of_the_example_package() -> None:
    text = TUTORIAL.read_text()
    quoted = {match["path"]: match["body"] for match in FENCE.finditer(text)}
    built = {"__pycache__", "build", "dist", ".pytest_cache", ".hypothesis"}
    files = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*")
        if path.is_file()
        and not built & set(path.relative_to(PACKAGE).parts)
        and not any(part.endswith(".egg-info") for part in path.parts)
    }
    assert set(quoted) == files
    for path, body in quoted.items():
        assert body == (PACKAGE / path).read_text(), (
            f"the tutorial's {path} differs from the package's"
        )


def test_the_tutorial_shows_what_prunus_list_prints() -> None:
    pytest.importorskip(
        "prunus_taylor", reason="install examples/prunus-taylor to compare the listing"
    )
    match = LISTING.search(TUTORIAL.read_text())
    assert match is not None
    # This suite keeps installed plugins out of its own process (conftest.py): ask a child process that loads them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNUS_")}
    code = "from prunus.cli import main; main(['list', 'taylor_*'])"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert match["output"] == result.stdout


def test_tutorial_mentions_the_commands_it_walks_through() -> None:
    text = TUTORIAL.read_text()
    for command in (
        "pip install -c constraints.txt --no-build-isolation examples/prunus-taylor",
        "prunus list",
        "pytest examples/prunus-taylor/tests",
    ):
        assert command in text, command
