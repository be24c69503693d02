"""SparseGPT: the ``sparsegpt`` criterion and the ``sparsegpt`` weight reconstruction.

SparseGPT (Frantar and Alistarh, 2023) prunes a layer so that its output on calibration data changes least. With
``X`` the layer's inputs (rows of input features) and ``H = X^T X`` their Gram matrix (the Hessian of the squared
output error, up to a factor 2), removing weight ``w_ij`` and re-solving the row's remaining weights costs
``w_ij^2 / [H^-1]_jj`` (Optimal Brain Surgeon), and the best update of the other weights follows from the
inverse Hessian. SparseGPT sweeps the columns left to right, in blocks of ``block_size``, using the rows of the
upper Cholesky factor of ``H^-1`` for the updates.

Here the two halves are separate pieces:

* the **criterion** ``sparsegpt`` scores ``w_ij^2 / U_jj^2`` (``U`` that Cholesky factor: the saliency of each
  weight when its column's turn in the sweep comes) and composes with every granularity: ``sparsegpt_row``,
  ``sparsegpt_unstructured``, ``sparsegpt_nm`` (2:4)...; by default ``prune`` follows its masks with
* the **reconstruction** ``sparsegpt``: the column sweep itself, from any mask, whatever criterion chose it
  (``prune(model, "wanda_row", ..., reconstruct=True)``, ``reconstruct="sparsegpt"`` after magnitude). With
  ``reselect=True`` (what the criterion asks for) it also chooses the pruned entries of each block of columns
  again when the sweep reaches it, from the weights as the earlier columns' updates left them, as SparseGPT does;
  each of the granularity's groups keeps its count (:meth:`Reconstruction.reconstruct_within`).

Both read the :class:`~prunus.plugin_api.InputGram` statistic and dampen ``H`` by ``dampening`` times the mean
of its diagonal before inverting it (more dampening if the Cholesky factorization fails). Inputs that are always
zero ("dead" features) have no say: their weights score zero and are never updated.
"""

from __future__ import annotations

import weakref

import torch
from pydantic import Field, StrictBool, StrictFloat, StrictInt
from torch import Tensor

from prunus.plugin_api import (
    Criterion,
    InputGram,
    PruneContext,
    Reconstruction,
    Registrar,
    StrategyConfig,
    Target,
    from_matrix,
    hookimpl,
    matrix_view,
)

__all__ = [
    "Reselection",
    "SparseGPT",
    "SparseGPTReconstruction",
    "inverse_hessian_factor",
    "obs_sweep",
]

_RETRIES = 6
"""How many times dampening grows tenfold before a Gram matrix is declared unusable."""

# The factor of a Gram matrix, per dampening: layers reading one input share its Gram tensor, and the criterion
# and the reconstruction share the factor; it goes when the Gram matrix does (at the end of the block).
# (Keyed by identity: tensors compare element-wise, so a WeakKeyDictionary cannot hold them.)
_FACTORS: dict[int, tuple[weakref.ref[Tensor], dict[float, tuple[Tensor, Tensor]]]] = {}


def _factor(gram: Tensor, dead: Tensor, dampening: float, dtype: torch.dtype) -> Tensor | None:
    """The upper Cholesky factor of the damped inverse, in ``dtype``, or ``None`` if it cannot be had."""
    hessian = gram.detach().to(dtype, copy=True)
    hessian[dead, dead] = 1.0
    mean = float(hessian.diagonal().mean()) if hessian.numel() else 1.0
    damp = dampening * mean
    for _ in range(_RETRIES):
        damped = hessian.clone()
        damped.diagonal().add_(damp)
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            factor, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if int(info) == 0 and bool(torch.isfinite(factor).all()):
                result: Tensor = factor
                return result
        damp = max(damp * 10, 1e-6 * mean)
    return None


def inverse_hessian_factor(gram: Tensor, dampening: float) -> tuple[Tensor, Tensor]:
    """The upper Cholesky factor ``U`` of ``(H + lambda I)^-1`` and the bool mask of dead input features.

    ``H`` is ``gram`` with every dead feature (zero diagonal) made independent (diagonal one), ``lambda`` is
    ``dampening`` times the mean of its diagonal (grown tenfold while the factorization fails). Computed in
    float32 (float64 if that fails), returned in float32; cached while ``gram`` lives.
    """
    entry = _FACTORS.get(id(gram))
    if entry is not None and entry[0]() is gram and dampening in entry[1]:
        return entry[1][dampening]
    dead = gram.diagonal() == 0
    # float32 as SparseGPT computes; float64 only when float32 cannot factor the matrix at any dampening.
    factor = _factor(gram, dead, dampening, torch.float32)
    if factor is None:
        factor = _factor(gram, dead, dampening, torch.float64)
    if factor is None:
        raise ValueError(
            "the input Gram matrix is not positive definite even with a hundred thousand times the "
            "dampening; the calibration inputs may hold inf or NaN"
        )
    result = (factor.float(), dead)
    if entry is None or entry[0]() is not gram:
        key = id(gram)
        entry = (weakref.ref(gram, lambda _, key=key: _FACTORS.pop(key, None)), {})  # type: ignore[misc]
        _FACTORS[key] = entry
    entry[1][dampening] = result
    return result


class SparseGPTConfig(StrategyConfig):
    """Options of the ``sparsegpt`` criterion."""

    dampening: StrictFloat | StrictInt = Field(
        default=0.01,
        ge=0,
        le=1,
        description="added to the Hessian's diagonal, as a fraction of its mean (SparseGPT's percdamp)",
    )


class SparseGPT(Criterion):
    """SparseGPT's saliency ``w_ij^2 / U_jj^2`` (``U``: upper Cholesky factor of the damped inverse Hessian).

    Followed by SparseGPT's reconstruction unless ``prune(..., reconstruct=False)``.
    """

    name = "sparsegpt"
    summary = "w^2 / [H^-1]_jj, then SparseGPT's reconstruction (needs data=)"
    Config = SparseGPTConfig
    statistics = (InputGram,)

    def score(self, target: Target, context: PruneContext) -> Tensor:
        assert isinstance(self.config, SparseGPTConfig)
        factor, dead = inverse_hessian_factor(
            context.statistic(target, InputGram), float(self.config.dampening)
        )
        tensor = target.tensor
        dtype = torch.promote_types(tensor.dtype, torch.float32)
        weights = matrix_view(target.module, tensor).to(dtype)
        diagonal = factor.diagonal().to(tensor.device, dtype)
        scores = weights.square() / diagonal.square()
        # An input that is always zero makes its weights worthless.
        scores[:, dead.to(tensor.device)] = 0.0
        return from_matrix(target.module, scores, tensor.shape).contiguous()

    def reconstruction(self) -> tuple[str, dict[str, object]] | None:
        assert isinstance(self.config, SparseGPTConfig)
        # As SparseGPT does: the mask of each block of columns is chosen when the sweep reaches it.
        return ("sparsegpt", {"dampening": self.config.dampening, "reselect": True})


class SparseGPTReconstructionConfig(SparseGPTConfig):
    """Options of the ``sparsegpt`` reconstruction: the criterion's ``dampening``, ``block_size`` and
    ``reselect``."""

    block_size: StrictInt = Field(
        default=128, ge=1, description="columns updated together (lazy batch updates)"
    )
    reselect: StrictBool = Field(
        default=False,
        description=(
            "choose the pruned entries of each block of columns again when the sweep reaches it, from the "
            "weights as the earlier columns' updates left them (SparseGPT's adaptive mask selection), keeping "
            "as many in each of the granularity's groups as the mask prunes there; the sparsegpt criterion "
            "turns it on"
        ),
    )


class SparseGPTReconstruction(Reconstruction):
    """SparseGPT's column sweep: each pruned weight's error is spread over the columns after it.

    For each column ``j`` in turn, every row whose weight ``w_ij`` the mask prunes sets it to zero and adds
    ``-w_ij / U_jj * U_j,k`` to its weights ``k > j``: the update that keeps the layer's output on the
    calibration data closest (in least squares) to what it was. Updates are applied lazily (:func:`obs_sweep`):
    column by column within runs of 16 columns, with one matrix product from a run to the rest of its block of
    ``block_size`` columns and one from a block to the columns after it.
    """

    name = "sparsegpt"
    summary = (
        "re-solve the kept weights from the inverse Hessian, column block by block (SparseGPT)"
    )
    Config = SparseGPTReconstructionConfig
    statistics = (InputGram,)

    def reconstruct(self, target: Target, mask: Tensor, context: PruneContext) -> Tensor:
        return self._sweep(target, mask, None, context)[0]

    def reconstruct_within(
        self, target: Target, mask: Tensor, cells: Tensor | None, context: PruneContext
    ) -> tuple[Tensor, Tensor]:
        assert isinstance(self.config, SparseGPTReconstructionConfig)
        if not self.config.reselect or cells is None:
            return self.reconstruct(target, mask, context), mask
        return self._sweep(target, mask, cells, context)

    def _sweep(
        self, target: Target, mask: Tensor, cells: Tensor | None, context: PruneContext
    ) -> tuple[Tensor, Tensor]:
        assert isinstance(self.config, SparseGPTReconstructionConfig)
        factor, dead = inverse_hessian_factor(
            context.statistic(target, InputGram), float(self.config.dampening)
        )
        tensor = target.tensor
        weights = matrix_view(target.module, tensor).to(
            torch.float64 if tensor.dtype == torch.float64 else torch.float32,
            memory_format=torch.contiguous_format,
            copy=True,
        )
        keep = matrix_view(target.module, mask)
        selection = None
        if cells is not None:
            keep = keep.clone()
            prior = None if target.prior is None else ~matrix_view(target.module, target.prior)
            selection = Reselection(
                matrix_view(target.module, cells), prior, dead.to(tensor.device)
            )
        obs_sweep(
            weights,
            keep,
            factor.to(tensor.device, weights.dtype),
            self.config.block_size,
            selection,
        )
        result = weights.to(tensor.dtype)
        # A row whose update overflows the parameter's dtype keeps its values (masked): never trade finite
        # weights for inf or NaN.
        before = matrix_view(target.module, tensor)
        broken = ~torch.isfinite(result).all(dim=1) & torch.isfinite(before).all(dim=1)
        if bool(broken.any()):
            result[broken] = torch.where(
                keep[broken], before[broken], torch.zeros_like(before[broken])
            )
        values = from_matrix(target.module, result, tensor.shape).contiguous()
        if selection is None:
            return values, mask
        return values, from_matrix(target.module, keep, mask.shape).contiguous()


class Reselection:
    """What :func:`obs_sweep` needs to choose each block's pruned entries again (SparseGPT's adaptive selection).

    Args:
        cells: int labels of the weight matrix's entries: each cell keeps, within each block of columns, as many
            pruned entries as the mask the sweep starts from prunes there.
        frozen: entries pruned before (``True``): pruned whatever their score.
        dead: input features (columns) that are always zero: their weights score nothing, as the criterion's.
    """

    def __init__(self, cells: Tensor, frozen: Tensor | None, dead: Tensor) -> None:
        self.cells = cells
        self.frozen = frozen
        self.dead = dead

    def choose(self, values: Tensor, keep: Tensor, diagonal: Tensor, start: int, stop: int) -> None:
        """Choose ``keep[:, start:stop]`` again from ``values`` (the block's weights, transposed: columns by
        rows, as the sweep has updated them): in each cell, the lowest ``w^2 / U_jj^2`` are pruned, as many as
        the cell prunes now."""
        scores = (values.square() / diagonal[start:stop, None].square()).t()
        scores[:, self.dead[start:stop]] = 0.0
        if self.frozen is not None:
            scores[self.frozen[:, start:stop]] = -torch.inf
        block = keep[:, start:stop]
        labels = torch.unique(self.cells[:, start:stop], return_inverse=True)[1].reshape(-1)
        cells = int(labels.max()) + 1
        prune = torch.bincount(labels, weights=(~block).reshape(-1).double(), minlength=cells)
        # Entries in score order, then grouped by cell (stable): each cell's lowest scores come first.
        order = torch.argsort(scores.reshape(-1), stable=True)
        order = order[torch.argsort(labels[order], stable=True)]
        sizes = torch.bincount(labels, minlength=cells)
        first = torch.cumsum(sizes, 0) - sizes
        grouped = labels[order]
        rank = torch.arange(order.numel(), device=order.device) - first[grouped]
        pruned = torch.empty_like(block.reshape(-1))
        pruned[order] = rank < prune.to(rank.dtype)[grouped]
        block.copy_(~pruned.reshape(block.shape))


_LEAF = 16
"""Columns whose updates go one column at a time; updates between these runs of columns are matrix products."""


def obs_sweep(
    weights: Tensor,
    keep: Tensor,
    factor: Tensor,
    block_size: int,
    reselection: Reselection | None = None,
) -> None:
    """SparseGPT's update, in place: zero ``weights``' entries ``keep`` prunes and update the rest.

    Column ``j`` in turn: each row that prunes its weight there takes the error ``e_j = w_j / U_jj`` (``w_j`` as
    updated so far) and subtracts ``e_j * U_j,k`` from its weights ``k > j``. The updates are applied lazily:
    one column at a time within a run of a few columns, a run's errors to the rest of its block with one
    matrix product, and a block's errors to the columns after it with another (each weight receives the same
    updates as column by column, in another order of float additions).

    Args:
        weights: ``(rows, columns)`` float matrix, changed in place.
        keep: its bool keep-mask.
        factor: the upper Cholesky factor of the damped inverse Hessian, ``(columns, columns)``.
        block_size: columns per lazy block.
        reselection: when given, ``keep`` (changed in place) is chosen again block by block when the sweep
            reaches the block: every update of the columns before it is applied by then.
    """
    columns = weights.shape[1]
    # Worked on transposed, so that a column of the weights is a contiguous row; ``scale`` turns a column's
    # current values into its errors (1 / U_jj where the row prunes, 0 where it keeps).
    swept = weights.t().contiguous()
    diagonal = factor.diagonal()
    scale = torch.empty_like(swept)
    errors = torch.empty_like(swept)
    # Views made once: indexing a tensor costs as much as the small products below.
    values, scales, errs, factors = (t.unbind() for t in (swept, scale, errors, factor))
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        if reselection is not None:
            reselection.choose(swept[start:stop], keep, diagonal, start, stop)
        # The block's scale, from its mask as it now stands.
        torch.div((~keep[:, start:stop]).t(), diagonal[start:stop, None], out=scale[start:stop])
        for first in range(start, stop, _LEAF):
            last = min(first + _LEAF, stop)
            for j in range(first, last):
                torch.mul(values[j], scales[j], out=errs[j])
                if j + 1 < last:
                    swept[j + 1 : last].addr_(factors[j][j + 1 : last], errs[j], alpha=-1)
            if last < stop:
                swept[last:stop].addmm_(
                    factor[first:last, last:stop].t(), errors[first:last], alpha=-1
                )
        if stop < columns:
            swept[stop:].addmm_(factor[start:stop, stop:].t(), errors[start:stop], alpha=-1)
    weights.copy_(swept.t()).masked_fill_(~keep, 0.0)


@hookimpl
def prunus_register_criteria(register: Registrar) -> None:
    """Register the ``sparsegpt`` criterion."""
    register(SparseGPT)


@hookimpl
def prunus_register_reconstructions(register: Registrar) -> None:
    """Register the ``sparsegpt`` reconstruction."""
    register(SparseGPTReconstruction)
