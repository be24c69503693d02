"""What a ``prune`` call did, per parameter and in total."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .selection import Selection

__all__ = ["AutoOutcome", "ParameterReport", "PruneReport", "QualityFigure", "StepReport", "kib"]


class ParameterReport(BaseModel):
    """One pruned parameter.

    Attributes:
        name: its qualified name in the model.
        shape: its shape.
        numel: its number of entries.
        pruned: entries pruned in total (by this call and earlier ones).
        newly_pruned: entries this call pruned.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    shape: tuple[int, ...]
    numel: int
    pruned: int
    newly_pruned: int

    @property
    def sparsity(self) -> float:
        """Fraction of the entries that are pruned."""
        return self.pruned / self.numel if self.numel else 0.0

    @property
    def empty(self) -> bool:
        """Whether every entry is pruned: the layer computes nothing from its input ("layer collapse")."""
        return self.numel > 0 and self.pruned == self.numel


class StepReport(BaseModel):
    """One step of a plan carried out by ``prune(model, "auto", ...)``.

    Attributes:
        kind: the step's kind (``prune``, ``shrink``, ``to_sparse``, ``recover``).
        summary: what it did, in one line (or why it did nothing).
        detail: the step's own report when it has one (a shrink's groups, the amounts allocated...).
        seconds: how long it took.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    summary: str
    detail: str = ""
    seconds: float = 0.0


class QualityFigure(BaseModel):
    """One quality measure of the model on the data given: dense, pruned, and after recovery.

    Attributes:
        metric: ``accuracy`` (labels given), ``agreement`` (top-1 agreement with the dense model), ``perplexity``,
            ``cosine`` (cosine similarity of the outputs to the dense model's, mean over samples).
        higher_is_better: how to read it.
        dense: the dense model's value.
        pruned: after the structural steps, before recovery (``None`` when there was no recovery).
        final: the model returned.
        held_out: measured on data not used for allocation or recovery.
    """

    model_config = ConfigDict(frozen=True)

    metric: str
    higher_is_better: bool
    dense: float
    pruned: float | None = None
    final: float
    held_out: bool = False

    def __str__(self) -> str:
        show = self._show
        middle = f" -> {show(self.pruned)} pruned" if self.pruned is not None else ""
        where = " (held out)" if self.held_out else ""
        return f"{self.metric}{where}: dense {show(self.dense)}{middle} -> {show(self.final)}"

    def _show(self, value: float) -> str:
        """Fractions of samples (accuracy, agreement) as percentages, the rest to four significant digits."""
        return f"{value:.1%}" if self.metric in ("accuracy", "agreement") else f"{value:.4g}"


class AutoOutcome(BaseModel):
    """What carrying out a plan gave: size, MACs, the speed-up predicted and measured, the quality kept.

    Attributes:
        params_before, params_after: parameter counts of the whole model.
        macs_before, macs_after: multiply-accumulates of the Linear and Conv layers on the example inputs.
        predicted_speedup: the speed-up expected before measuring, and ``predicted_from``, where it comes from
            (the MACs of the smaller model, or the plan).
        measured_speedup: the dense model's latency over the result's, measured side by side on the example
            inputs (medians of interleaved runs on this machine, with ``threads`` torch threads), and
            ``latency_dense_s`` / ``latency_s`` the two medians; ``spread``: half the range of the per-round
            ratios over their median.
        quality: the quality figures measured on the data.
    """

    model_config = ConfigDict(frozen=True)

    params_before: int
    params_after: int
    macs_before: int | None = None
    macs_after: int | None = None
    predicted_speedup: float | None = None
    predicted_from: str = ""
    measured_speedup: float | None = None
    latency_dense_s: float | None = None
    latency_s: float | None = None
    spread: float | None = None
    threads: int | None = None
    quality: list[QualityFigure] = []

    def __str__(self) -> str:
        lines = [
            f"parameters {self.params_before:,} -> {self.params_after:,} "
            f"({self.params_after / max(self.params_before, 1):.1%})"
        ]
        if self.macs_before and self.macs_after is not None:
            lines[0] += (
                f", MACs {self.macs_before:,} -> {self.macs_after:,} "
                f"({self.macs_after / self.macs_before:.1%})"
            )
        if self.predicted_speedup is not None:
            lines.append(
                f"predicted speed-up {self.predicted_speedup:.2f}x ({self.predicted_from})"
            )
        if self.measured_speedup is not None:
            spread = f" ±{self.spread:.0%}" if self.spread is not None else ""
            lines.append(
                f"measured speed-up {self.measured_speedup:.2f}x{spread} (dense "
                f"{(self.latency_dense_s or 0) * 1e3:.3f} ms, now {(self.latency_s or 0) * 1e3:.3f} ms per "
                f"forward of the example inputs, {self.threads} torch thread(s), medians of interleaved runs)"
            )
        lines.extend(str(q) for q in self.quality)
        return "\n".join(lines)


class PruneReport(BaseModel):
    """The result of :func:`prunus.prune`: the strategy, its options and what was pruned.

    ``str(report)`` is a readable table; ``report.model_dump_json()`` a machine-readable record.
    """

    model_config = ConfigDict(frozen=True)

    strategy: str
    options: dict[str, Any]
    parameters: list[ParameterReport]
    model_numel: int
    """Entries of every parameter of the model, pruned or not (before the call, when ``"auto"`` removed some)."""
    selection: Selection | None = None
    """The hardware-aware selection, when the strategy was ``"auto"`` (see :func:`prunus.select`)."""
    steps: list[StepReport] = []
    """With ``"auto"``: what each step of the plan did."""
    outcome: AutoOutcome | None = None
    """With ``"auto"``: parameters, MACs, the predicted and measured speed-up, and the quality kept."""

    @property
    def numel(self) -> int:
        """Entries of the targeted parameters."""
        return sum(p.numel for p in self.parameters)

    @property
    def pruned(self) -> int:
        """Entries pruned in the targeted parameters."""
        return sum(p.pruned for p in self.parameters)

    @property
    def sparsity(self) -> float:
        """Fraction of the targeted entries that are pruned."""
        return self.pruned / self.numel if self.numel else 0.0

    @property
    def model_sparsity(self) -> float:
        """Fraction of all the model's parameter entries that are pruned."""
        return self.pruned / self.model_numel if self.model_numel else 0.0

    @property
    def emptied(self) -> list[str]:
        """The parameters with every entry pruned (flagged in ``str(report)``).

        Global strategies keep ``min_keep`` entries of each parameter unless the amount asks for more than that
        leaves, so a layer is emptied only when the call asked for it; this says when that happened.
        """
        return [p.name for p in self.parameters if p.empty]

    def __getitem__(self, name: str) -> ParameterReport:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(f"{name!r} was not pruned; pruned: {[p.name for p in self.parameters]}")

    def __str__(self) -> str:
        width = max([len(p.name) for p in self.parameters] + [9])
        lines = [
            f"strategy {self.strategy} " + " ".join(f"{k}={v}" for k, v in self.options.items()),
            f"{'parameter':<{width}}  {'shape':<18} {'pruned':>12} {'sparsity':>9}",
        ]
        for p in self.parameters:
            shape = "x".join(map(str, p.shape))
            empty = "  EMPTY" if p.empty else ""
            lines.append(
                f"{p.name:<{width}}  {shape:<18} {p.pruned:>12,} {p.sparsity:>9.2%}{empty}"
            )
        lines.append(
            f"{'total':<{width}}  {'':<18} {self.pruned:>12,} {self.sparsity:>9.2%}"
            f"   ({self.model_sparsity:.2%} of all {self.model_numel:,} parameters)"
        )
        if self.emptied:
            lines.append(
                f"every entry of {len(self.emptied)} parameter(s) is pruned (EMPTY): "
                f"{', '.join(self.emptied)}; those layers now compute nothing from their input"
            )
        if self.selection is not None:
            lines.append(
                f"selected by {self.selection.decided_by or 'a plugin'}: {self.selection.reason}"
            )
        for i, step in enumerate(self.steps, 1):
            lines.append(f"{i}. {step.kind}: {step.summary} ({step.seconds:.2f} s)")
        if self.outcome is not None:
            lines.append(str(self.outcome))
        return "\n".join(lines)


def kib(size: int) -> str:
    """``size`` bytes as kibibytes for report tables: ``"1,178.9 KiB"``."""
    return f"{size / 1024:,.1f} KiB"
