"""Sparse execution: prunus.to_sparse / prunus.to_dense, SparseLinear, and the 2:4 path on CUDA."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import prunus
from prunus import SparseLinear
from prunus.errors import ConfigError, TargetError
from prunus.hardware.sparse import follows_nm, sparse_weight

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def mlp(seed: int = 0, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(32, 64, bias=bias), nn.ReLU(), nn.Linear(64, 48, bias=bias), nn.Linear(48, 10)
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 32), (2, 5, 32), (32,)])
def test_outputs_equal_the_masked_dense_model(bias, shape):
    model = mlp(bias=bias)
    prunus.prune(model, "l1_unstructured", amount=0.8)
    x = torch.randn(*shape)
    expected = model(x)
    assert prunus.to_sparse(model) == ["0", "2", "3"]
    assert all(isinstance(model[i], SparseLinear) for i in (0, 2, 3))
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert prunus.to_dense(model) == ["0", "2", "3"]
    assert all(type(model[i]) is nn.Linear for i in (0, 2, 3))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_round_trip_keeps_the_masks_so_restore_and_remove_work():
    model = mlp()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    prunus.prune(model, "l1_unstructured", amount=0.5)
    masks = {k: v.clone() for k, v in prunus.masks(model).items()}
    prunus.to_sparse(model)
    assert not prunus.is_pruned(model)  # the sparse modules hold the masks aside
    prunus.to_dense(model)
    assert set(prunus.masks(model)) == set(masks)
    for name, mask in prunus.masks(model).items():
        assert torch.equal(mask, masks[name])
    prunus.restore(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]), key

    prunus.prune(model, "l1_unstructured", amount=0.5, restorable=False)
    prunus.to_sparse(model)
    prunus.to_dense(model)
    assert prunus.remove(model)


def test_pruned_entries_stay_zero_through_training_after_the_round_trip():
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    prunus.to_sparse(model)
    prunus.to_dense(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 32)).sum().backward()
    optimizer.step()
    for name, mask in prunus.masks(model).items():
        assert not bool(model.get_parameter(name)[~mask].any()), name


def test_a_model_pruned_and_made_permanent_converts_too():
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.9)
    prunus.remove(model)
    prunus.to_sparse(model)
    back = prunus.to_dense(model)
    assert back and not prunus.is_pruned(model)


def test_min_sparsity_include_and_exclude():
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.9, include="0.weight")
    prunus.prune(model, "l1_unstructured", amount=0.3, include="2.weight")
    assert prunus.to_sparse(model, min_sparsity=0.5) == ["0"]
    prunus.to_dense(model)
    assert prunus.to_sparse(model, include="2") == ["2"]
    prunus.to_dense(model)
    assert prunus.to_sparse(model, exclude=["0"]) == ["2"]


def test_nothing_to_convert_says_why():
    with pytest.raises(TargetError, match=r"0: sparsity 0\.0%"):
        prunus.to_sparse(mlp())
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    with pytest.raises(TargetError, match=r"below 90\.0%"):
        prunus.to_sparse(model, min_sparsity=0.9)
    with pytest.raises(TargetError, match="no SparseLinear"):
        prunus.to_dense(model)


def test_a_lone_linear_is_refused_with_the_way_out():
    linear = nn.Linear(8, 4)
    prunus.prune(nn.Sequential(linear), "l1_unstructured", amount=0.5)
    with pytest.raises(TargetError, match=r"SparseLinear\.from_linear"):
        prunus.to_sparse(linear)
    sparse = SparseLinear.from_linear(linear)
    x = torch.randn(3, 8)
    torch.testing.assert_close(sparse(x), linear(x))


def test_subclasses_of_linear_are_left_alone():
    # MultiheadAttention reads out_proj.weight directly; replacing the module would break it.
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
            self.fc = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.attention(x, x, x, need_weights=False)[0])

    torch.manual_seed(0)
    model = Block()
    prunus.prune(
        model, "l1_unstructured", amount=0.8, include=["fc.weight", "attention.out_proj.weight"]
    )
    x = torch.randn(2, 3, 16)
    expected = model(x)
    assert prunus.to_sparse(model) == ["fc"]
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_bad_arguments():
    model = mlp()
    with pytest.raises(ConfigError, match="layout"):
        prunus.to_sparse(model, layout="coo")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="min_sparsity"):
        prunus.to_sparse(model, min_sparsity=1.5)
    with pytest.raises(TargetError, match=r"nn\.Module"):
        prunus.to_sparse("model")  # type: ignore[arg-type]


def test_bsr_for_block_pruned_weights():
    model = mlp()
    prunus.prune(model, "l1_block", amount=0.75, block=(8, 8), include=["0.weight", "2.weight"])
    x = torch.randn(5, 32)
    expected = model(x)
    assert prunus.to_sparse(model, layout="bsr", blocksize=(8, 8)) == ["0", "2"]  # 3: 10 rows
    assert model[0].layout == "bsr"
    assert model[0].nnz == 8 * 64  # 8 of the 32 blocks of 8x8 kept, stored whole
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_bsr_needs_a_blocksize_and_square_blocks_on_cpu():
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    with pytest.raises(TargetError, match="needs blocksize"):
        prunus.to_sparse(model, layout="bsr")
    with pytest.raises(TargetError, match="square blocks"):
        prunus.to_sparse(model, layout="bsr", blocksize=(1, 4))


def test_csr_refuses_dtypes_without_a_cpu_kernel():
    model = mlp().to(torch.bfloat16)
    prunus.prune(model, "l1_unstructured", amount=0.5)
    with pytest.raises(TargetError, match="float32 or float64"):
        prunus.to_sparse(model)
    with pytest.raises(ConfigError, match="2:4 semi-structured kernels run on CUDA"):
        sparse_weight(model[0].weight, "semi_structured")


def test_state_dict_round_trip_of_a_converted_model():
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.8)
    prunus.to_sparse(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)

    other = mlp(seed=1)
    prunus.prune(other, "l1_unstructured", amount=0.5)
    prunus.to_sparse(other)
    other.load_state_dict(state)
    x = torch.randn(3, 32)
    torch.testing.assert_close(other(x), model(x))

    wrong = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.Linear(48, 10))
    prunus.prune(wrong, "l1_unstructured", amount=0.5)
    prunus.to_sparse(wrong)
    bad = dict(state)
    bad["0.weight"] = torch.zeros(64, 32)
    with pytest.raises(RuntimeError, match=r"expected a torch\.sparse_csr tensor"):
        wrong.load_state_dict(bad)


def test_gradients_reach_the_input_through_a_sparse_layer():
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    x = torch.randn(3, 32, requires_grad=True)
    model(x).sum().backward()
    expected = x.grad.clone()
    x.grad = None
    prunus.to_sparse(model)
    model(x).sum().backward()
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-5)


def test_follows_nm():
    weight = torch.tensor([[1.0, 0.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0]])
    assert follows_nm(weight, 2, 4)
    assert not follows_nm(weight, 1, 4)
    assert follows_nm(torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0]]), 2, 4)  # a short last group
    assert not follows_nm(torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]]), 2, 4)
    assert follows_nm(weight.t(), 2, 4, dim=0)


def test_repr_names_layout_and_nonzeros():
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.75)
    prunus.to_sparse(model)
    assert "layout=csr, nnz=512" in repr(model[0])


# -- CUDA -----------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
def test_csr_on_cuda():
    model = mlp().cuda()
    prunus.prune(model, "l1_unstructured", amount=0.9)
    x = torch.randn(8, 32, device="cuda")
    expected = model(x)
    prunus.to_sparse(model, layout="csr")
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@cuda
def test_semi_structured_two_four_on_cuda():
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("2:4 kernels need compute capability 8.0")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 128)).cuda().half()
    prunus.prune(model, "l1_nm")
    x = torch.randn(64, 256, device="cuda", dtype=torch.half)
    expected = model(x)
    assert prunus.to_sparse(model) == ["0", "2"]
    assert model[0].layout == "semi_structured"
    torch.testing.assert_close(model(x), expected, rtol=1e-2, atol=1e-2)
    prunus.to_dense(model)
    torch.testing.assert_close(model(x), expected, rtol=1e-3, atol=1e-3)
    assert prunus.is_pruned(model)


@pytest.mark.gpu
@cuda
def test_semi_structured_refuses_a_weight_that_is_not_two_four():
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("2:4 kernels need compute capability 8.0")
    model = nn.Sequential(nn.Linear(256, 512)).cuda().half()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    with pytest.raises(TargetError, match="more than 2 nonzeros"):
        prunus.to_sparse(model, layout="semi_structured")
    assert prunus.to_sparse(model) == ["0"] and model[0].layout == "csr"  # auto falls back
