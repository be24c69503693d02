"""prune(model, "auto"): plans carried out step by step, refusals and warnings, recovery, per-group amounts.

The policy's choices per target are in test_selection.py; this file checks what carrying a plan out does.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

import prunus
from prunus import PlanStep, QualityError, QualityWarning, Selection
from prunus.errors import ConfigError, PluginError, TargetError
from prunus.hardware.probing import CACHE_ENV
from prunus.plugins.hardware_policy import DATA_AWARE_STRATEGIES
from prunus.workflow.evaluation import input_batches

pytest.importorskip("torch_pruning")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """A residual CNN: the stem's channels are coupled to the block's second conv by the addition."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.block = Block(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.block(torch.relu(self.stem(x))).mean((2, 3)))


def resnet() -> ResNet:
    torch.manual_seed(0)
    model = ResNet()
    with torch.no_grad():  # running statistics as a trained model would have them
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


X = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 4, (32,), generator=torch.Generator().manual_seed(2))


def state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(
        torch.equal(after[k], v) for k, v in before.items()
    )


class Planner:
    """An in-process selection plugin that returns a given plan."""

    def __init__(self, selection: Selection) -> None:
        self.selection = selection

    @prunus.hookimpl
    def prunus_select_strategy(self, model, hardware, objective, sparsity, data):
        return self.selection


def registry_with(selection: Selection) -> prunus.Registry:
    registry = prunus.Registry()
    registry.register_plugin(Planner(selection), name="planner")
    return registry


# -- the plan contract ----------------------------------------------------------------------------------------


def test_a_selection_without_steps_is_a_one_step_plan():
    selection = Selection(
        strategy="l1_unstructured", options={"amount": 0.3}, reason="r", include=["a"]
    )
    (step,) = selection.plan()
    assert (step.kind, step.strategy, step.options, step.include) == (
        "prune",
        "l1_unstructured",
        {"amount": 0.3},
        ["a"],
    )
    assert str(PlanStep(kind="to_sparse", settings={"layout": "csr"})) == "to_sparse layout='csr'"


def test_a_third_party_plan_is_carried_out_step_by_step():
    plan = Selection(
        strategy="l1_unstructured",
        options={"amount": 0.9},
        reason="store it sparse",
        steps=[
            PlanStep(kind="prune", strategy="l1_unstructured", options={"amount": 0.9}),
            PlanStep(kind="to_sparse", include=["fc1"], settings={"layout": "csr"}),
        ],
        predicted_speedup=1.5,
    )
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(16, 16))
    model.add_module("fc2", nn.Linear(16, 4))
    x = torch.randn(4, 16)
    dense = copy.deepcopy(model)
    report = prunus.prune(
        model, "auto", sparsity=0.9, example_inputs=x, registry=registry_with(plan)
    )
    assert report.selection is not None and report.selection.decided_by == "planner"
    assert [s.kind for s in report.steps] == ["prune", "to_sparse"]
    assert isinstance(model.fc1, prunus.SparseLinear) and type(model.fc2) is nn.Linear
    assert report.outcome is not None and report.outcome.predicted_speedup == 1.5
    assert report.outcome.predicted_from == "the plan"
    assert report.outcome.measured_speedup is not None and report.outcome.threads is not None
    assert "measured speed-up" in str(report)
    masked = copy.deepcopy(dense)
    prunus.prune(masked, "l1_unstructured", amount=0.9)
    torch.testing.assert_close(model(x), masked(x))


def test_a_third_party_plan_that_removes_channels():
    plan = Selection(
        strategy="l1_structured",
        options={"amount": 0.5},
        reason="smaller",
        steps=[PlanStep(kind="shrink", strategy="l1_structured", options={"amount": 0.5})],
    )
    model = resnet()
    report = prunus.prune(
        model,
        "auto",
        sparsity=0.5,
        example_inputs=X[:2],
        measure=False,
        registry=registry_with(plan),
    )
    assert model.block.conv1.out_channels == 8  # the block's inner channels
    assert (
        model.stem[0].out_channels == model.block.conv2.out_channels == 8
    )  # coupled by the addition
    assert report["block.conv1.weight"].pruned == 16 * 16 * 9 - 8 * 8 * 9  # inputs and outputs
    outcome = report.outcome
    assert outcome is not None and outcome.params_after < outcome.params_before
    assert outcome.macs_after is not None and outcome.macs_before is not None
    assert outcome.predicted_speedup == pytest.approx(outcome.macs_before / outcome.macs_after)
    assert outcome.measured_speedup is None  # measure=False


def test_a_plan_naming_an_unknown_strategy_names_the_plugin_and_step():
    plan = Selection(
        strategy="l1_unstructured",
        options={"amount": 0.5},
        reason="r",
        steps=[PlanStep(kind="shrink", strategy="l1_nope", options={"amount": 0.5})],
    )
    with pytest.raises(PluginError, match="plugin 'planner' planned in step 1 'l1_nope'"):
        prunus.select(resnet(), registry=registry_with(plan))


def test_removing_channels_needs_example_inputs_and_changes_nothing_without():
    model = resnet()
    before = state(model)
    with (
        pytest.warns(QualityWarning, match="no data"),
        pytest.raises(ConfigError, match="example_inputs="),
    ):
        prunus.prune(model, "auto", sparsity=0.5, hardware="cpu")
    assert same_state(model, before)


def test_a_failing_step_leaves_the_model_as_it_was():
    plan = Selection(
        strategy="l1_structured",
        options={"amount": 0.5},
        reason="r",
        steps=[
            PlanStep(kind="shrink", strategy="l1_structured", options={"amount": 0.5}),
            PlanStep(kind="recover", settings={"epochs": 1, "learning_rate": 0.1}),
        ],
    )
    model = resnet()
    before, modules = state(model), [type(m) for m in model.modules()]
    with pytest.raises(ConfigError, match="unknown recovery settings"):
        prunus.prune(
            model, "auto", sparsity=0.5, data=(X, Y), registry=registry_with(plan), measure=False
        )
    assert same_state(model, before) and [type(m) for m in model.modules()] == modules
    assert model.block.conv1.out_channels == 16 and not prunus.is_pruned(model)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": 0.5, "recover": "yes"}, "recover='yes'"),
        ({"sparsity": 0.5, "measure": 1}, "measure=1"),
        ({"sparsity": 0.5, "amount": 0.5}, "not amount"),
    ],
)
def test_bad_auto_options(options, message):
    with pytest.raises(ConfigError, match=message):
        prunus.prune(resnet(), "auto", **options)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"sparsity": "half"}, TypeError, r"sparsity='half' is a str"),
        ({"sparsity": 1.5}, ValueError, r"sparsity=1.5 must be a finite number >= 0.0 and <= 1.0"),
        ({"sparsity": 0.5, "hardware": "tpu"}, ValueError, "hardware='tpu' is not a known target"),
        ({"sparsity": 0.5, "objective": "speed"}, ValueError, "objective='speed' is not one of"),
        (
            {"sparsity": 0.5, "recover": "yes"},
            TypeError,
            "recover='yes' must be True, False or a dict",
        ),
        (
            {"sparsity": 0.5, "measure": "no"},
            TypeError,
            "measure='no' is a str; give True or False",
        ),
        (
            {"sparsity": 0.5, "example_inputs": torch.randn(2, 1, 8, 8)},
            TargetError,
            r"example_inputs could not run ResNet: RuntimeError",
        ),
    ],
)
def test_bad_input_is_a_typed_error_naming_the_value_and_the_model_is_unchanged(
    options, error, message
):
    model = resnet()
    before = state(model)
    with pytest.raises(error, match=message) as raised:
        prunus.prune(model, "auto", data=(X, Y), **options)
    assert isinstance(raised.value, prunus.PrunusError)
    assert same_state(model, before) and not prunus.is_pruned(model)


# -- the built-in plan on a CNN, with data ---------------------------------------------------------------------


def test_auto_for_latency_removes_the_same_fraction_everywhere_and_recovers_long_enough(
    monkeypatch: pytest.MonkeyPatch,
):
    from prunus.autoplan import execute

    monkeypatch.setattr(execute, "RECOVERY_STEPS", 6)  # 2 batches of 16 per epoch: 3 epochs
    selection = prunus.select(resnet(), "cpu", sparsity=0.5, data=(X, Y))
    shrink, recover = selection.plan()
    assert shrink.allocation == "uniform" and recover.settings == {"epochs": "auto"}
    model = resnet()
    report = prunus.prune(
        model, "auto", sparsity=0.5, hardware="cpu", data=(X, Y), recover={"batch_size": 16}
    )
    assert "sensitivity" not in report.steps[0].summary
    assert "for 3 epochs (6 steps" in report.steps[1].summary
    with pytest.raises(ConfigError, match="int >= 0 or 'auto'"):
        prunus.prune(resnet(), "auto", sparsity=0.5, data=(X, Y), recover={"epochs": "many"})


def test_auto_with_data_allocates_by_sensitivity_recovers_and_reports():
    model = resnet()
    report = prunus.prune(
        model,
        "auto",
        sparsity=0.5,
        hardware="cpu",
        objective="memory",
        data=(X, Y),
        recover={"epochs": 1, "batch_size": 16},
    )
    shrink, recover = report.steps
    assert (
        "amounts by sensitivity" in shrink.summary and "amounts from sensitivity" in shrink.detail
    )
    assert "recalibrated 3 BatchNorm layers" in recover.summary and "distilled" in recover.summary
    outcome = report.outcome
    assert outcome is not None and outcome.params_after < outcome.params_before
    assert outcome.measured_speedup is not None and outcome.latency_dense_s is not None
    metrics = {q.metric: q for q in outcome.quality}
    assert set(metrics) == {"accuracy", "agreement"}
    assert metrics["agreement"].dense == 1.0 and metrics["agreement"].pruned is not None
    assert model.block.bn1.momentum == 0.1  # put back after the recalibration


def test_auto_without_data_warns_and_does_not_recover():
    model = resnet()
    with pytest.warns(QualityWarning, match="no data"):
        report = prunus.prune(model, "auto", sparsity=0.5, hardware="cpu", example_inputs=X[:4])
    assert report.steps[1].summary.startswith("skipped: no data")


def test_heavy_structural_removal_is_warned_about():
    selection = prunus.select(resnet(), "cpu", sparsity=0.8, data=(X, Y))
    assert any("leaves little of the model" in w for w in selection.warnings)


# -- what the model is, and refusals ----------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.head_dim = width // 2
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.v_proj, self.o_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.softmax(self.q_proj(x) @ self.k_proj(x).transpose(1, 2), dim=-1)
        return self.o_proj(weights @ self.v_proj(x))


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 1024, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.attn = Attention(width)
        self.mlp = nn.Sequential(nn.Linear(width, 32), nn.ReLU(), nn.Linear(32, width))
        self.lm_head = nn.Linear(width, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids)
        h = h + self.attn(h)
        return self.lm_head(h + self.mlp(h))


class Encoder(TinyLM):
    def __init__(self) -> None:
        super().__init__(vocab=1024)
        self.lm_head = nn.Linear(16, 16)


def test_model_kinds():
    assert prunus.model_kind(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))) == "mlp"
    assert prunus.model_kind(resnet()) == "cnn"
    assert prunus.model_kind(TinyLM()) == "language_model"
    assert prunus.model_kind(Encoder()) == "encoder"
    assert prunus.model_kind(nn.TransformerEncoderLayer(16, 2)) == "encoder"
    assert prunus.model_kind(nn.Sequential(nn.LSTM(4, 4))) == "other"


def test_a_transformer_recovers_at_a_fine_tuning_rate_and_a_cnn_at_the_default():
    from prunus.autoplan.execute import DEFAULT_RECOVERY
    from prunus.plugins.hardware_policy import TRANSFORMER_RECOVERY_LR

    ids = torch.randint(0, 1024, (8, 6))
    encoder_plan = prunus.select(Encoder(), "cpu", sparsity=0.3, data=[ids])
    *_, recover = encoder_plan.plan()
    assert recover.kind == "recover" and recover.settings["lr"] == TRANSFORMER_RECOVERY_LR
    assert f"{TRANSFORMER_RECOVERY_LR:g}" in recover.reason
    *_, recover = prunus.select(resnet(), "cpu", sparsity=0.5, data=(X, Y)).plan()
    assert "lr" not in recover.settings and DEFAULT_RECOVERY["lr"] == pytest.approx(
        10 * TRANSFORMER_RECOVERY_LR
    )
    # What the plan sets is what the distillation uses, unless the user's recover= says otherwise.
    model = Encoder()
    report = prunus.prune(
        model, "auto", sparsity=0.3, hardware="cpu", data=[ids], recover={"epochs": 1}
    )
    assert "distilled" in report.steps[-1].summary


def magnitude_only() -> prunus.Registry:
    """A registry without prunus's data-aware criteria (as if no plugin provided one)."""
    registry = prunus.Registry()
    registry.unregister("wanda")
    registry.unregister("sparsegpt")
    assert not set(registry.names()) & set(DATA_AWARE_STRATEGIES)
    return registry


def test_structural_removal_of_a_language_model_is_refused_with_what_to_do_instead():
    model = TinyLM()
    selection = prunus.select(model, "cpu", sparsity=0.5)
    assert selection.model_kind == "language_model" and selection.refusal is not None
    # prunus's own data-aware strategies are registered: the refusal says to pass calibration data.
    assert "'sparsegpt_unstructured'" in selection.refusal and "data=batches" in selection.refusal
    nothing = prunus.select(model, "cpu", sparsity=0.5, registry=magnitude_only())
    assert nothing.refusal is not None
    for name in ("wanda_row", "sparsegpt_unstructured", "sparsegpt_nm", "objective='accuracy'"):
        assert name in nothing.refusal
    before = state(model)
    ids = torch.randint(0, 1024, (2, 5))
    with pytest.raises(QualityError, match=r"is refused .*ruins it"):
        prunus.prune(model, "auto", sparsity=0.5, hardware="cpu", example_inputs=ids)
    assert same_state(model, before) and not prunus.is_pruned(model)
    assert "refused:" in str(selection)


def test_a_language_model_by_magnitude_without_data():
    refused = prunus.select(TinyLM(), "cpu", objective="accuracy", sparsity=0.5)
    assert refused.refusal is not None and "without calibration data" in refused.refusal
    mild = prunus.select(TinyLM(), "cpu", objective="accuracy", sparsity=0.2)
    assert mild.refusal is None and any("loses much of its quality" in w for w in mild.warnings)


def test_small_structural_removal_of_a_language_model_is_planned_with_a_warning():
    selection = prunus.select(
        TinyLM(),
        "cpu",
        sparsity=0.1,
        data=torch.randint(0, 1024, (2, 5)),
        registry=magnitude_only(),
    )
    assert selection.refusal is None and selection.steps[0].kind == "shrink"
    assert any("chosen by magnitude" in w and "none is registered" in w for w in selection.warnings)


def test_a_language_model_by_magnitude_is_refused_even_with_data_when_nothing_data_aware_is_registered():
    ids = torch.randint(0, 1024, (4, 5))
    selection = prunus.select(
        TinyLM(), "cpu", objective="accuracy", sparsity=0.5, data=ids, registry=magnitude_only()
    )
    assert selection.refusal is not None and "by magnitude alone ruins it" in selection.refusal
    assert "none is registered here" in selection.refusal


class Wanda(prunus.Criterion):
    """|w| times the L2 norm of its input feature over the calibration data (Sun et al., 2023), as a third
    party might write it without prunus's calibration."""

    name = "wanda"
    summary = "|w| x input-feature norm over the data"

    def score(self, target, context):
        if "norms" not in context.extras:
            squares = {}

            def record(module, args):
                x = args[0].reshape(-1, args[0].shape[-1])
                squares[module] = squares.get(module, 0) + x.pow(2).sum(0)

            handles = [t.module.register_forward_pre_hook(record) for t in context.targets]
            try:
                with torch.no_grad():
                    context.model(context.data)
            finally:
                for handle in handles:
                    handle.remove()
            context.extras["norms"] = {m: v.sqrt() for m, v in squares.items()}
        return target.tensor.abs() * context.extras["norms"][target.module]


class WandaPlugin:
    @prunus.hookimpl
    def prunus_register_criteria(self, register):
        register(Wanda)


def test_prunus_data_aware_strategy_is_planned_for_a_language_model_with_data():
    model, ids = TinyLM(), torch.randint(0, 1024, (4, 5))
    direct = copy.deepcopy(model)
    selection = prunus.select(model, "cpu", sparsity=0.5, data=ids)
    assert selection.refusal is None and selection.strategy == "sparsegpt_unstructured"
    report = prunus.prune(model, "auto", sparsity=0.5, data=ids, example_inputs=ids, measure=False)
    assert report.strategy == "sparsegpt_unstructured"
    prunus.prune(direct, "sparsegpt_unstructured", amount=0.5, data=ids)
    masks, expected = prunus.masks(model), prunus.masks(direct)
    assert masks.keys() == expected.keys() and all(
        torch.equal(masks[k], expected[k]) for k in masks
    )


def test_a_third_party_data_aware_strategy_is_planned_for_a_language_model_with_data():
    registry = magnitude_only()
    registry.register_plugin(WandaPlugin(), name="wanda")
    model, ids = TinyLM(), torch.randint(0, 1024, (4, 5))
    direct = copy.deepcopy(model)
    selection = prunus.select(model, "cpu", sparsity=0.5, data=ids, registry=registry)
    assert selection.refusal is None and selection.strategy == "wanda_unstructured"
    without_data = prunus.select(model, "cpu", sparsity=0.5, registry=registry)
    assert without_data.refusal is not None
    assert "registered here" in without_data.refusal
    assert "plans 'wanda_unstructured'" in without_data.refusal
    report = prunus.prune(
        model, "auto", sparsity=0.5, data=ids, example_inputs=ids, measure=False, registry=registry
    )
    assert report.strategy == "wanda_unstructured"
    prunus.prune(direct, "wanda_unstructured", amount=0.5, data=ids, registry=registry)
    masks, expected = prunus.masks(model), prunus.masks(direct)
    assert masks.keys() == expected.keys() and all(
        torch.equal(masks[k], expected[k]) for k in masks
    )
    assert (model.mlp[0].weight == 0).float().mean().item() == pytest.approx(0.5)


# -- recovery ----------------------------------------------------------------------------------------------


def test_recalibrate_batchnorm_measures_the_statistics_of_the_data():
    model = resnet()
    model.stem[1].momentum = 0.3
    model.train()
    model.fc.eval()
    count = prunus.recalibrate_batchnorm(model, (X, Y), batch_size=8)
    assert count == 3
    assert model.stem[1].momentum == 0.3 and model.training and not model.fc.training
    features = model.stem[0](X)  # an exact average over the 4 batches of 8, not a moving one
    torch.testing.assert_close(model.stem[1].running_mean, features.mean((0, 2, 3)))
    per_batch = torch.stack([f.var((0, 2, 3), unbiased=True) for f in features.split(8)])
    torch.testing.assert_close(model.stem[1].running_var, per_batch.mean(0))
    assert prunus.recalibrate_batchnorm(nn.Linear(3, 3), torch.randn(2, 3)) == 0


def test_distill_brings_the_student_toward_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[0].weight.add_(torch.randn_like(student[0].weight) * 0.5)
    x = torch.randn(64, 8)

    def gap() -> float:
        with torch.no_grad():
            return float((student(x) - teacher(x)).abs().mean())

    before = gap()
    result = prunus.distill(student, teacher, x, epochs=5, lr=1e-2, batch_size=16)
    assert result.steps == 20 and gap() < before * 0.7
    assert result.losses[-1] < result.losses[0]


def test_distill_keeps_masks_and_takes_dict_inputs():
    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: Tensor, scale: Tensor) -> dict[str, Tensor]:
            return {"hidden": self.fc(x) * scale}

    torch.manual_seed(0)
    teacher, student = Keyword(), Keyword()
    prunus.prune(student, "l1_unstructured", amount=0.5)
    mask = prunus.masks(student)["fc.weight"]
    data = {"x": torch.randn(32, 8), "scale": torch.ones(32, 1)}
    prunus.distill(student, teacher, data, epochs=2, lr=1e-2, batch_size=8)
    assert bool((student.fc.weight[~mask] == 0).all())


def test_distill_with_label_weight_one_is_training_on_the_labels():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    student = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    trained = copy.deepcopy(student)
    x, y = torch.randn(48, 8), torch.randint(0, 4, (48,))
    prunus.distill(student, teacher, (x, y), epochs=2, lr=1e-2, batch_size=16, label_weight=1.0)
    # distill shuffles its pass p with seed + p; fine_tune its epoch e with seed + e
    prunus.fine_tune(trained, (x, y), epochs=2, lr=1e-2, batch_size=16, seed=1)
    for mine, theirs in zip(student.parameters(), trained.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)
    with pytest.raises(ConfigError, match=r"label_weight=1\.5"):
        prunus.distill(student, teacher, (x, y), label_weight=1.5)


def test_distill_runs_the_teacher_once_over_tensor_data(monkeypatch: pytest.MonkeyPatch):
    from prunus.workflow import recovery

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    start = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(40, 8), torch.randint(0, 4, (40,))
    rows: list[int] = []
    teacher.register_forward_hook(lambda _m, args, _out: rows.append(len(args[0])))
    trained = {}
    for cache in (recovery.TEACHER_CACHE_ELEMENTS, 0):
        monkeypatch.setattr(recovery, "TEACHER_CACHE_ELEMENTS", cache)
        rows.clear()
        student = copy.deepcopy(start)
        kwargs = {"epochs": 3, "lr": 1e-2, "batch_size": 16, "label_weight": 0.5}
        prunus.distill(student, teacher, (x, y), lr_schedule="cosine", **kwargs)
        trained[cache] = student
        assert sum(rows) == (
            40 if cache else 16 + 3 * 40
        )  # cached: once; else a probe, then each epoch
    for cached, fresh in zip(*(m.parameters() for m in trained.values()), strict=True):
        torch.testing.assert_close(cached, fresh)


def test_input_batches_reads_every_form_of_data():
    x = torch.randn(10, 3)
    assert [len(b) for b in input_batches((x, torch.zeros(10)), 4)] == [4, 4, 2]
    assert [len(b) for b in input_batches(x, 5)] == [5, 5]
    dicts = list(input_batches({"ids": torch.zeros(6, 2), "mask": torch.ones(6, 2)}, 4))
    assert [b["ids"].shape[0] for b in dicts] == [4, 2]
    assert next(iter(input_batches([(x, 1), (x, 2)], 4))) is x
    with pytest.raises(ConfigError):
        list(input_batches(3, 4))


# -- shrink's per-group amounts and the channel sensitivity they come from ---------------------------------------


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)
    )


def test_shrink_takes_an_amount_per_group():
    model = mlp()
    report = prunus.shrink(model, torch.randn(2, 8), "l1_structured", amounts={"2": 0.75})
    assert (model[0].out_features, model[2].out_features) == (16, 4)
    assert report.options == {"amounts": {"2": 0.75}}
    both = mlp()
    prunus.shrink(both, torch.randn(2, 8), "l1_structured", amount=0.5, amounts={"2": 0.25})
    assert (both[0].out_features, both[2].out_features) == (8, 12)


def test_bad_per_group_amounts():
    with pytest.raises(TargetError, match="matches no group"):
        prunus.shrink(mlp(), torch.randn(2, 8), "l1_structured", amounts={"nope": 0.5})
    with pytest.raises(ConfigError, match="global ranking"):
        prunus.shrink(mlp(), torch.randn(2, 8), "l1_global", amounts={"0": 0.5})
    with pytest.raises(ConfigError, match="needs a strategy"):
        prunus.shrink(mlp(), torch.randn(2, 8), amounts={"0": 0.5})


def test_channel_sensitivity_leaves_the_model_as_it_was():
    model = resnet()
    before = state(model)
    with torch.no_grad():
        dense = model(X)

    def error(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m(X) - dense).pow(2).mean())

    groups = prunus.channel_sensitivity(model, X[:2], "l1_structured", error, [0.25, 0.5, 0.75])
    assert same_state(model, before)
    assert {g.name for g in groups} == {"block.conv1", "block.conv2"}
    for group in groups:
        assert group.amounts == [0.25, 0.5, 0.75] and group.macs > 0
        assert group.losses[-1] >= group.losses[0] > 0


# -- analyze tells the truth ------------------------------------------------------------------------------------


def test_stray_zeros_in_a_dense_model_are_not_pruning():
    model = mlp()
    with torch.no_grad():
        model[2].weight[3, 5] = 0.0
        model[2].weight[7, 1] = 0.0
    report = prunus.analyze(model, torch.randn(2, 8))
    layer = report["2"]
    assert layer.pattern == "dense" and layer.sparsity == 0 and layer.stray_zeros == 2
    assert layer.warning is None and report.predicted_speedup == 1.0
    assert "2 stray zeros in 1 layers are not counted" in str(report)
    with torch.no_grad():
        model[2].weight[:4].zero_()  # whole rows count, however few
    assert prunus.analyze(model)["2"].pattern == "structured"
    everything = prunus.analyze(model, zeros_threshold=0.0)["2"]
    assert everything.pattern == "unstructured" and everything.stray_zeros == 0


def test_masks_decide_what_is_pruned_and_aligned_masks_are_structured():
    model = resnet()
    with torch.no_grad():  # stray zeros in the entries the mask keeps, as a pretrained net has
        model.block.conv1.weight[0, 0, 0, 0] = 0.0
    prunus.prune(model, "l1_aligned", amount=0.5, round_to=8, include="block.conv1.weight")
    layer = prunus.analyze(model)["block.conv1"]
    assert layer.pruned_by == "mask" and layer.pattern == "structured"
    assert layer.sparsity == 0.5 and layer.stray_zeros == 1 and layer.zero_rows == 8


def test_a_depthwise_convolution_is_never_two_four():
    conv = nn.Conv2d(8, 8, 3, groups=8)
    prunus.prune(conv, "l1_unstructured", amount=0.5)
    assert prunus.analyze(nn.Sequential(conv))["0"].pattern == "unstructured"


def test_the_predicted_speedup_counts_only_what_coupling_lets_shrink_remove():
    x = X[:2]
    uncoupled = resnet()  # masks layer by layer: the residual addition keeps every channel alive
    targets = [n for n, _, _ in prunus.select_targets(uncoupled)][:-1]
    prunus.prune(uncoupled, "l1_structured", amount=0.5, include=targets)
    report = prunus.analyze(uncoupled, x)
    assert report.theoretical_speedup > 1.9  # half of every layer's rows are zero ...
    assert (
        report.predicted_speedup is not None and report.predicted_speedup < 1.5
    )  # ... unreachable
    assert report.predicted_from.startswith("MACs")
    coupled = resnet()
    prunus.prune_channels(coupled, x, "l1_structured", amount=0.5)
    predicted = prunus.analyze(coupled, x).predicted_speedup
    shrunk = copy.deepcopy(coupled)
    shrink = prunus.shrink(shrunk, x)
    assert predicted == pytest.approx(1 / shrink.mac_ratio)
    measured = prunus.analyze(coupled, x, measure=True, repeats=3)
    assert measured.predicted_from.startswith("measured end to end")
    assert measured.predicted_speedup is not None and measured.predicted_spread is not None
    assert any("removes" in note for note in measured.reachable)


def test_bad_zeros_threshold():
    with pytest.raises(ConfigError, match="zeros_threshold"):
        prunus.analyze(mlp(), zeros_threshold=2)


def test_no_warning_escapes_a_plain_select():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prunus.select(resnet(), "cpu", sparsity=0.5)
