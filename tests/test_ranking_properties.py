"""A few Hypothesis properties of ``prunus.ranking.keep_mask`` and of amount validation.

(The full property-based conformance kit for strategies lives in ``prunus.testing``.)
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

import prunus
from prunus.config import count_to_prune
from prunus.ranking import keep_mask

light = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Scores from a small pool of values, so ties are common; infinities included.
score_values = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, math.inf, -math.inf]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32),
)
dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16])


@st.composite
def ranking_case(draw: st.DrawFn) -> tuple[Tensor, int, Tensor | None]:
    """Scores of a random shape, an optional eligibility mask, and a valid k."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    numel = math.prod(shape)
    values = draw(st.lists(score_values, min_size=numel, max_size=numel))
    scores = torch.tensor(values, dtype=torch.float64).to(draw(dtypes)).reshape(shape)
    eligible = None
    if draw(st.booleans()):
        flags = draw(st.lists(st.booleans(), min_size=numel, max_size=numel))
        eligible = torch.tensor(flags, dtype=torch.bool).reshape(shape)
    available = numel if eligible is None else int(eligible.sum())
    k = draw(st.integers(0, available))
    return scores, k, eligible


def pruned_among_eligible(mask: Tensor, eligible: Tensor | None) -> Tensor:
    return ~mask if eligible is None else eligible & ~mask


@light
@given(ranking_case())
def test_keep_mask_prunes_exactly_k_eligible_entries(
    case: tuple[Tensor, int, Tensor | None],
) -> None:
    scores, k, eligible = case
    mask = keep_mask(scores, k, eligible)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert int(pruned_among_eligible(mask, eligible).sum()) == k


@light
@given(ranking_case())
def test_keep_mask_prunes_the_lowest_scores(case: tuple[Tensor, int, Tensor | None]) -> None:
    scores, k, eligible = case
    mask = keep_mask(scores, k, eligible)
    pruned = pruned_among_eligible(mask, eligible)
    kept = mask if eligible is None else eligible & mask
    if bool(pruned.any()) and bool(kept.any()):
        wide = scores.double()
        assert float(wide[pruned].max()) <= float(wide[kept].min())


@light
@given(ranking_case())
def test_keep_mask_never_keeps_ineligible_entries(case: tuple[Tensor, int, Tensor | None]) -> None:
    scores, k, eligible = case
    mask = keep_mask(scores, k, eligible)
    if eligible is not None:
        assert not bool((mask & ~eligible).any())


@light
@given(ranking_case())
def test_keep_mask_is_deterministic(case: tuple[Tensor, int, Tensor | None]) -> None:
    scores, k, eligible = case
    first = keep_mask(scores, k, eligible)
    again = keep_mask(scores.clone(), k, None if eligible is None else eligible.clone())
    assert torch.equal(first, again)


@light
@given(ranking_case())
def test_keep_mask_breaks_ties_by_position(case: tuple[Tensor, int, Tensor | None]) -> None:
    scores, k, eligible = case
    mask = keep_mask(scores, k, eligible).reshape(-1)
    flat = scores.double().reshape(-1)
    pruned = pruned_among_eligible(mask, None if eligible is None else eligible.reshape(-1))
    kept = mask if eligible is None else eligible.reshape(-1) & mask
    # Among entries with the same score, no kept entry comes before a pruned one.
    for index in kept.nonzero().reshape(-1).tolist():
        later = pruned.clone()
        later[: index + 1] = False
        assert not bool((later & (flat == flat[index])).any())


@light
@given(st.integers(1, 40), st.data())
def test_keep_mask_matches_topk_without_ties(size: int, data: st.DataObject) -> None:
    scores = torch.randperm(size, generator=torch.Generator().manual_seed(size)).double()
    k = data.draw(st.integers(0, size))
    mask = keep_mask(scores, k)
    expected = torch.ones(size, dtype=torch.bool)
    expected[torch.topk(scores, k, largest=False).indices] = False
    assert torch.equal(mask, expected)


def test_keep_mask_rejects_k_out_of_range() -> None:
    with pytest.raises(ValueError, match="k=4 of 3"):
        keep_mask(torch.zeros(3), 4)
    with pytest.raises(ValueError, match="k=-1"):
        keep_mask(torch.zeros(3), -1)


# -- amounts -----------------------------------------------------------------------------------------------------


@light
@given(st.floats(min_value=0.0, max_value=1.0), st.integers(0, 10_000))
def test_valid_fractions_are_accepted_and_rounded_as_torch(amount: float, size: int) -> None:
    strategy = prunus.registry.get("l1_unstructured", amount=amount)
    assert strategy.options["amount"] == amount
    count = count_to_prune(amount, size)
    assert count == round(amount * size)
    assert 0 <= count <= size


@light
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_int_counts_are_accepted_up_to_the_size(amount: int, size: int) -> None:
    assert prunus.registry.get("l1_unstructured", amount=amount).options["amount"] == amount
    if amount <= size:
        assert count_to_prune(amount, size) == amount
    else:
        with pytest.raises(prunus.AmountError, match=f"amount={amount} .* {size} "):
            count_to_prune(amount, size)


@light
@given(
    st.one_of(
        st.floats(allow_nan=True).filter(lambda x: math.isnan(x) or not 0.0 <= x <= 1.0),
        st.integers(max_value=-1),
    )
)
def test_out_of_range_amounts_are_rejected(amount: float) -> None:
    with pytest.raises(prunus.ConfigError, match=r"amount=") as caught:
        prunus.registry.get("l1_unstructured", amount=amount)
    assert repr(amount) in str(caught.value)


@light
@given(
    st.one_of(
        st.booleans(),
        st.none(),
        st.text(max_size=5),
        st.lists(st.floats(0, 1), max_size=2),
        st.complex_numbers(),
    )
)
def test_amounts_of_other_types_are_rejected(amount: object) -> None:
    with pytest.raises(prunus.ConfigError, match="amount"):
        prunus.registry.get("l1_structured", amount=amount)
