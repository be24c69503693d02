"""prunus.shrink and prunus.prune_channels: a smaller dense model that computes what the masked one computed.

Every test compares outputs and counts; none times anything.
"""

from __future__ import annotations

import copy
import io
import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import prunus
from prunus import PruneContext, Target
from prunus.testing.zoo import MLP, ResNet

Snapshot = Callable[[nn.Module], dict[str, Any]]


@pytest.fixture(autouse=True)
def _needs_torch_pruning(request: pytest.FixtureRequest) -> None:
    # Every test but the one about its absence needs the shrink extra.
    if not request.node.name.startswith("test_without_torch_pruning"):
        pytest.importorskip("torch_pruning")


# -- models ---------------------------------------------------------------------------------------------------


def randomize_norms(model: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine terms far from the identity, so they matter to the outputs."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 2 - 1)
    return model.eval()


class GroupedNet(nn.Module):
    """A grouped convolution, a depthwise one, then a pointwise one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.pointwise = nn.Conv2d(8, 12, 1)
        self.head = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.grouped(torch.relu(self.conv(x))))
        x = torch.relu(self.bn(self.depthwise(x)))
        return self.head(self.pointwise(x).mean(dim=(2, 3)))


class ConcatNet(nn.Module):
    """Two branches concatenated along channels."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 6, 3, padding=1)
        self.right = nn.Conv2d(3, 10, 1)
        self.mix = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        return self.head(torch.relu(self.mix(x)).mean(dim=(2, 3)))


class FlattenNet(nn.Module):
    """Conv features flattened into a Linear: each channel owns several of its input columns."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.head = nn.Linear(10, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


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
    "mlp": (partial(MLP, (12, 32, 24, 5)), (4, 12), {}),
    "resnet": (partial(ResNet, (8, 16), depth=1, classes=4), (2, 3, 8, 8), {}),
    "grouped": (GroupedNet, (2, 3, 8, 8), {}),
    "concat": (ConcatNet, (2, 3, 8, 8), {}),
    "flatten": (FlattenNet, (2, 3, 6, 6), {}),
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
