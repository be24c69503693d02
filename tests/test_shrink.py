"""prunus.shrink and prunus.prune_channels: a smaller dense model that computes what the masked one computed.

Every test compares outputs and counts; none times anything.
"""

from __future__ import annotations

import copy
import io
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import prunus
from prunus import PruneContext, Target
from prunus.config import count_to_prune
from prunus.testing.zoo import (
    CHANNEL_NETS,
    MLP,
    GroupedNet,
    ResNet,
    randomize_norms,
)

Snapshot = Callable[[nn.Module], dict[str, Any]]


@pytest.fixture(autouse=True)
def _needs_torch_pruning(request: pytest.FixtureRequest) -> None:
    # Every test but the one about its absence needs the shrink extra.
    if not request.node.name.startswith("test_without_torch_pruning"):
        pytest.importorskip("torch_pruning")


# -- models ---------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention whose head count follows from the shapes (``view(..., -1, head_dim)``)."""

    def __init__(self, width: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.head_dim = width // heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)

    def split(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], -1, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        weights = (q @ k.transpose(-2, -1) * self.head_dim**-0.5).softmax(-1)
        out = (weights @ v).transpose(1, 2)
        return self.proj(out.reshape(out.shape[0], out.shape[1], -1))


class Transformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = Attention()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        x = x + self.attn(x)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.out(x.mean(dim=1))


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], dict[str, Any]]] = {
    **{name: (factory, shape, {}) for name, (factory, shape) in CHANNEL_NETS.items()},
    "attention": (Transformer, (2, 5, 6), {"heads": {"attn.[qkv]": 4}}),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, Tensor, dict[str, Any]]:
    factory, shape, extra = CASES[name]
    torch.manual_seed(seed)
    model = randomize_norms(factory())
    return model, torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1)), extra


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def close(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5))


# -- outputs equal the masked model's -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("strategy", ["l1_structured", "l1_global"])
def test_shrunken_model_computes_what_the_masked_model_computes(name: str, strategy: str) -> None:
    model, x, extra = build(name)
    masked = copy.deepcopy(model)
    planned = prunus.prune_channels(masked, x, strategy, amount=0.5, **extra)
    assert not planned.shrunk and planned.removed_channels > 0
    expected = masked(x)

    shrunk = copy.deepcopy(masked)
    report = prunus.shrink(shrunk, x)
    assert report.shrunk
    assert close(shrunk(x), expected)
    assert report.removed_channels == planned.removed_channels
    assert [g.removed for g in report.groups] == [g.removed for g in planned.groups]
    assert report.params_after == params(shrunk) < params(model) == report.params_before
    assert report.macs_after < report.macs_before
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    assert not prunus.is_pruned(shrunk)

    # The one-call path removes the same channels.
    direct = copy.deepcopy(model)
    one_call = prunus.shrink(direct, x, strategy, amount=0.5, **extra)
    assert [g.removed for g in one_call.groups] == [g.removed for g in planned.groups]
    assert params(direct) == params(shrunk)
    assert close(direct(x), expected)


def test_layer_shapes_follow_the_coupling_in_a_residual_net() -> None:
    model, x, _ = build("resnet")
    prunus.shrink(model, x, "l1_structured", amount=0.5)
    assert isinstance(model, ResNet)
    # stem, block1 and block2's shortcut input share one group (the residual): they shrink together.
    assert model.stem.out_channels == model.bn.num_features == model.block1.conv2.out_channels
    assert model.block1.conv1.in_channels == model.stem.out_channels == 4
    assert model.block2.conv1.in_channels == model.block2.shortcut[0].in_channels == 4
    assert model.block2.conv2.out_channels == model.block2.shortcut[0].out_channels == 8
    assert model.head.in_features == 8 and model.head.out_features == 4  # the output is left alone


def test_grouped_convolutions_lose_channels_symmetrically() -> None:
    model, x, _ = build("grouped")
    prunus.shrink(model, x, "l1_structured", amount=0.5)
    assert isinstance(model, GroupedNet)
    assert model.grouped.groups == 2 and model.grouped.in_channels % 2 == 0
    assert model.depthwise.groups == model.depthwise.in_channels == model.depthwise.out_channels
    model(x)


def test_attention_loses_whole_heads() -> None:
    model, x, extra = build("attention")
    report = prunus.shrink(model, x, "l1_structured", amount=0.5, **extra)
    assert isinstance(model, Transformer)
    group = next(g for g in report.groups if g.unit == 4)
    assert {"attn.q", "attn.k", "attn.v", "attn.proj"} <= set(group.layers)
    assert len(group.removed) == 8
    assert model.attn.q.out_features == model.attn.k.out_features == model.attn.v.out_features == 8
    assert model.attn.proj.in_features == 8
    model(x)


def test_the_output_layer_and_the_residual_stream_under_layernorm_are_left_alone() -> None:
    class Normed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.norm, self.fc2 = nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc2(self.norm(self.fc1(x)))

    torch.manual_seed(0)
    model, x = Normed(), torch.randn(2, 6)
    prunus.prune(model, "l1_structured", amount=0.5, include=["fc1.weight"])
    with pytest.raises(prunus.ShrinkError, match="silence no"):
        # Nothing can be removed exactly: fc1's group is normalized by LayerNorm, fc2 feeds the output.
        prunus.shrink(model, x)
    report = prunus.shrink(Normed(), x, "l1_structured", amount=0.5)
    reasons = {g.name: g.left for g in report.groups}
    assert "normalized across channels by 'norm'" in str(reasons["fc1"])
    assert reasons["fc2"] == "feeds the model's output"
    assert report.removed_channels == 0


# -- masks, restore, training ---------------------------------------------------------------------------------


def test_prune_channels_masks_every_coupled_parameter_and_restores(snapshot: Snapshot) -> None:
    model, x, _ = build("resnet")
    before = snapshot(model)
    prunus.prune_channels(model, x, "l1_structured", amount=0.5)
    masked = prunus.masks(model)
    for name in ("bn.weight", "bn.bias", "block1.conv1.weight", "stem.weight", "head.weight"):
        assert name in masked, name
    prunus.restore(model)
    assert snapshot(model)["state_dict"] == before["state_dict"]


def test_masked_channels_stay_silent_through_fine_tuning_and_then_shrink_exactly() -> None:
    model, x, _ = build("resnet")
    prunus.prune_channels(model, x, "l1_global", amount=0.4)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    model.eval()
    expected = model(x)
    report = prunus.shrink(model, x)
    assert report.removed_channels > 0 and close(model(x), expected)


def test_shrink_keeps_training_mode_and_frozen_parameters() -> None:
    model, x, _ = build("mlp")
    model.train()
    model.fc1.bias.requires_grad_(False)
    prunus.shrink(model, x, "l1_structured", amount=0.5)
    assert isinstance(model, MLP)
    assert all(m.training for m in model.modules())
    assert model.fc1.bias.requires_grad is False and model.fc1.weight.requires_grad is True


# -- saving and loading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet", "attention", "grouped"])
def test_save_and_load_into_a_fresh_instance_without_pickle(name: str) -> None:
    model, x, extra = build(name)
    prunus.shrink(model, x, "l1_structured", amount=0.5, **extra)
    expected = model(x)

    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    record = json.dumps(prunus.shrink_state(model))

    fresh, _, _ = build(name, seed=3)
    weights.seek(0)
    state = torch.load(weights, weights_only=True)  # tensors only: no module is unpickled
    prunus.load_shrunk(fresh, state, json.loads(record))
    assert close(fresh.eval()(x), expected)
    assert params(fresh) == params(model)


def test_load_shrunk_refuses_a_record_of_another_model(snapshot: Snapshot) -> None:
    model, x, _ = build("mlp")
    prunus.shrink(model, x, "l1_structured", amount=0.5)
    record = prunus.shrink_state(model)
    other, _, _ = build("resnet")
    before = snapshot(other)
    with pytest.raises(prunus.ShrinkError, match="fresh instance"):
        prunus.load_shrunk(other, model.state_dict(), record)
    assert snapshot(other) == before
    fresh, _, _ = build("mlp")
    before = snapshot(fresh)
    with pytest.raises(prunus.ShrinkError):
        prunus.load_shrunk(fresh, {"fc1.weight": torch.zeros(1)}, record)
    assert snapshot(fresh) == before
    with pytest.raises(prunus.ShrinkError, match="not a shrink record"):
        prunus.load_shrunk(fresh, model.state_dict(), {"modules": {}})


# -- criteria from the registry -----------------------------------------------------------------------------------


def test_a_third_party_criterion_chooses_the_channels(private_registry: prunus.Registry) -> None:
    class LastChannelsFirst(prunus.Criterion):
        """Scores every entry by its row index: output channel 0 scores lowest."""

        name = "row_index"
        summary = "row index (test)"

        def score(self, target: Target, context: PruneContext) -> Tensor:
            tensor = target.tensor
            rows = torch.arange(tensor.shape[0], dtype=torch.float32)
            return rows.reshape(-1, *[1] * (tensor.dim() - 1)).expand(tensor.shape).clone()

    private_registry.register(LastChannelsFirst)
    model, x, _ = build("mlp")
    with pytest.raises(prunus.UnknownStrategyError):
        prunus.shrink(copy.deepcopy(model), x, "row_index_structured", amount=0.25)
    report = prunus.shrink(model, x, "row_index_structured", amount=0.25, registry=private_registry)
    fc1 = next(g for g in report.groups if g.name == "fc1")
    # fc1's channels score their fc1 row index plus fc2's column score (row index of fc2: constant per
    # column), so the lowest are fc1's first rows.
    assert fc1.removed == list(range(8))
    assert report.strategy == "row_index_structured"


def test_criterion_options_are_validated() -> None:
    model, x, _ = build("mlp")
    with pytest.raises(prunus.ConfigError):
        prunus.shrink(model, x, "random_structured", amount=0.5, sed=3)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    first = prunus.shrink(a, x, "random_structured", amount=0.5, seed=3)
    second = prunus.shrink(b, x, "random_structured", amount=0.5, seed=3)
    assert [g.removed for g in first.groups] == [g.removed for g in second.groups]


# -- no layer collapses -------------------------------------------------------------------------------------------


def test_global_ranking_never_empties_a_group(snapshot: Snapshot) -> None:
    model, x, _ = build("resnet")
    report = prunus.shrink(copy.deepcopy(model), x, "l1_global", amount=0.9)
    assert all(g.kept >= 1 for g in report.groups if g.left is None)
    capped = prunus.shrink(copy.deepcopy(model), x, "l1_global", amount=0.4, max_layer_sparsity=0.5)
    assert all(len(g.removed) <= g.channels // 2 for g in capped.groups)
    kept_two = prunus.shrink(copy.deepcopy(model), x, "l1_structured", amount=0.8, min_keep=2)
    assert all(g.kept >= 2 for g in kept_two.groups if g.left is None)

    before = snapshot(model)
    with pytest.raises(prunus.AmountError, match="min_keep"):
        prunus.shrink(model, x, "l1_global", amount=1.0)
    with pytest.raises(prunus.AmountError, match="max_layer_sparsity"):
        prunus.shrink(model, x, "l1_structured", amount=0.75, max_layer_sparsity=0.5)
    assert snapshot(model) == before


# -- bad input leaves the model as it was ---------------------------------------------------------------------


def test_without_torch_pruning_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, snapshot: Snapshot
) -> None:
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # makes `import torch_pruning` fail
    model, x, _ = build("mlp")
    before = snapshot(model)
    with pytest.raises(prunus.MissingDependencyError, match=r"prunus\[shrink\]") as caught:
        prunus.shrink(model, x, "l1_structured", amount=0.5)
    assert isinstance(caught.value, ImportError)
    with pytest.raises(prunus.MissingDependencyError):
        prunus.prune_channels(model, x, "l1_structured", amount=0.5)
    assert snapshot(model) == before


@pytest.mark.parametrize(
    "inputs", [torch.randn(4, 13), torch.randn(4), (torch.randn(4, 12), torch.randn(4, 12)), "text"]
)
def test_wrong_example_inputs(inputs: Any, snapshot: Snapshot) -> None:
    model, _, _ = build("mlp")
    model.train()
    before = snapshot(model)
    with pytest.raises(prunus.TargetError, match="example_inputs"):
        prunus.shrink(model, inputs, "l1_structured", amount=0.5)
    assert snapshot(model) == before


def test_unstructured_masks_are_refused(snapshot: Snapshot) -> None:
    model, x, _ = build("mlp")
    prunus.prune(model, "l1_unstructured", amount=0.5)
    before = snapshot(model)
    with pytest.raises(prunus.MaskError, match="whole channels"):
        prunus.shrink(model, x)
    assert snapshot(model) == before


def test_weight_only_structured_masks_need_exact_false(snapshot: Snapshot) -> None:
    model, x, _ = build("mlp")
    prunus.prune(model, "l1_structured", amount=0.5, include=["fc1.weight"])
    before = snapshot(model)
    with pytest.raises(prunus.ShrinkError, match="exact=False"):
        prunus.shrink(model, x)  # fc1's biases still feed the removed neurons: not exact
    assert snapshot(model) == before
    report = prunus.shrink(model, x, exact=False)
    assert isinstance(model, MLP) and model.fc1.out_features == 16
    assert report.removed_channels == 16


def test_nothing_to_shrink(snapshot: Snapshot) -> None:
    model, x, _ = build("mlp")
    before = snapshot(model)
    with pytest.raises(prunus.NotPrunedError):
        prunus.shrink(model, x)
    with pytest.raises(prunus.ConfigError, match="strategy"):
        prunus.shrink(model, x, amount=0.5)
    with pytest.raises(prunus.ConfigError, match="_structured"):
        prunus.shrink(model, x, "l1_unstructured", amount=0.5)
    with pytest.raises(prunus.ConfigError, match="dim"):
        prunus.shrink(model, x, "l1_structured", amount=0.5, dim=1)
    with pytest.raises(prunus.ConfigError, match="heads"):
        prunus.shrink(model, x, "l1_structured", amount=0.5, heads={"nothing.*": 2})
    with pytest.raises(prunus.ConfigError, match="min_keep"):
        prunus.shrink(model, x, "l1_structured", amount=0.5, min_keep=-1)
    with pytest.raises(prunus.TargetError):
        prunus.shrink("model", x, "l1_structured", amount=0.5)  # type: ignore[arg-type]
    assert snapshot(model) == before


def test_a_forward_that_stores_its_head_count_is_rolled_back(snapshot: Snapshot) -> None:
    class FixedHeads(Attention):
        def split(self, x: Tensor) -> Tensor:
            return x.view(x.shape[0], x.shape[1], 4, self.head_dim).transpose(1, 2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.attn, self.out = nn.Linear(6, 16), FixedHeads(), nn.Linear(16, 3)

        def forward(self, x: Tensor) -> Tensor:
            x = self.embed(x)
            return self.out((x + self.attn(x)).mean(dim=1))

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 5, 6)
    before = snapshot(model)
    with pytest.raises(prunus.ShrinkError, match="no longer runs"):
        prunus.shrink(model, x, "l1_structured", amount=0.5, heads={"attn.[qkv]": 4})
    assert snapshot(model) == before


def test_a_failing_applier_leaves_prune_channels_atomic(
    private_registry: prunus.Registry, snapshot: Snapshot
) -> None:
    class Refuse:
        @prunus.hookimpl(tryfirst=True)
        def prunus_apply_mask(self, target: Target) -> None:
            if target.name == "fc2.weight":
                raise RuntimeError("no room")

    private_registry.register_plugin(Refuse(), name="refuse")
    model, x, _ = build("mlp")
    before = snapshot(model)
    with pytest.raises(prunus.PluginError, match="left as it was"):
        prunus.prune_channels(model, x, "l1_structured", amount=0.5, registry=private_registry)
    assert snapshot(model) == before


# -- regressions: no channel removed beyond amount without a reason -------------------------------------------


class SharedAfterSplit(nn.Module):
    """A conv's output split in half, both halves through one shared conv: the graph loses half the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.relu(self.conv(x)).split(8, dim=1)
        return self.head((self.shared(a) + self.shared(b)).mean(dim=(2, 3)))


class LinearIntoTransposedConv(nn.Module):
    """A Linear viewed as feature maps for a transposed convolution (a decoder's first step)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 16 * 2 * 2)
        self.up = nn.ConvTranspose2d(16, 4, 2, stride=2)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.up(torch.relu(self.fc(x)).view(-1, 16, 2, 2))))


class OneChannelConv(nn.Module):
    """A conv with a single output channel (groups == out_channels == 1) after an ordinary one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.score = nn.Conv2d(8, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(torch.relu(self.conv(x))).flatten(1)


class DepthwiseMultiplier(nn.Module):
    """A depthwise convolution with channel multiplier 2 (in_channels == groups, out_channels == 2 * groups)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.head = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.dw(torch.relu(self.conv(x)))).mean(dim=(2, 3)))


ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], dict[str, Any]]] = {
    **CASES,
    "split": (SharedAfterSplit, (2, 3, 8, 8), {}),
    "transposed": (LinearIntoTransposedConv, (2, 6), {}),
    "one_channel": (OneChannelConv, (2, 3, 6, 6), {}),
    "multiplier": (DepthwiseMultiplier, (2, 3, 6, 6), {}),
}


def build_zoo(name: str, seed: int = 0) -> tuple[nn.Module, Tensor, dict[str, Any]]:
    factory, shape, extra = ZOO[name]
    torch.manual_seed(seed)
    return (
        randomize_norms(factory()),
        torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1)),
        extra,
    )


def masked_rows(model: nn.Module, layer: str) -> int:
    mask = prunus.masks(model).get(f"{layer}.weight")
    return 0 if mask is None else int((~mask).flatten(1).all(dim=1).sum())


def test_a_split_the_graph_loses_track_of_is_left_not_over_pruned() -> None:
    model, x, _ = build_zoo("split")
    report = prunus.prune_channels(model, x, "l1_structured", amount=0.25)
    conv = next(g for g in report.groups if g.name == "conv")
    assert conv.left is not None and "loses track" in conv.left and "(shared)" in conv.left
    assert masked_rows(model, "conv") == 0  # before: 10 of 16 filters masked for amount=0.25
    assert report.beyond_amount_channels == 0


def test_a_view_into_a_transposed_conv_is_left_not_over_pruned() -> None:
    model, x, _ = build_zoo("transposed")
    report = prunus.prune_channels(model, x, "l1_structured", amount=0.5)
    fc = next(g for g in report.groups if g.name == "fc")
    assert fc.left is not None and "loses track" in fc.left
    assert masked_rows(model, "fc") == 0  # before: 62 of 64 rows zeroed
    shrunk, _, _ = build_zoo("transposed")
    prunus.shrink(shrunk, x, "l1_structured", amount=0.5)  # no "would empty a layer" any more
    assert isinstance(shrunk, LinearIntoTransposedConv) and shrunk.fc.out_features == 64


def test_a_conv_with_one_output_channel_is_not_depthwise() -> None:
    model, x, _ = build_zoo("one_channel")
    report = prunus.shrink(model, x, "l1_structured", amount=0.5)
    conv = next(g for g in report.groups if g.name == "conv")
    assert conv.left is None and len(conv.removed) == 4
    assert isinstance(model, OneChannelConv) and model.score.in_channels == 4


def test_out_channels_equal_to_groups_is_left_when_in_channels_differ() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.grouped = nn.Conv2d(
                8, 4, 3, padding=1, groups=4
            )  # 2 inputs per output: not depthwise
            self.head = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.grouped(torch.relu(self.conv(x))).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 3, 6, 6)
    expected = model(x)
    report = prunus.shrink(model, x, "l1_structured", amount=0.5)
    conv = next(g for g in report.groups if "conv" in g.layers)
    assert conv.left is not None and "would prune it as a depthwise one" in conv.left
    assert close(model(x), expected)


def test_a_report_says_why_nothing_was_removed() -> None:
    model, x, _ = build_zoo("multiplier")
    report = prunus.shrink(model, x, "l1_structured", amount=0.25)
    assert report.removed_channels == 0
    assert report.reason is not None and "rounds to none" in report.reason
    assert "nothing removed" in str(report)


# -- aligned widths and folded biases ---------------------------------------------------------------------------


def test_shrink_accepts_aligned_strategies() -> None:
    model, x, _ = build("mlp")
    report = prunus.shrink(model, x, "l1_aligned", amount=0.3, round_to=8)
    assert isinstance(model, MLP)
    assert model.fc1.out_features % 8 == 0 and model.fc2.out_features % 8 == 0
    assert (
        model.fc1.out_features == 24 and model.fc2.out_features == 16
    )  # 32 * 0.7 -> 24, 24 * 0.7 -> 16
    assert report.strategy == "l1_aligned"


def test_exact_false_folds_live_biases_into_the_next_layer() -> None:
    model, x, _ = build("mlp")
    with torch.no_grad():
        model.fc1.bias.uniform_(
            0.2, 1.0
        )  # positive: relu passes them, the removed neurons carry constants
        model.fc2.bias.uniform_(0.2, 1.0)
    prunus.prune(
        model, "l1_aligned", amount=0.5, round_to=8, exclude="fc3.weight"
    )  # rows only, biases live
    expected = model(x)
    report = prunus.shrink(model, x, exact=False)
    assert isinstance(model, MLP) and model.fc1.out_features == 16 and model.fc2.out_features == 16
    assert close(model(x), expected)  # before: outputs moved by up to 70 %
    notes = [g.note for g in report.groups if g.removed]
    assert notes and all(n is not None and "folded" in n for n in notes)
    assert all(
        prunus.shrinking.planning.DEAD_SILENT in g.beyond_amount for g in report.groups if g.removed
    )


# -- the over-pruning guard -------------------------------------------------------------------------------------


@given(
    name=st.sampled_from(sorted(ZOO)),
    amount=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75]),
    granularity=st.sampled_from(["structured", "global"]),
    silenced=st.integers(min_value=0, max_value=3),
    seed=st.integers(min_value=0, max_value=3),
)
@settings(max_examples=25, deadline=None)
def test_channels_removed_never_exceed_the_amount_plus_those_reported(
    name: str, amount: float, granularity: str, silenced: int, seed: int
) -> None:
    model, x, extra = build_zoo(name, seed)
    # Some channels silent already (their producer rows zero): removable beyond amount, with a reason.
    linears = [
        m
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m.weight.shape[0] > 4
    ]
    with torch.no_grad():
        for layer in linears[:1]:
            layer.weight[:silenced] = 0
            if layer.bias is not None:
                layer.bias[:silenced] = 0
    try:
        report = prunus.prune_channels(model, x, f"l1_{granularity}", amount=amount, **extra)
    except prunus.AmountError:
        return  # the limits refuse the amount: nothing happened
    groups = [g for g in report.groups if g.left is None]
    beyond = [sum(len(c) for c in g.beyond_amount.values()) // g.unit for g in groups]
    removed = [len(g.removed) // g.unit for g in groups]
    units = [g.channels // g.unit for g in groups]
    if granularity == "structured":
        for r, b, n in zip(removed, beyond, units, strict=True):
            assert r <= count_to_prune(amount, n) + b
    else:
        assert sum(removed) <= count_to_prune(amount, sum(units)) + sum(beyond)
    # Whatever was removed beyond amount was silent: the masked model computes what the model computed.
    for g in report.groups:
        assert g.left is None or not g.removed


# -- nn.MultiheadAttention --------------------------------------------------------------------------------------


class MHABlock(nn.Module):
    """A pre-norm-free encoder block around nn.MultiheadAttention (batch first), then an FFN."""

    def __init__(self, batch_first: bool = True, packed: bool = True) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(
            16, 4, batch_first=batch_first, kdim=None if packed else 16, vdim=None if packed else 12
        )
        self.values = nn.Linear(6, 12)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.out = nn.Linear(16, 3)
        self.batch_first = batch_first

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        seq = h if self.batch_first else h.transpose(0, 1)
        values = self.values(x) if self.attn.vdim != 16 else seq
        if not self.batch_first and values is not seq:
            values = values.transpose(0, 1)
        a, _ = self.attn(seq, seq, values, need_weights=False)
        h = h + (a if self.batch_first else a.transpose(0, 1))
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.out(h.mean(dim=1))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("packed", [True, False])
def test_multihead_attention_loses_whole_heads(batch_first: bool, packed: bool) -> None:
    torch.manual_seed(0)
    model, x = MHABlock(batch_first, packed).eval(), torch.randn(2, 5, 6)
    masked = copy.deepcopy(model)
    prunus.prune_channels(masked, x, "l1_structured", amount=0.5)
    expected = masked(x)
    report = prunus.shrink(masked, x)
    attn = masked.attn
    assert isinstance(attn, nn.MultiheadAttention) and attn.num_heads == 2
    assert attn.out_proj.in_features == 8
    heads = next(g for g in report.groups if g.name == "attn")
    assert heads.unit == 4 and len(heads.removed) == 8
    assert close(masked(x), expected)
    with torch.no_grad():  # the weights it returns are per remaining head
        q, v = torch.randn(5, 16), torch.randn(5, 16 if packed else 12)  # unbatched
        _, weights = attn(q, q, v, average_attn_weights=False)
    assert weights is not None and weights.shape == (2, 5, 5)

    fresh = MHABlock(batch_first, packed)
    record = json.loads(json.dumps(prunus.shrink_state(masked)))
    prunus.load_shrunk(fresh, masked.state_dict(), record)
    assert type(fresh.attn) is type(attn) and close(fresh.eval()(x), expected)


def test_a_failed_shrink_gives_multihead_attention_its_class_back(snapshot: Snapshot) -> None:
    class Broken(MHABlock):
        def forward(self, x: Tensor) -> Tensor:
            if self.attn.num_heads != 4:
                raise RuntimeError("expects four heads")
            return super().forward(x)

    torch.manual_seed(0)
    model, x = Broken().eval(), torch.randn(2, 5, 6)
    before = snapshot(model)
    with pytest.raises(prunus.ShrinkError, match="no longer runs"):
        prunus.shrink(model, x, "l1_structured", amount=0.5)
    assert type(model.attn) is nn.MultiheadAttention and snapshot(model) == before


# -- data-aware criteria: the seam calibration plugs into -------------------------------------------------------


def test_a_data_aware_criterion_ranks_neurons_by_their_activations(
    private_registry: prunus.Registry,
) -> None:
    class InputNorm(prunus.Criterion):
        """Scores each weight entry by the norm of the input column it reads, over ``context.data``."""

        name = "input_norm"
        summary = "input activation norms (test)"

        def score(self, target: Target, context: PruneContext) -> Tensor:
            norms = context.extras.get("input_norms")
            if norms is None:
                norms = {}
                hooks = [
                    m.register_forward_hook(
                        lambda m, args, out: norms.__setitem__(
                            id(m), args[0].flatten(0, -2).norm(dim=0)
                        )
                    )
                    for m in context.model.modules()
                    if isinstance(m, nn.Linear)
                ]
                with torch.no_grad():
                    context.model(context.data)
                for hook in hooks:
                    hook.remove()
                context.extras["input_norms"] = norms
            return norms[id(target.module)].expand_as(target.tensor).clone()

    private_registry.register(InputNorm)
    model, x, _ = build("mlp")
    assert isinstance(model, MLP)
    with (
        torch.no_grad()
    ):  # fc1's neurons 0-7 never fire on positive inputs: their activations are zero
        model.fc1.weight[:8] = -model.fc1.weight[:8].abs()
        model.fc1.bias[:8] = -1.0
    data = x.abs()
    report = prunus.shrink(
        model, x, "input_norm_structured", amount=0.25, data=data, registry=private_registry
    )
    fc1 = next(g for g in report.groups if g.name == "fc1")
    assert fc1.removed == list(range(8))
