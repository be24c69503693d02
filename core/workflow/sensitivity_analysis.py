"""Sensitivity analysis: prune each layer alone at several amounts and measure what it costs.

>>> result = prunus.sensitivity(model, data=(x_val, y_val), amounts=[0.25, 0.5, 0.75, 0.9])  # doctest: +SKIP
>>> amounts = result.suggest(target_sparsity=0.8)      # per-layer amounts reaching 80 % overall
>>> prunus.prune(model, "l1_unstructured", amounts=amounts)                                     # doctest: +SKIP

Each parameter is pruned on its own (the others dense), evaluated, and put back bit for bit with
:func:`prunus.restore` before the next, so the model ends as it started.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from torch import nn

from ..arguments import check_bool, check_callable, check_model, check_options
from ..engine import is_pruned, prune, restore
from ..errors import ConfigError, ConfigTypeError, brief
from ..progress import progress
from ..registration import Registry, registry
from ..targets import FilterFn, Patterns, select_targets
from .evaluation import Data, accuracy, measure_with

__all__ = ["SensitivityCurve", "SensitivityResult", "sensitivity"]

DEFAULT_AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class SensitivityCurve(BaseModel):
    """The metric of the model with one parameter pruned alone at each amount."""

    model_config = ConfigDict(frozen=True)

    name: str
    numel: int
    amounts: list[float]
    metrics: list[float]


class SensitivityResult(BaseModel):
    """Per-layer sensitivity curves; :meth:`suggest` turns them into per-layer amounts."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    options: dict[str, Any]
    baseline: float
    """The metric of the model with nothing pruned."""
    higher_is_better: bool
    curves: list[SensitivityCurve]

    def __getitem__(self, name: str) -> SensitivityCurve:
        for curve in self.curves:
            if curve.name == name:
                return curve
        raise KeyError(f"no curve for {name!r}; layers: {[c.name for c in self.curves]}")

    def losses(self, name: str) -> list[float]:
        """How much the metric got worse at each amount for parameter ``name`` (positive: worse)."""
        curve = self[name]
        sign = 1.0 if self.higher_is_better else -1.0
        return [sign * (self.baseline - m) for m in curve.metrics]

    def _envelope(self, curve: SensitivityCurve) -> list[tuple[float, float]]:
        """``(amount, loss)`` with amount 0 first, the loss made non-decreasing in the amount."""
        points = sorted(zip(curve.amounts, self.losses(curve.name), strict=True))
        out, worst = [(0.0, 0.0)], 0.0
        for amount, loss in points:
            worst = max(worst, loss)
            out.append((amount, worst))
        return out

    def _amounts_at(self, tolerance: float) -> dict[str, float]:
        out = {}
        for curve in self.curves:
            out[curve.name] = max(a for a, loss in self._envelope(curve) if loss <= tolerance)
        return out

    def _sparsity(self, amounts: Mapping[str, float]) -> float:
        total = sum(c.numel for c in self.curves)
        return sum(amounts[c.name] * c.numel for c in self.curves) / total

    def suggest(
        self, *, target_sparsity: float | None = None, max_loss: float | None = None
    ) -> dict[str, float]:
        """Per-layer amounts, for ``prunus.prune(model, strategy, amounts=...)``.

        Args:
            target_sparsity: the overall fraction of the analysed entries to prune. The layers are pruned
                in order of how little they cost: every layer gets the largest amount whose loss stays within
                one tolerance, the smallest tolerance that reaches the target, and the layers that last went
                up share what is needed to hit it exactly.
            max_loss: the most the metric may get worse per layer (e.g. ``0.01``: one accuracy point); each
                layer gets the largest tested amount within it.

        Raises:
            ConfigError: neither or both are given, or the target is above what the tested amounts reach.
        """
        if (target_sparsity is None) == (max_loss is None):
            raise ConfigError("give exactly one of target_sparsity= and max_loss=")
        if max_loss is not None:
            if max_loss < 0:
                raise ConfigError(f"max_loss={max_loss} must be >= 0")
            return self._amounts_at(max_loss)
        assert target_sparsity is not None
        if not 0 <= target_sparsity <= 1:
            raise ConfigError(f"target_sparsity={target_sparsity} is not a fraction in [0, 1]")
        tolerances = sorted({loss for c in self.curves for _, loss in self._envelope(c)})
        previous = {c.name: 0.0 for c in self.curves}
        for tolerance in tolerances:
            current = self._amounts_at(tolerance)
            reached = self._sparsity(current)
            if reached >= target_sparsity:
                return self._interpolate(previous, current, target_sparsity)
            previous = current
        raise ConfigError(
            f"target_sparsity={target_sparsity} is above {self._sparsity(previous):.4f}, what the largest "
            f"tested amounts reach; analyse larger amounts"
        )

    def _interpolate(
        self, low: dict[str, float], high: dict[str, float], target: float
    ) -> dict[str, float]:
        total = sum(c.numel for c in self.curves)
        short = target * total - sum(low[c.name] * c.numel for c in self.curves)
        extra = sum((high[c.name] - low[c.name]) * c.numel for c in self.curves)
        share = 1.0 if extra <= 0 else min(1.0, max(0.0, short / extra))
        return {c.name: low[c.name] + share * (high[c.name] - low[c.name]) for c in self.curves}

    def __str__(self) -> str:
        amounts = sorted({a for c in self.curves for a in c.amounts})
        width = max([len(c.name) for c in self.curves] + [9])
        lines = [
            f"sensitivity of {self.strategy} (baseline {self.baseline:.4f}), metric per amount",
            f"{'parameter':<{width}} " + "".join(f"{a:>8.0%}" for a in amounts),
        ]
        for curve in self.curves:
            by_amount = dict(zip(curve.amounts, curve.metrics, strict=True))
            cells = "".join(
                f"{by_amount[a]:>8.4f}" if a in by_amount else f"{'-':>8}" for a in amounts
            )
            lines.append(f"{curve.name:<{width}} {cells}")
        return "\n".join(lines)


def sensitivity(
    model: nn.Module,
    evaluator: Callable[[nn.Module], float] | None = None,
    *,
    data: Data | None = None,
    strategy: str = "l1_unstructured",
    amounts: Sequence[float] = DEFAULT_AMOUNTS,
    include: Patterns = None,
    exclude: Patterns = None,
    filter_fn: FilterFn | None = None,
    strategy_options: Mapping[str, Any] | None = None,
    higher_is_better: bool = True,
    progress_bar: bool = False,
    registry: Registry = registry,
) -> SensitivityResult:
    """Prune each chosen parameter alone at each amount, evaluate, and restore it.

    Args:
        model: an unpruned model; it is left exactly as it was.
        evaluator: ``evaluator(model) -> float`` (accuracy, or a loss with ``higher_is_better=False``).
        data: labelled data to measure top-1 accuracy on, instead of an evaluator.
        strategy: a registered strategy with an ``amount`` option, applied to one parameter at a time.
        amounts: fractions to try for each parameter.
        include: glob patterns of the parameters to analyse, as in :func:`prunus.prune`.
        exclude: glob patterns of parameters to leave alone, as in :func:`prunus.prune`.
        filter_fn: ``filter_fn(module, name) -> bool``, as in :func:`prunus.prune`.
        strategy_options: the strategy's other options.
        progress_bar: show a progress bar (tqdm).

    Raises:
        ConfigError: no evaluator and no data, a bad amount, or the model is already pruned.
    """
    check_model(model)
    if (evaluator is None) == (data is None):
        raise ConfigError("give exactly one of an evaluator (a function of the model) and data=")
    if evaluator is not None:
        check_callable("evaluator", evaluator)
    check_bool("higher_is_better", higher_is_better)
    check_bool("progress_bar", progress_bar)
    if not isinstance(strategy, str):
        raise ConfigTypeError(
            f"strategy must be a registered strategy name, not {type(strategy).__name__} ({brief(strategy)})"
        )
    if not isinstance(amounts, Sequence) or isinstance(amounts, (str, bytes)):
        raise ConfigTypeError(
            f"amounts must be a list of fractions such as [0.25, 0.5], not {type(amounts).__name__} "
            f"({brief(amounts)})"
        )
    check_options("strategy_options", strategy_options)
    if is_pruned(model):
        raise ConfigError(
            "sensitivity analysis needs a model without prunus masks (it restores each layer after "
            "pruning it); make earlier pruning permanent with prunus.remove(model) first"
        )
    if not amounts:
        raise ConfigError("amounts is empty; give fractions such as [0.25, 0.5, 0.75]")
    for amount in amounts:
        if isinstance(amount, bool) or not isinstance(amount, float) or not 0 <= amount <= 1:
            raise ConfigError(f"amount {brief(amount)} is not a fraction: give floats in [0, 1]")
    options = dict(strategy_options or {})
    if "amount" in options:
        raise ConfigError("strategy_options must not hold 'amount'; give amounts= instead")
    for amount in amounts:
        registry.get(strategy, amount=amount, **options)  # bad options fail before any work

    def measure() -> float:
        # Both run the model as a measurement: it is left as it was (flags, buffers, random generator).
        if evaluator is not None:
            return measure_with(evaluator, model)
        assert data is not None
        return accuracy(model, data)

    chosen = select_targets(model, include=include, exclude=exclude, filter_fn=filter_fn)
    baseline = measure()
    work = [(name, amount) for name, _, _ in chosen for amount in amounts]
    metrics: dict[str, list[float]] = {name: [] for name, _, _ in chosen}
    try:
        for name, amount in progress(
            work, enabled=progress_bar, total=len(work), desc="sensitivity"
        ):
            prune(
                model,
                strategy,
                include=[glob.escape(name)],
                amount=amount,
                registry=registry,
                **options,
            )
            try:
                metrics[name].append(measure())
            finally:
                restore(model)
    finally:
        if is_pruned(model):
            restore(model)
    curves = []
    for name, module, pname in chosen:
        param = module._parameters[pname]
        assert param is not None
        curves.append(
            SensitivityCurve(
                name=name, numel=param.numel(), amounts=list(amounts), metrics=metrics[name]
            )
        )
    return SensitivityResult(
        strategy=strategy,
        options=options,
        baseline=baseline,
        higher_is_better=higher_is_better,
        curves=curves,
    )
