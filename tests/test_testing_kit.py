"""The conformance kit itself: how it runs, reports and draws (the bugs it catches: tests/test_kit_bugs.py).

How a run reports (one failure per bug, the options the check used, hints that point the right way), that it is
reproducible and follows ``PRUNUS_TESTING_MAX_EXAMPLES``, that a granularity that declares nothing never passes,
that a correct third-party granularity passes on its declaration alone; the kit's Hypothesis generators; the
pytest base class and plugin (two subclasses in one session, no health-check noise, nothing heavy imported at
start-up); and the plugin tutorial, whose code blocks must equal the files of the example packages.
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
from kit_bugs import (
    AcmeRows,
    AmountOnly,
    Entries,
    InputScale,
    KeepsOneAtFull,
    LeavesHooks,
    Magnitude,
    Reversed,
    ThroughNumpy,
    TrainModeForward,
    _plugin,
)
from pydantic import Field
from torch import Tensor, nn

import prunus
from prunus import Criterion, Granularity, PruneContext, StrategyConfig, Target
from prunus.config import count_to_prune
from prunus.ranking import keep_mask
from prunus.testing import (
    KitFailure,
    KitReport,
    StrategyCase,
    check_property,
    check_strategy,
    default_max_examples,
    property_names,
    resolve_properties,
)
from prunus.testing import generators as pst
from prunus.testing.subject import Subject

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = 25  # examples per property in these tests


def registry_with(*classes: type) -> prunus.Registry:
    registry = prunus.Registry()
    for cls in classes:
        registry.register(cls, replace=True)
    return registry


def caught(strategy: str, registry: prunus.Registry, *properties: str) -> KitFailure:
    """Run the kit (only ``properties``, if given) and return its failure; fail if it passes."""
    with pytest.raises(KitFailure) as info:
        check_strategy(
            strategy, registry=registry, properties=properties or None, max_examples=EXAMPLES
        )
    failure = info.value
    assert isinstance(failure, AssertionError)
    assert f"strategy {strategy!r}" in str(failure)
    assert "smallest failing example found:" in str(failure)
    return failure


def failed(failure: KitFailure) -> dict[str, str]:
    return {f.name: f.problem for f in failure.failures}


class FloatMask(prunus.Strategy):
    """A whole strategy that returns its keep-masks as 0./1. floats instead of bools."""

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


class Undeclared(Granularity):
    """A correct per-parameter granularity that declares nothing of what it does."""

    name = "undeclared"
    summary = "prunes the lowest-scored entries, and declares nothing"
    Config = AmountOnly

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountOnly)
        out = {}
        for target in context.targets:
            size = target.tensor.numel() if target.prior is None else int(target.prior.sum())
            k = count_to_prune(self.config.amount, size)
            out[target.name] = keep_mask(score(target), k, target.prior)
        return out


def third_party(*granularities: type, criteria: tuple[type, ...] = ()) -> prunus.Registry:
    registry = prunus.Registry()
    registry.register_plugin(
        _plugin(granularities=list(granularities), criteria=list(criteria)), name="acme"
    )
    return registry


# -- granularities: declared or failed ------------------------------------------------------------------------


def test_a_granularity_that_declares_nothing_fails_saying_what_to_declare() -> None:
    failure = caught("l1_undeclared", third_party(Undeclared))
    assert [f.name for f in failure.failures] == ["granularity_declared"]  # reported once
    reported = failure.failures[0]
    assert (
        "declares no partition: implement partition(self, target) -> Partition" in reported.problem
    )
    assert "prune_counts" in reported.problem
    assert {"exact_count", "whole_units", "criterion_respected"} <= set(reported.also)


def test_a_correct_third_party_granularity_passes_on_its_declaration() -> None:
    report = check_strategy("l1_acme_rows", registry=third_party(AcmeRows), max_examples=10)
    assert {
        "granularity_declared",
        "exact_count",
        "whole_units",
        "criterion_respected",
        "signed_scores_ranked",
        "monotonic_in_amount",
    } <= set(report.passed)
    assert "declared_as_documented" in report.skipped  # only built-ins have documented rules


def test_a_strategy_naming_no_registered_granularity_skips_the_group_properties() -> None:
    _, skipped = resolve_properties(Subject.resolve("custom_mask"))
    assert "not a registered granularity" in skipped["exact_count"]
    _, skipped = resolve_properties(Subject.resolve("magnitude_threshold"))
    assert "has none of its options ['amount']" in skipped["exact_count"]


# -- how failures are reported ----------------------------------------------------------------------------------


def test_one_failure_is_reported_once_under_the_first_property() -> None:
    failure = caught(
        "float_mask",
        registry_with(FloatMask),
        "mask_shape_and_dtype",
        "no_revival",
        "exact_count",
    )
    assert [f.name for f in failure.failures] == ["mask_shape_and_dtype"]
    assert set(failure.failures[0].also) == {"no_revival", "exact_count"}
    message = str(failure)
    assert message.startswith("strategy 'float_mask' breaks 3 properties")
    assert message.count("smallest failing example found:") == 1
    assert "the same failure also breaks: no_revival, exact_count (reported once, here)" in message


def test_a_crash_is_reported_once() -> None:
    registry = registry_with(ThroughNumpy)
    properties = [
        "mask_shape_and_dtype",
        "scores_valid",
        "no_revival",
        "exact_count",
        "prunes_real_modules",
    ]
    with pytest.raises(KitFailure) as info:
        check_strategy(
            "through_numpy_unstructured", registry=registry, properties=properties, max_examples=10
        )
    crashes = [f for f in info.value.failures if "raised TypeError" in f.problem]
    assert len(crashes) == 1, [f.name for f in info.value.failures]
    # The same crash under every property (prune wraps it in a PluginError), reported once.
    assert {crashes[0].name, *crashes[0].also} == set(properties)
    assert "bfloat16[" in crashes[0].example


def test_the_example_shows_the_options_the_check_used() -> None:
    failure = caught("l1_unstructured", registry_with(KeepsOneAtFull), "amount_one_prunes_all")
    reported = failure.failures[0]
    assert "amount=1.0 kept 1 entries" in reported.problem
    assert reported.example.startswith("options: {'amount': 1.0}")  # not the drawn amount


def test_the_failure_example_is_readable() -> None:
    failure = caught("float_mask", registry_with(FloatMask), "mask_shape_and_dtype")
    example = failure.failures[0].example
    assert example.startswith("options: {'amount':")
    assert re.search(
        r"p0\.(weight|bias) \([\w, =]+\): (float32|float64|float16|bfloat16)\[[\dx]+\] = \[",
        example,
    )
    assert "properties=['mask_shape_and_dtype'])" in str(failure)  # how to rerun it alone
    assert "rerun: prunus.testing.check_strategy(<the same strategy case>" in str(failure)


def test_hints_point_where_the_evidence_points() -> None:
    reversed_ = failed(caught("l1_unstructured", registry_with(Reversed), "criterion_respected"))
    assert "the ranking is reversed" in reversed_["criterion_respected"]
    assert "|score|" not in reversed_["criterion_respected"]
    magnitude = failed(caught("l1_unstructured", registry_with(Magnitude), "signed_scores_ranked"))
    assert "|score|" in magnitude["signed_scores_ranked"]


def test_a_flaky_failure_does_not_claim_a_seed() -> None:
    class Alternating(Entries):
        """Reverses its ranking on every other call: state kept between calls."""

        calls = 0

        def prepare(self, scores: Tensor, target: Target) -> Tensor:
            type(self).calls += 1
            return -scores if type(self).calls % 3 == 0 else scores

    with pytest.raises(KitFailure) as info:
        check_strategy(
            "l1_unstructured",
            registry=registry_with(Alternating),
            properties=["criterion_respected", "same_seed_same_mask"],
            max_examples=10,
        )
    message = str(info.value)
    assert "not deterministic" not in message
    if any(f.flaky for f in info.value.failures):
        assert "depends on something besides the example" in message


# -- running the kit ---------------------------------------------------------------------------------------


def test_a_correct_strategy_passes_and_reports_what_ran() -> None:
    report = check_strategy("l1_structured", max_examples=5)
    assert isinstance(report, KitReport)
    assert {"exact_count", "whole_units", "criterion_respected", "prunes_real_modules"} <= set(
        report.passed
    )
    assert "seed_changes_mask" in report.skipped  # l1 is deterministic
    assert "l1_structured:" in str(report)


def test_runs_are_reproducible() -> None:
    registry = registry_with(KeepsOneAtFull)

    def message() -> str:
        with pytest.raises(KitFailure) as info:
            check_strategy(
                "l1_unstructured", registry=registry, properties=["amount_one_prunes_all"]
            )
        return str(info.value)

    assert message() == message()


def test_max_examples_from_the_environment_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    class Counting(Entries):
        def prepare(self, scores: Tensor, target: Target) -> Tensor:
            seen.append(1)
            return scores

    registry = registry_with(Counting)
    monkeypatch.setenv("PRUNUS_TESTING_MAX_EXAMPLES", "3")
    assert default_max_examples() == 3
    check_strategy("l1_unstructured", registry=registry, properties=["mask_shape_and_dtype"])
    assert 0 < len(seen) <= 3 * 3  # three examples, each a few parameters
    monkeypatch.setenv("PRUNUS_TESTING_MAX_EXAMPLES", "many")
    with pytest.raises(prunus.ConfigError, match="PRUNUS_TESTING_MAX_EXAMPLES='many'"):
        default_max_examples()


def test_properties_follow_the_strategy() -> None:
    applicable, skipped = resolve_properties(Subject.resolve("magnitude_threshold"))
    names = {p.name for p in applicable}
    assert "mask_shape_and_dtype" in names and "prunes_real_modules" in names
    assert (
        "amount_zero_keeps_all" not in names
        and "no amount option" in skipped["amount_zero_keeps_all"]
    )
    applicable, skipped = resolve_properties(Subject.resolve("custom_mask"))
    assert "config_json_roundtrip" in skipped  # its config holds tensors
    assert set(property_names()) >= {
        "mask_shape_and_dtype",
        "granularity_declared",
        "exact_count",
        "whole_units",
        "criterion_respected",
        "signed_scores_ranked",
        "declared_deterministic",
        "repeated_calls",
        "declared_as_documented",
    }


def test_unknown_property_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="no property named 'exact_cont'"):
        check_strategy("l1_unstructured", properties=["exact_cont"])


def test_check_property_returns_why_it_does_not_apply() -> None:
    assert check_property("custom_mask", "whole_units", max_examples=2) is not None
    assert check_property("l1_structured", "whole_units", max_examples=2) is None


def test_a_strategy_class_is_checked_on_a_private_registry() -> None:
    with pytest.raises(KitFailure, match="float_mask"):
        check_strategy(FloatMask, properties=["mask_shape_and_dtype"], max_examples=EXAMPLES)
    assert "float_mask" not in prunus.registry


def test_a_case_gives_options_and_data() -> None:
    """A criterion that reads ``data=`` gets what StrategyCase(data=...) draws, its options from options=..."""

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


def test_a_criterion_that_runs_the_model_gets_a_calibration_batch_on_drawn_parameters_too() -> None:
    """With inputs=True, the drawn parameters' layers run side by side on a batch each (prunus.call_model)."""
    seen: list[tuple[int, ...]] = []

    class Recording(InputScale):
        name = "recording"

        def forward(self, context: PruneContext) -> None:
            if isinstance(
                context.data, tuple
            ):  # drawn parameters (a real model gets its own batch)
                seen.extend(tuple(x.shape) for x in context.data if x is not None)
            super().forward(context)

    registry = registry_with(Recording)
    case = StrategyCase("recording_unstructured", inputs=True)
    report = check_strategy(
        case,
        registry=registry,
        properties=["input_unchanged", "exact_count", "calibration_leaves_model_alone"],
        max_examples=10,
    )
    assert set(report.passed) == {
        "input_unchanged",
        "exact_count",
        "calibration_leaves_model_alone",
    }
    assert seen and all(shape[0] == 4 for shape in seen)
    # Without inputs=True the property does not apply, and says how to make it apply.
    with_reason = check_strategy(
        "recording_unstructured", registry=registry, properties=["calibration_leaves_model_alone"]
    )
    assert "inputs=True" in with_reason.skipped["calibration_leaves_model_alone"]


def test_the_side_effects_of_a_calibration_forward_are_named() -> None:
    for broken, words in [
        (TrainModeForward, "running statistics"),
        (LeavesHooks, "hooks were left"),
    ]:
        registry = registry_with(broken)
        with pytest.raises(KitFailure, match=words):
            check_strategy(
                StrategyCase(f"{broken.name}_unstructured", inputs=True),
                registry=registry,
                properties=["calibration_leaves_model_alone"],
            )


# -- the Hypothesis strategies -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(pst.tensors())
def test_tensors_are_finite_floats_of_one_to_five_dims(tensor: Tensor) -> None:
    assert 1 <= tensor.dim() <= 5
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


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_holders_are_real_layers(data: st.DataObject) -> None:
    values = data.draw(pst.tensors())
    holder = data.draw(pst.holders(shape=values.shape))
    module = holder.build(values)
    assert getattr(module, holder.param_name) is not None
    assert torch.equal(getattr(module, holder.param_name).detach(), values)
    if values.dim() >= 3:
        assert isinstance(module, nn.modules.conv._ConvNd)
        assert module.groups == holder.groups
    assert all(p.device.type == "cpu" for p in module.parameters())
    assert holder.build(values) is not module  # a fresh module every time


def test_holders_cover_transposed_and_grouped_convolutions() -> None:
    seen = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(pst.holders(shape=(4, 2, 3, 1, 2)))
    def look(holder: pst.Holder) -> None:
        module = holder.build(torch.zeros(4, 2, 3, 1, 2))
        seen.add((type(module).__name__, module.groups))

    look()
    assert {("Conv3d", 1), ("ConvTranspose3d", 1), ("Conv3d", 2), ("ConvTranspose3d", 2)} <= seen


def test_scores_are_signed_tied_and_infinite() -> None:
    seen = {"negative": False, "inf": False, "-inf": False, "zero": False, "tie": False}

    @settings(max_examples=100, deadline=None, database=None)
    @given(pst.scores(shape=(6,)))
    def look(scores: Tensor) -> None:
        values = scores.tolist()
        assert not any(v != v for v in values)  # never NaN
        assert not ({float("inf"), float("-inf")} <= set(values))  # infinities of one sign
        seen["negative"] |= any(-10 < v < 0 for v in values)
        seen["inf"] |= float("inf") in values
        seen["-inf"] |= float("-inf") in values
        seen["zero"] |= 0.0 in values
        seen["tie"] |= len(set(values)) < len(values)

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


def test_a_failure_shared_by_many_tests_is_reported_in_full_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_crash=textwrap.dedent(
            """
            import pytest
            import prunus
            from prunus import Criterion
            from prunus.testing import StrategyTests

            pytest_plugins = ["prunus.testing.pytest_plugin"]


            class Crashing(Criterion):
                name = "crashing"

                def score(self, target, context):
                    raise RuntimeError("the scorer crashed")


            class TestCrashing(StrategyTests):
                @pytest.fixture(scope="class")
                @classmethod
                def prunus_registry(cls):
                    registry = prunus.Registry()
                    registry.register(Crashing)
                    return registry

                @pytest.fixture(scope="class", params=["crashing_unstructured"])
                @classmethod
                def prunus_strategy(cls, request):
                    return request.param
            """
        )
    )
    # In a process of its own: what earlier tests of this session imported or registered stays out of it.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--prunus-max-examples=3", "-p", "prunus.testing.pytest_plugin"
    )
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] >= 8
    # The failures as reported, without pytest's closing summary (which under CI=true repeats messages whole).
    output = result.stdout.str().split("short test summary info")[0]
    assert output.count("smallest failing example found:") == 1
    assert "with the failure test_mask_shape_and_dtype reports in full" in output


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
EXAMPLES_DIR = ROOT / "examples"
PACKAGES = sorted(path.parent.name for path in EXAMPLES_DIR.glob("prunus-*/pyproject.toml"))
FENCE = re.compile(
    r'^(?P<fence>`{3,})[a-z]* title="(?P<path>[^"]+)"\n(?P<body>.*?)^(?P=fence)$',
    re.MULTILINE | re.DOTALL,
)
LISTING = re.compile(
    r"^```console\n\$ prunus list 'taylor_\*'\n(?P<output>.*?)^```$", re.MULTILINE | re.DOTALL
)
BUILT = {"__pycache__", "build", "dist", ".pytest_cache", ".hypothesis"}


def _files(package: str) -> set[str]:
    root = EXAMPLES_DIR / package
    return {
        f"{package}/{path.relative_to(root)}"
        for path in root.rglob("*")
        if path.is_file()
        and not BUILT & set(path.relative_to(root).parts)
        and not any(part.endswith(".egg-info") for part in path.parts)
    }


def test_the_tutorial_quotes_the_example_packages() -> None:
    quoted = {match["path"]: match["body"] for match in FENCE.finditer(TUTORIAL.read_text())}
    for path, body in quoted.items():
        assert (EXAMPLES_DIR / path).is_file(), f"the tutorial quotes {path}, which is not a file"
        assert body == (EXAMPLES_DIR / path).read_text(), (
            f"the tutorial's {path} differs from the file"
        )
    assert {"prunus-taylor", "prunus-kernels"} <= set(PACKAGES)
    # The first package is built file by file; of the others, the code and its tests.
    assert _files("prunus-taylor") <= set(quoted)
    for package in PACKAGES:
        code = {f for f in _files(package) if f.endswith(".py")}
        assert code <= set(quoted), f"the tutorial does not quote {sorted(code - set(quoted))}"


def test_the_tutorial_shows_what_prunus_list_prints() -> None:
    pytest.importorskip(
        "prunus_taylor", reason="install examples/prunus-taylor to compare the listing"
    )
    match = LISTING.search(TUTORIAL.read_text())
    assert match is not None
    # This suite keeps installed plugins out of its own process (conftest.py): ask a child process that loads
    # them, prunus-taylor alone of the examples (as the tutorial has it at that point).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNUS_")}
    env["PRUNUS_DISABLED_PLUGINS"] = ",".join(p for p in PACKAGES if p != "prunus-taylor")
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
        *(f"pytest examples/{package}/tests" for package in PACKAGES),
    ):
        assert command in text, command
