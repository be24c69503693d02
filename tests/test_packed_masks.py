"""Masks are kept packed, 1 bit per entry: a bf16 model's masks cost a sixteenth of its weight bytes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import prunus
from prunus import masking


def mask_bytes(model: nn.Module) -> int:
    return sum(
        buffer.numel() * buffer.element_size()
        for module in model.modules()
        for key, buffer in module._buffers.items()
        if key.startswith(masking.MASK_PREFIX)
    )


def test_masks_of_a_bf16_model_cost_a_sixteenth_of_its_weights() -> None:
    model = nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 40)).to(torch.bfloat16)
    prunus.prune(model, "l1_unstructured", amount=0.5, restorable=False)
    weights = model[0].weight.numel() + model[1].weight.numel()
    assert mask_bytes(model) == weights // 8  # one bit per entry
    assert mask_bytes(model) <= weights * 2 // 16
    for name, mask in prunus.masks(model).items():
        assert mask.dtype == torch.bool and mask.shape == model.get_parameter(name).shape
        assert int((model.get_parameter(name) == 0).sum()) >= int((~mask).sum())


def test_a_tiny_parameter_keeps_a_bool_mask() -> None:
    layer = nn.Linear(3, 2)
    prunus.prune(layer, "l1_unstructured", include="bias", amount=1)
    assert layer._buffers[masking.MASK_PREFIX + "bias"].dtype == torch.bool


def test_training_keeps_packed_masks_enforced() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    prunus.prune(model, "l1_unstructured", amount=0.7)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, 16)).square().sum().backward()
        optimizer.step()
    for name, mask in prunus.masks(model).items():
        assert bool((model.get_parameter(name)[~mask] == 0).all())


@given(st.integers(1, 70), st.integers(0, 2**16))
def test_the_torch_path_packs_as_numpy_does(count: int, seed: int) -> None:
    mask = torch.rand(count, generator=torch.Generator().manual_seed(seed)) > 0.5
    packed = masking.pack(mask)
    if count < 8:
        assert packed is mask
        return
    assert torch.equal(masking._pack_torch(mask), packed)
    assert torch.equal(masking._unpack_torch(packed, count), mask)
    assert torch.equal(masking.unpack(packed, (count,)), mask)


@pytest.mark.parametrize("restorable", [True, False])
def test_restore_and_undo_read_packed_masks(restorable: bool) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prunus.prune(model, "l1_unstructured", amount=0.5, restorable=restorable)
    prunus.prune(model, "l1_unstructured", amount=0.5, restorable=restorable)
    if restorable:
        prunus.restore(model)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    else:
        assert all(m.dtype == torch.bool for m in prunus.masks(model).values())
