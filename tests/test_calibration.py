"""Calibration: the statistics data-aware criteria read, gathered block by block from calibration batches.

On tiny Llama (grouped-query attention), GPT-2 (``Conv1D``) and BERT models built from configs: the statistics
equal a direct computation from the layers' inputs, block ``i + 1`` is calibrated on the output of block ``i``
already pruned, every form of ``data=`` works, a third-party statistic and criterion registered from outside go
through the same pass, and bad data fails with a typed error that leaves the model as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

import prunus
from prunus.layout import find_blocks, input_columns, matrix_view
from prunus.plugin_api import (
    Criterion,
    PruneContext,
    Registrar,
    Statistic,
    Target,
    hookimpl,
    per_input,
)

hf = pytest.importorskip("hf_models")


def inputs_of(model: nn.Module, names: list[str], batches: list[Any]) -> dict[str, Tensor]:
    """Every input row of each named layer over the batches, from hooks on a plain forward pass."""
    rows: dict[str, list[Tensor]] = {name: [] for name in names}
    handles = []
    for name in names:
        module = model.get_submodule(name)

        def hook(module: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            rows[name].append(input_columns(module, args[0]))

        handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        for batch in batches:
            if isinstance(batch, dict):
                model(**batch)
            else:
                model(batch)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(parts) for name, parts in rows.items()}


def layer_names(model: nn.Module) -> list[str]:
    return [name.removesuffix(".weight") for name, _, _ in prunus.select_targets(model)]


@pytest.mark.parametrize("kind", sorted(hf.MODELS))
def test_statistics_equal_a_direct_computation(kind: str) -> None:
    model = hf.MODELS[kind]()
    batches = hf.batches()
    stats = prunus.calibrate(model, batches, [prunus.InputNorms, prunus.InputGram])
    names = layer_names(model)
    direct = inputs_of(model, names, batches)
    assert sorted(stats) == sorted(f"{n}.weight" for n in names)
    for name in names:
        x = direct[name].double()
        assert torch.allclose(stats[f"{name}.weight"][prunus.InputNorms].double(), x.norm(dim=0))
        assert torch.allclose(
            stats[f"{name}.weight"][prunus.InputGram].double(), x.T @ x, rtol=1e-4, atol=1e-4
        )


def test_layers_reading_one_input_share_one_statistic() -> None:
    model = hf.llama()
    stats = prunus.calibrate(model, hf.batches(), [prunus.InputGram])
    attention = "model.layers.0.self_attn"
    q, k, v, o = (stats[f"{attention}.{p}_proj.weight"][prunus.InputGram] for p in "qkvo")
    assert q is k is v  # computed once, held once
    assert o is not q


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Conv2d(2, 3, (2, 3), padding="same", padding_mode="reflect", dilation=(1, 2)),
        nn.Conv1d(3, 5, 4, stride=2, padding=2),
        nn.Linear(6, 3),
    ],
)
def test_input_columns_are_what_the_weight_multiplies(layer: nn.Module) -> None:
    torch.manual_seed(0)
    shape = {nn.Conv2d: (2, layer.weight.shape[1], 7, 6), nn.Conv1d: (2, 3, 9)}.get(
        type(layer), (2, 5, 6)
    )
    x = torch.randn(shape)
    with torch.no_grad():
        out = layer(x)
        columns = input_columns(layer, x)
        product = columns @ matrix_view(layer, layer.weight).T + layer.bias
    # A convolution's channels are dim 1, a Linear's features the last dim.
    expected = out.reshape(-1, 3) if isinstance(layer, nn.Linear) else out.movedim(1, -1)
    assert torch.allclose(product, expected.reshape(product.shape), atol=1e-5)


# -- sequential: block i + 1 from block i already pruned ----------------------------------------------------------


class Recorder(Criterion):
    """Wanda's score, recording the input norms it was given (a criterion registered from outside)."""

    name = "recorder"
    summary = "records its statistics"
    statistics = (prunus.InputNorms,)
    seen: ClassVar[dict[str, Tensor]] = {}

    def score(self, target: Target, context: PruneContext) -> Tensor:
        norms = context.statistic(target, prunus.InputNorms)
        Recorder.seen[target.name] = norms.clone()
        return target.tensor.abs() * per_input(target.module, target.tensor.shape, norms)


class RecorderPlugin:
    @hookimpl
    def prunus_register_criteria(self, register: Registrar) -> None:
        register(Recorder)


@pytest.fixture
def recording_registry() -> Iterator[prunus.Registry]:
    registry = prunus.Registry()
    registry.register_plugin(RecorderPlugin(), name="recorder-plugin")
    Recorder.seen.clear()
    yield registry
    Recorder.seen.clear()


def test_each_block_is_calibrated_on_the_pruned_blocks_before_it(
    recording_registry: prunus.Registry,
) -> None:
    model = hf.llama()
    dense = copy.deepcopy(model)
    batches = hf.batches()
    prunus.prune(model, "recorder_row", amount=0.5, data=batches, registry=recording_registry)
    masks = prunus.masks(model)
    dense_norms = prunus.calibrate(dense, batches)
    # What block 1 sees once block 0 alone is pruned with the masks the call chose:
    block0 = {name: mask for name, mask in masks.items() if name.startswith("model.layers.0.")}
    prunus.prune(dense, "custom_mask", include=list(block0), masks=block0)
    after_block0 = prunus.calibrate(dense, batches, include="model.layers.1.*_proj.weight")
    for name, stats in after_block0.items():
        assert torch.allclose(Recorder.seen[name], stats[prunus.InputNorms], rtol=1e-5)
        assert not torch.allclose(Recorder.seen[name], dense_norms[name][prunus.InputNorms])
    # Block 0 itself saw the unpruned model's inputs.
    first = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(Recorder.seen[first], dense_norms[first][prunus.InputNorms])


def test_a_third_party_statistic_is_gathered_by_the_same_pass() -> None:
    class InputAbsMax(Statistic):
        name = "input_abs_max"
        summary = "largest |x_j|"

        def __init__(self, features: int, device: torch.device) -> None:
            super().__init__(features, device)
            self.value = torch.zeros(features, device=device)

        def update(self, columns: Tensor) -> None:
            torch.maximum(self.value, columns.abs().amax(dim=0), out=self.value)

        def result(self) -> Tensor:
            return self.value

    class Peak(Criterion):
        name = "peak"
        summary = "|w| * max |x|"
        statistics = (InputAbsMax,)

        def score(self, target: Target, context: PruneContext) -> Tensor:
            peak = context.statistic(target, InputAbsMax)
            return (matrix_view(target.module, target.tensor).abs() * peak).reshape(
                target.tensor.shape
            )

    class Plugin:
        @hookimpl
        def prunus_register_criteria(self, register: Registrar) -> None:
            register(Peak)

    registry = prunus.Registry()
    registry.register_plugin(Plugin(), name="peak-plugin")
    model, batches = hf.gpt2(), hf.batches()
    stats = prunus.calibrate(model, batches, [InputAbsMax])
    name = "transformer.h.0.attn.c_attn"
    direct = inputs_of(model, [name], batches)[name]
    assert torch.allclose(stats[f"{name}.weight"][InputAbsMax], direct.abs().amax(dim=0))
    report = prunus.prune(model, "peak_nm", data=batches, registry=registry)
    assert report.sparsity == pytest.approx(0.5)


# -- what data= can be -------------------------------------------------------------------------------------------


def test_every_form_of_data_gives_the_same_statistics() -> None:
    model = hf.llama()
    batches = hf.batches()
    expected = prunus.calibrate(model, batches)
    name = "model.layers.2.mlp.down_proj.weight"
    forms: list[Any] = [
        (b for b in batches),  # a generator, read once
        [{"input_ids": b} for b in batches],  # tokenizer-style keyword arguments
        [(b,) for b in batches],  # positional arguments
    ]
    for data in forms:
        got = prunus.calibrate(model, data)
        assert torch.allclose(got[name][prunus.InputNorms], expected[name][prunus.InputNorms])
    one = prunus.calibrate(model, torch.cat(batches))  # one tensor is one batch
    assert torch.allclose(one[name][prunus.InputNorms], expected[name][prunus.InputNorms])


def test_padding_is_masked_as_the_model_masks_it() -> None:
    model = hf.llama()
    data = hf.padded_batches()
    stats = prunus.calibrate(model, data)
    name = "model.layers.1.self_attn.o_proj"
    direct = inputs_of(model, [name], data)[name]
    assert torch.allclose(stats[f"{name}.weight"][prunus.InputNorms], direct.norm(dim=0))


def test_blocks_that_do_not_chain_are_calibrated_in_one_pass() -> None:
    class Heads(nn.Module):
        """A ModuleList of parallel heads on one input: not a chain of blocks."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.heads = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))

        def forward(self, tokens: Tensor) -> Tensor:
            x = self.embed(tokens)
            return torch.stack([head(x) for head in self.heads]).sum(0)

    torch.manual_seed(0)
    model = Heads()
    batches = [torch.randint(0, 10, (2, 5)) for _ in range(2)]
    stats = prunus.calibrate(model, batches)
    direct = inputs_of(model, ["heads.1"], batches)["heads.1"]
    assert torch.allclose(stats["heads.1.weight"][prunus.InputNorms], direct.norm(dim=0))


def test_a_model_without_blocks_is_calibrated_in_one_pass(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("lenet")
    batches = [example_input("lenet"), example_input("lenet", batch=3)]
    report = prunus.prune(model, "wanda_unstructured", amount=0.5, data=batches)
    assert report.sparsity == pytest.approx(0.5, abs=0.01)
    stats = prunus.calibrate(make_model("lenet"), batches, [prunus.InputGram])
    direct = inputs_of(make_model("lenet"), ["conv2"], batches)["conv2"]
    assert torch.allclose(stats["conv2.weight"][prunus.InputGram], direct.T @ direct, rtol=1e-4)


def test_precomputed_statistics_prune_without_running_the_model() -> None:
    model = hf.llama()
    stats = prunus.calibrate(model, hf.batches())

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model ran")

    handle = model.register_forward_pre_hook(refuse)
    report = prunus.prune(model, "wanda_row", amount=0.5, data=stats)
    handle.remove()
    assert report.sparsity == pytest.approx(0.5)


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "no calibration data"),
        (5, "not calibration data"),
        ([], "holds no batch"),
        ([torch.randn(2, 3)], "calibration batch 0"),
    ],
)
def test_bad_data_is_a_calibration_error_and_changes_nothing(
    data: Any, message: str, snapshot: Callable[[nn.Module], dict[str, Any]]
) -> None:
    model = hf.llama()
    before = snapshot(model)
    with pytest.raises(prunus.CalibrationError, match=message):
        prunus.prune(model, "wanda_row", amount=0.5, data=data)
    assert snapshot(model) == before


def test_a_failure_in_a_later_block_undoes_the_earlier_blocks(
    snapshot: Callable[[nn.Module], dict[str, Any]],
) -> None:
    class Fails(Criterion):
        name = "fails_late"
        summary = "raises on the last block"
        statistics = (prunus.InputNorms,)

        def score(self, target: Target, context: PruneContext) -> Tensor:
            if ".2." in target.name:
                raise RuntimeError("boom")
            return target.tensor.abs()

    class Plugin:
        @hookimpl
        def prunus_register_criteria(self, register: Registrar) -> None:
            register(Fails)

    registry = prunus.Registry()
    registry.register_plugin(Plugin(), name="fails-plugin")
    model = hf.llama()
    before = snapshot(model)
    with pytest.raises(prunus.PluginError, match="boom"):
        prunus.prune(
            model,
            "fails_late_row",
            amount=0.5,
            data=hf.batches(),
            registry=registry,
            reconstruct=True,
        )
    assert snapshot(model) == before


def test_parameters_calibration_cannot_read_are_named() -> None:
    model = hf.llama()
    with pytest.raises(prunus.CalibrationError, match=r"input_layernorm.weight.*RMSNorm"):
        prunus.prune(
            model,
            "wanda_row",
            amount=0.5,
            data=hf.batches(),
            include="model.layers.0.input_layernorm.weight",
        )


def test_find_blocks_picks_the_stack_of_identical_blocks() -> None:
    assert find_blocks(hf.llama())[0] == "model.layers"  # type: ignore[index]
    assert find_blocks(hf.gpt2())[0] == "transformer.h"  # type: ignore[index]
    assert find_blocks(hf.bert())[0] == "encoder.layer"  # type: ignore[index]
    assert find_blocks(nn.Sequential(nn.Linear(2, 2))) is None


def test_one_block_s_statistics_live_at_a_time(recording_registry: prunus.Registry) -> None:
    import gc
    import weakref

    results: list[weakref.ref[Tensor]] = []

    class Counted(prunus.InputNorms):
        def result(self) -> Tensor:
            value = super().result()
            results.append(weakref.ref(value))
            return value

    class Watcher(Criterion):
        name = "watcher"
        summary = "counts the statistics alive while it scores"
        statistics = (Counted,)
        most: ClassVar[int] = 0

        def score(self, target: Target, context: PruneContext) -> Tensor:
            gc.collect()
            Watcher.most = max(Watcher.most, sum(ref() is not None for ref in results))
            return target.tensor.abs()

    recording_registry.register(Watcher)
    model = hf.llama(layers=4)
    prunus.prune(model, "watcher_row", amount=0.5, data=hf.batches(), registry=recording_registry)
    # A Llama block reads four inputs (q/k/v share one, o, gate/up share one, down): four statistics, and
    # never those of two blocks at once.
    assert len(results) == 4 * 4
    assert Watcher.most == 4
