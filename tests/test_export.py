"""Deployment exports: shrunken and masked models through torch.export and ONNX (run in onnxruntime), and a
clear refusal for sparse execution modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import prunus


def test_torch_export_keeps_the_zeros_and_leaves_the_masks_out(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor]
) -> None:
    model = make_model("lenet")
    prunus.prune(model, "l1_unstructured", amount=0.7)
    x = example_input("lenet")
    program = prunus.export_program(model, x)
    assert torch.equal(program.module()(x), model(x))
    exported = {**program.state_dict, **program.constants}
    assert not any("_prunus_" in key for key in exported)
    assert prunus.is_pruned(model)  # the model itself keeps its masks
    assert int(program.state_dict["conv1.weight"].count_nonzero()) == int(
        model.conv1.weight.count_nonzero()
    )


@pytest.mark.slow
def test_onnx_of_shrunken_and_masked_models_runs_in_onnxruntime(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor], tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch_pruning")
    onnx = pytest.importorskip("onnx")
    x = example_input("resnet", batch=2)
    shrunk = make_model("resnet")
    prunus.shrink(shrunk, x, "l1_structured", amount=0.5)
    batch = torch.export.Dim("batch", min=1, max=64)
    report = prunus.export_onnx(shrunk, x, tmp_path / "shrunk.onnx", dynamic_shapes=({0: batch},))
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    dense = make_model("resnet")
    prunus.export_onnx(dense, x, tmp_path / "dense.onnx")
    assert report.bytes < (tmp_path / "dense.onnx").stat().st_size  # shrunk is smaller on disk too

    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(tmp_path / "shrunk.onnx"), providers=["CPUExecutionProvider"]
    )
    bigger = example_input("resnet", batch=5)  # a batch size it was not exported with
    (got,) = session.run(None, {session.get_inputs()[0].name: bigger.numpy()})
    assert torch.allclose(torch.from_numpy(got), shrunk(bigger), atol=1e-5)

    masked = make_model("resnet")
    prunus.prune(masked, "l1_unstructured", amount=0.8)
    report = prunus.export_onnx(masked, x, tmp_path / "masked.onnx")
    graph = onnx.load(str(tmp_path / "masked.onnx")).graph
    zeros = {i.name: int((onnx.numpy_helper.to_array(i) == 0).sum()) for i in graph.initializer}
    assert sum(zeros.values()) >= int(sum((~m).sum() for m in prunus.masks(masked).values()))
    assert not any("_prunus_" in name for name in zeros)


def test_sparse_modules_are_refused_with_what_to_do(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    prunus.prune(model, "l1_unstructured", amount=0.9)
    prunus.to_sparse(model, layout="csr", min_sparsity=0.5)
    x = torch.randn(2, 64)
    for export in (
        lambda: prunus.export_program(model, x),
        lambda: prunus.export_onnx(model, x, tmp_path / "m.onnx", check=False),
    ):
        with pytest.raises(prunus.ExportError, match=r"prunus\.to_dense\(model\)"):
            export()
    assert not (tmp_path / "m.onnx").exists()
    prunus.to_dense(model)
    assert torch.equal(prunus.export_program(model, x).module()(x), model(x))
