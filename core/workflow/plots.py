"""Pictures of pruning, saved as PNG: per-layer sparsity, weights before and after, sensitivity, accuracy.

Needs matplotlib (``pip install 'prunus[plots]'``), imported only when a plot is made. Figures are drawn on
matplotlib's Agg canvas directly, without pyplot: no window opens and no global backend is changed. Each
function returns the :class:`matplotlib.figure.Figure` and, given ``path``, writes it there as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from .. import files
from ..arguments import check_int, check_path
from ..errors import ConfigError, ConfigTypeError, brief

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .sensitivity_analysis import SensitivityResult

__all__ = [
    "plot_accuracy_vs_sparsity",
    "plot_layer_sparsity",
    "plot_schedule",
    "plot_sensitivity",
    "plot_weights",
]


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("prunus plots need matplotlib: pip install 'prunus[plots]'") from None
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path | None) -> Figure:
    """Write ``figure`` to ``path`` as PNG, atomically (a failed write keeps the previous file)."""
    if path is not None:
        check_path("path", path)
        files.write_atomic(path, lambda file: figure.savefig(file, format="png"))
    return figure


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_points(points: object) -> bool:
    return isinstance(points, Sequence) and all(
        isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_number(v) for v in p)
        for p in points
    )


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Sparsity (fraction of zeros) of every weight of the layers ``prune`` targets by default."""
    from ..targets import DEFAULT_LAYERS
    from .evaluation import _weights

    out = {}
    owners = {name for name, module in model.named_modules() if isinstance(module, DEFAULT_LAYERS)}
    quantized = {
        name
        for name, module in model.named_modules()
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None))
    }
    for name, tensor in _weights(model):
        owner, _, leaf = name.rpartition(".")
        if leaf == "weight" and (owner in owners or owner in quantized) and tensor.numel():
            out[name] = 1.0 - int(tensor.count_nonzero()) / tensor.numel()
    return out


def plot_layer_sparsity(
    model_or_sparsity: nn.Module | Mapping[str, float],
    path: str | Path | None = None,
    *,
    title: str = "sparsity per layer",
) -> Figure:
    """Bars of each layer's weight sparsity (zeros counted in the tensors), with the overall line."""
    if isinstance(model_or_sparsity, nn.Module):
        sparsity = layer_sparsity(model_or_sparsity)
    elif isinstance(model_or_sparsity, Mapping) and all(
        isinstance(k, str) and _is_number(v) for k, v in model_or_sparsity.items()
    ):
        sparsity = dict(model_or_sparsity)
    else:
        raise ConfigTypeError(
            f"plot_layer_sparsity needs a model or a dict of layer name to sparsity, not "
            f"{brief(model_or_sparsity)}"
        )
    if not sparsity:
        raise ConfigError("no layer weights to plot")
    names = list(sparsity)
    figure = _figure(max(4.0, 0.6 * len(names) + 2), 3.6)
    axes = figure.add_subplot()
    bars = axes.bar(range(len(names)), [100 * sparsity[n] for n in names], color="#3b6ea5")
    axes.bar_label(bars, fmt="%.1f", fontsize=8)
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("sparsity (%)")
    axes.set_ylim(0, 105)
    axes.set_title(title)
    return _save(figure, path)


def plot_weights(
    before: Tensor,
    after: Tensor,
    path: str | Path | None = None,
    *,
    mask: Tensor | None = None,
    title: str = "",
    max_size: int = 128,
) -> Figure:
    """Heatmaps of a weight matrix before and after pruning, and its mask (kept entries light).

    Tensors of more than two dims are shown as ``(shape[0], rest)``; at most ``max_size`` rows and columns
    are shown (the top-left corner), so that single entries stay visible.
    """
    for name, value in (("before", before), ("after", after), ("mask", mask)):
        if not isinstance(value, Tensor) and (value is not None or name != "mask"):
            raise ConfigTypeError(f"{name} must be a tensor, not {type(value).__name__}")
    check_int("max_size", max_size, minimum=1)
    if before.shape != after.shape or (mask is not None and mask.shape != before.shape):
        raise ConfigError(f"before {tuple(before.shape)} and after {tuple(after.shape)} differ")
    keep = (after != 0) if mask is None else mask.bool()

    def matrix(tensor: Tensor) -> Any:
        t = tensor.detach().float().cpu()
        t = t.reshape(1, -1) if t.dim() < 2 else t.reshape(t.shape[0], -1)
        return t[:max_size, :max_size].numpy()

    figure = _figure(11, 3.8)
    limit = float(before.detach().abs().max()) or 1.0
    panels = [
        ("before", matrix(before), "RdBu_r", -limit, limit),
        ("after", matrix(after), "RdBu_r", -limit, limit),
        ("mask (kept)", matrix(keep.float()), "Greys_r", 0.0, 1.0),
    ]
    for index, (label, values, cmap, low, high) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 3, index)
        image = axes.imshow(values, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        axes.set_title(label, fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
        if index < 3:
            figure.colorbar(image, ax=axes, shrink=0.8)
    kept = int(keep.sum())
    figure.suptitle(
        f"{title} {tuple(before.shape)}: {1 - kept / keep.numel():.1%} pruned".strip(), fontsize=11
    )
    return _save(figure, path)


def plot_sensitivity(
    result: SensitivityResult,
    path: str | Path | None = None,
    *,
    title: str = "",
    suggested: Mapping[str, float] | None = None,
    metric: str = "metric",
) -> Figure:
    """Each layer's metric against its amount, pruned alone; ``suggested`` amounts are marked."""
    from .sensitivity_analysis import SensitivityResult

    if not isinstance(result, SensitivityResult):
        raise ConfigTypeError(
            f"plot_sensitivity needs the result of prunus.sensitivity, not {type(result).__name__}"
        )
    figure = _figure(7, 4.2)
    axes = figure.add_subplot()
    for curve in result.curves:
        xs = [0.0, *curve.amounts]
        ys = [result.baseline, *curve.metrics]
        (line,) = axes.plot([100 * x for x in xs], ys, marker="o", markersize=3, label=curve.name)
        if suggested is not None and curve.name in suggested:
            axes.axvline(100 * suggested[curve.name], color=line.get_color(), ls=":", lw=1)
    axes.axhline(result.baseline, color="grey", lw=0.8, ls="--")
    axes.set_xlabel(f"amount pruned, this layer alone ({result.strategy}), %")
    axes.set_ylabel(metric)
    axes.set_title(title or "sensitivity per layer")
    axes.legend(fontsize=7, loc="lower left")
    return _save(figure, path)


def plot_accuracy_vs_sparsity(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path | None = None,
    *,
    title: str = "accuracy against sparsity",
    dense: float | None = None,
) -> Figure:
    """One line per method: ``{"magnitude": [(sparsity, accuracy), ...], "random": [...]}``."""
    if not isinstance(series, Mapping) or not all(_is_points(p) for p in series.values()):
        raise ConfigTypeError(
            f"series must map a label to (sparsity, accuracy) pairs, not {brief(series)}"
        )
    figure = _figure(6.5, 4.2)
    axes = figure.add_subplot()
    for label, points in series.items():
        ordered = sorted(points)
        axes.plot([100 * s for s, _ in ordered], [a for _, a in ordered], marker="o", label=label)
    if dense is not None:
        axes.axhline(dense, color="grey", lw=0.8, ls="--", label="dense")
    axes.set_xlabel("sparsity (%)")
    axes.set_ylabel("accuracy")
    axes.set_title(title)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_schedule(
    points: Sequence[tuple[int, float]],
    path: str | Path | None = None,
    *,
    reached: Sequence[tuple[int, float]] | None = None,
    title: str = "pruning schedule",
) -> Figure:
    """A schedule's target sparsity per step (a step function), with the sparsity ``reached`` if given."""
    if not _is_points(points) or (reached is not None and not _is_points(reached)):
        raise ConfigTypeError(f"points must be (step, sparsity) pairs, not {brief(points)}")
    figure = _figure(6.5, 3.6)
    axes = figure.add_subplot()
    axes.step([s for s, _ in points], [100 * v for _, v in points], where="post", label="schedule")
    if reached:
        axes.plot(
            [s for s, _ in reached],
            [100 * v for _, v in reached],
            "o",
            markersize=4,
            label="reached",
        )
    axes.set_xlabel("step")
    axes.set_ylabel("sparsity (%)")
    axes.set_title(title)
    axes.legend(fontsize=8)
    return _save(figure, path)
