"""The honest speed and size report of a pruned model: :func:`analyze`.

Zeros in a weight make a model smaller once stored compressed, but they make it faster only when something
skips them: a sparse kernel above its crossover sparsity, 2:4 sparse tensor cores, or a layer physically
shrunk after structured pruning. Executed dense, a pruned layer costs exactly what the dense one costs.

``prunus.analyze(model, example_inputs, measure=True)`` reports, per Linear and Conv layer and in total:

* parameters, nonzeros, the sparsity and its pattern (``unstructured``, ``2:4``, ``structured``: whole rows or
  input channels zero);
* bytes dense and compressed (the smallest of CSR with 32-bit indices, a bitmask beside the nonzero values,
  2:4 semi-structured storage when the pattern allows it, and the shrunk layer when rows or columns are zero);
* multiply-accumulates dense and of the nonzero weights, and the theoretical speedup between them;
* with ``measure=True``, latencies on this device: the layer as it executes now, dense, CSR, 2:4 (CUDA), the
  shrunk layer, and a dense layer with as many rows removed as the sparsity (what structured pruning at the
  same sparsity would give);
* a plain warning for each layer whose pruning cannot be faster here, with what would be.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ..arguments import check_bool, check_int, check_model
from ..errors import ConfigError, TargetError
from ..forward import evaluation_mode, run_model
from ..hardware_profile import HardwareProfile
from ..report import kib
from .detection import resolve_hardware
from .sparse import SparseLinear, _ineligible, _quiet, csr_linear, follows_nm, sparse_weight
from .timing import time_interleaved

__all__ = ["AnalysisReport", "LayerAnalysis", "analyze"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONV_FN: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class LayerAnalysis(BaseModel):
    """One layer of an :class:`AnalysisReport`.

    Attributes:
        name: the module's qualified name.
        kind: its class (``Linear``, ``Conv2d``, ``SparseLinear``...).
        shape: its weight's shape.
        params: weight entries.
        nonzeros: nonzero weight entries.
        pattern: ``dense``, ``unstructured``, ``2:4``, ``structured`` (every zero lies in a zero output row
            or input column) or ``empty`` (all zero).
        zero_rows, zero_cols: output channels / neurons and input channels / features that are all zero.
        executes_as: ``dense``, or the sparse layout of a :class:`~prunus.SparseLinear`.
        bytes_dense: the weight stored dense.
        bytes_compressed: the smallest storage of ``compressed_format``.
        compressed_format: ``dense``, ``csr``, ``bitmask``, ``2:4`` or ``shrunk``.
        macs_dense: multiply-accumulates of the weight per forward of the example inputs (per output position
            when no example inputs were given: see ``AnalysisReport.macs_per``).
        macs_nonzero: those of its nonzero weights only.
        macs_shrunk: those of the layer with its zero rows and columns removed.
        latency_s: measured seconds per call, by execution: ``as_is``, ``dense``, ``csr``, ``semi_structured``,
            ``shrunk``, ``structured_equivalent``; empty when not measured.
        warning: why this pruning cannot be faster here, and what would be; ``None`` if it can or is dense.
        advice: how to get the speed or size the pruning allows, when there is something to do.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    shape: tuple[int, ...]
    params: int
    nonzeros: int
    pattern: str
    zero_rows: int
    zero_cols: int
    executes_as: str
    bytes_dense: int
    bytes_compressed: int
    compressed_format: str
    macs_dense: int
    macs_nonzero: int
    macs_shrunk: int
    latency_s: dict[str, float] = {}
    warning: str | None = None
    advice: str | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights."""
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    @property
    def theoretical_speedup(self) -> float:
        """Dense MACs over nonzero MACs (``inf`` for an all-zero layer)."""
        return self.macs_dense / self.macs_nonzero if self.macs_nonzero else math.inf

    def speedup(self, execution: str) -> float | None:
        """Measured dense latency over ``execution``'s (``csr``, ``shrunk``, ``as_is``...), if both measured."""
        dense, other = self.latency_s.get("dense"), self.latency_s.get(execution)
        return dense / other if dense and other else None

    @property
    def best_measured(self) -> tuple[str, float] | None:
        """The fastest measured way to run the layer *with its current zeros* and its seconds, if measured.

        ``structured_equivalent`` is not one: it needs different zeros.
        """
        options = {k: v for k, v in self.latency_s.items() if k != "structured_equivalent"}
        if not options:
            return None
        best = min(options, key=options.__getitem__)
        return best, options[best]


class AnalysisReport(BaseModel):
    """What :func:`analyze` found: per layer and in total. ``str(report)`` is a readable table.

    Attributes:
        device: where the model's parameters are.
        hardware: the target whose crossover was used for the warnings.
        measured: whether latencies were measured (on this machine).
        macs_per: ``forward`` (of the example inputs) or ``position`` (one output position per layer).
        layers: one row per analysed layer.
        model_latency_s: the measured seconds of one forward of the whole model as it is, if measured.
        threads: torch's intra-op threads during the measurement.
    """

    model_config = ConfigDict(frozen=True)

    device: str
    hardware: HardwareProfile
    measured: bool
    macs_per: str
    layers: list[LayerAnalysis]
    model_latency_s: float | None = None
    threads: int

    def __getitem__(self, name: str) -> LayerAnalysis:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no analysed layer {name!r}; layers: {[a.name for a in self.layers]}")

    @property
    def params(self) -> int:
        return sum(a.params for a in self.layers)

    @property
    def nonzeros(self) -> int:
        return sum(a.nonzeros for a in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    @property
    def bytes_dense(self) -> int:
        return sum(a.bytes_dense for a in self.layers)

    @property
    def bytes_compressed(self) -> int:
        return sum(a.bytes_compressed for a in self.layers)

    @property
    def macs_dense(self) -> int:
        return sum(a.macs_dense for a in self.layers)

    @property
    def macs_nonzero(self) -> int:
        return sum(a.macs_nonzero for a in self.layers)

    @property
    def theoretical_speedup(self) -> float:
        """Dense MACs over nonzero MACs of the analysed layers."""
        return self.macs_dense / self.macs_nonzero if self.macs_nonzero else math.inf

    def latency_total(self, execution: str) -> float | None:
        """Sum over layers of ``execution``'s measured seconds (``dense``, ``as_is``, ``best``), if measured.

        ``best`` takes each layer's fastest measured way to run its current zeros.
        """
        if not self.measured:
            return None
        total = 0.0
        for layer in self.layers:
            if execution == "best":
                best = layer.best_measured
                value = best[1] if best is not None else None
            else:
                value = layer.latency_s.get(execution)
            if value is None:
                return None
            total += value
        return total

    @property
    def warnings(self) -> list[str]:
        """Every layer's warning."""
        return [a.warning for a in self.layers if a.warning]

    def __str__(self) -> str:
        width = max([len(a.name) for a in self.layers] + [5])
        kinds = max([len(a.kind) for a in self.layers] + [12])
        head = (
            f"prunus analysis on {self.device} ({self.hardware.describe()}); MACs per {self.macs_per}"
            f"{f'; measured with {self.threads} torch thread(s)' if self.measured else ''}"
        )
        columns = (
            f"{'layer':<{width}}  {'kind':<{kinds}} {'shape':<16} {'sparsity':>8} {'pattern':<12} "
            f"{'nonzeros':>11} {'dense KiB':>10} {'compr. KiB':>10} {'format':<7} {'MACs x':>7}"
        )
        if self.measured:
            columns += f" {'dense ms':>9} {'as-is ms':>9} {'best here':>24}"
        lines = [head, columns]
        for a in self.layers:
            shape = "x".join(map(str, a.shape))
            row = (
                f"{a.name:<{width}}  {a.kind:<{kinds}} {shape:<16} {a.sparsity:>8.1%} {a.pattern:<12} "
                f"{a.nonzeros:>11,} {a.bytes_dense / 1024:>10,.1f} {a.bytes_compressed / 1024:>10,.1f} "
                f"{a.compressed_format:<7} {_x(a.theoretical_speedup):>7}"
            )
            if self.measured:
                best = a.best_measured
                shown = ""
                if best is not None:
                    speed = a.speedup(best[0])
                    shown = f"{best[0]} {_x(speed) if speed else ''}"
                row += (
                    f" {_ms(a.latency_s.get('dense'))} {_ms(a.latency_s.get('as_is'))} {shown:>24}"
                )
            lines.append(row)
        total = (
            f"{'total':<{width}}  {'':<{kinds}} {'':<16} {self.sparsity:>8.1%} {'':<12} "
            f"{self.nonzeros:>11,} {self.bytes_dense / 1024:>10,.1f} "
            f"{self.bytes_compressed / 1024:>10,.1f} {'':<7} {_x(self.theoretical_speedup):>7}"
        )
        if self.measured:
            dense_total, as_is_total, best_total = (
                self.latency_total(k) for k in ("dense", "as_is", "best")
            )
            gain = f"{_x(dense_total / best_total)}" if dense_total and best_total else ""
            total += f" {_ms(dense_total)} {_ms(as_is_total)} {gain:>24}"
        lines.append(total)
        if self.model_latency_s is not None:
            lines.append(f"whole model as it is: {self.model_latency_s * 1e3:.3f} ms per forward")
        if self.warnings:
            lines.append("warnings:")
            lines.extend(f"  {w}" for w in self.warnings)
        advice = [f"{a.name}: {a.advice}" for a in self.layers if a.advice]
        if advice:
            lines.append("advice:")
            lines.extend(f"  {line}" for line in advice)
        return "\n".join(lines)


def _x(value: float | None) -> str:
    if value is None:
        return ""
    return "inf" if math.isinf(value) else f"{value:.2f}x"


def _ms(value: float | None) -> str:
    return f"{value * 1e3:>9.3f}" if value is not None else f"{'':>9}"


# -- static analysis ------------------------------------------------------------------------------------------


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    kinds = (nn.Linear, SparseLinear, *_CONV, *_CONV_T)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


def _dense_weight(module: nn.Module) -> Tensor:
    if isinstance(module, SparseLinear):
        with _quiet():
            return module.weight.to_dense().detach()
    weight = module.weight
    assert isinstance(weight, Tensor)
    return weight.detach()


def _input_dim(module: nn.Module) -> int:
    return 0 if isinstance(module, _CONV_T) else 1


def _pattern(weight: Tensor, module: nn.Module) -> tuple[str, int, int, Tensor, Tensor]:
    """The pattern name, zero rows, zero cols, and the kept row and column indices."""
    nonzero = weight != 0
    in_dim = _input_dim(module)
    out_dim = 1 - in_dim
    others_out = tuple(d for d in range(weight.dim()) if d != out_dim)
    others_in = tuple(d for d in range(weight.dim()) if d != in_dim)
    rows = nonzero.any(dim=others_out) if others_out else nonzero
    cols = nonzero.any(dim=others_in) if others_in else nonzero
    zero_rows, zero_cols = int((~rows).sum()), int((~cols).sum())
    kept_rows, kept_cols = rows.nonzero().squeeze(1), cols.nonzero().squeeze(1)
    nnz = int(nonzero.sum())
    if nnz == weight.numel():
        name = "dense"
    elif nnz == 0:
        name = "empty"
    else:
        shrunk = (
            kept_rows.numel()
            * kept_cols.numel()
            * (weight.numel() // max(1, _rows_cols(weight, module)))
        )
        if nnz == shrunk:
            name = "structured"
        elif follows_nm(weight, 2, 4, in_dim) and nnz * 2 >= weight.numel() * 0.95:
            name = "2:4"
        else:
            name = "unstructured"
    return name, zero_rows, zero_cols, kept_rows, kept_cols


def _rows_cols(weight: Tensor, module: nn.Module) -> int:
    in_dim = _input_dim(module)
    return int(weight.shape[1 - in_dim] * weight.shape[in_dim]) if weight.dim() >= 2 else 1


def _bytes(
    weight: Tensor, pattern: str, kept_rows: int, kept_cols: int, module: nn.Module
) -> dict[str, int]:
    elem = weight.element_size()
    numel = weight.numel()
    nnz = int((weight != 0).sum())
    rows = weight.shape[1 - _input_dim(module)] if weight.dim() >= 2 else 1
    sizes = {
        "dense": numel * elem,
        "csr": nnz * (elem + 4) + (rows + 1) * 4,
        "bitmask": nnz * elem + -(-numel // 8),
    }
    if pattern == "2:4":
        sizes["2:4"] = numel * elem // 2 + -(-numel // 8)
    if pattern in ("structured", "empty"):
        per_pair = numel // max(1, _rows_cols(weight, module))
        sizes["shrunk"] = kept_rows * kept_cols * per_pair * elem
    return sizes


def _macs_per_call(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    weight = _dense_weight(module)
    if not isinstance(output, Tensor):
        return 0
    if isinstance(module, nn.Linear | SparseLinear):
        return output.numel() * int(weight.shape[1])
    if isinstance(module, _CONV):
        return output.numel() * int(weight[0].numel())
    x = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
    if x is None:
        return 0
    # Transposed convolution: every input position meets every (out / groups) x kernel weight.
    return x.numel() * int(weight[0].numel())


# -- measurement ----------------------------------------------------------------------------------------------


def _measure_layer(
    module: nn.Module,
    x: Tensor,
    weight: Tensor,
    kept_rows: Tensor,
    kept_cols: Tensor,
    pattern: str,
    repeats: int,
) -> dict[str, float]:
    """Seconds per call of the layer, as it is and in every execution that suits its zeros."""
    device = x.device
    bias = getattr(module, "bias", None)
    bias = bias.detach() if isinstance(bias, Tensor) else None
    runs: dict[str, Callable[[], object]] = {"as_is": partial(module, x)}
    sparsity = 1.0 - int((weight != 0).sum()) / weight.numel()
    in_dim = _input_dim(module)
    structured_rows = max(1, round(weight.shape[1 - in_dim] * (1.0 - sparsity)))
    if isinstance(module, nn.Linear | SparseLinear):
        runs["dense"] = partial(F.linear, x, weight, bias)
        if 0 < sparsity < 1 and not _ineligible(weight, "csr", None):
            with _quiet():
                runs["csr"] = partial(csr_linear, x, sparse_weight(weight, "csr"), bias)
        if (
            pattern == "2:4"
            and device.type == "cuda"
            and not _ineligible(weight, "semi_structured", None)
        ):
            semi = sparse_weight(weight, "semi_structured")  # pragma: no cover - needs CUDA
            runs["semi_structured"] = partial(F.linear, x, semi, bias)  # pragma: no cover
        if pattern in ("structured", "empty") and kept_rows.numel() and kept_cols.numel():
            small = weight[kept_rows][:, kept_cols].contiguous()
            x_small = x[..., kept_cols].contiguous()
            b_small = bias[kept_rows] if bias is not None else None
            runs["shrunk"] = partial(F.linear, x_small, small, b_small)
        if pattern in ("unstructured", "2:4"):
            runs["structured_equivalent"] = partial(
                F.linear,
                x,
                weight[:structured_rows].contiguous(),
                None if bias is None else bias[:structured_rows],
            )
    elif isinstance(module, _CONV):
        conv = _CONV_FN[weight.dim() - 2]
        params = {
            "stride": module.stride,
            "padding": module.padding,
            "dilation": module.dilation,
            "groups": module.groups,
        }
        if module.padding_mode != "zeros":
            runs["dense"] = partial(module._conv_forward, x, weight, bias)
        else:
            runs["dense"] = partial(conv, x, weight, bias, **params)
            if (
                module.groups == 1
                and pattern in ("structured", "empty")
                and kept_rows.numel()
                and kept_cols.numel()
            ):
                small = weight[kept_rows][:, kept_cols].contiguous()
                x_small = x[:, kept_cols].contiguous()
                b_small = bias[kept_rows] if bias is not None else None
                runs["shrunk"] = partial(conv, x_small, small, b_small, **params)
            if module.groups == 1 and pattern in ("unstructured", "2:4"):
                runs["structured_equivalent"] = partial(
                    conv,
                    x,
                    weight[:structured_rows].contiguous(),
                    None if bias is None else bias[:structured_rows],
                    **params,
                )
    else:
        runs["dense"] = runs["as_is"]
    names = list(runs)
    times = time_interleaved([runs[n] for n in names], repeats=repeats, device=device)
    return dict(zip(names, times, strict=True))


# -- verdicts -------------------------------------------------------------------------------------------------


def _verdict(
    a: LayerAnalysis, profile: HardwareProfile, device: torch.device, measured: bool
) -> tuple[str | None, str | None]:
    """The layer's warning and advice."""
    if a.pattern == "dense" or (a.executes_as != "dense" and not measured):
        return None, None
    sparsity = f"{a.sparsity:.0%}"
    where = (
        "this GPU" if device.type == "cuda" else "this CPU" if device.type == "cpu" else str(device)
    )
    crossover = (
        profile.crossover_for(a.shape[0], a.shape[1])
        if a.kind in ("Linear", "SparseLinear") and len(a.shape) == 2
        else None
    )
    if a.pattern == "empty":
        return (
            None,
            "every weight is zero: the layer can be removed (its bias, if any, is a constant)",
        )
    if a.pattern == "structured":
        shrunk = a.speedup("shrunk")
        gain = (
            f"measured {_x(shrunk)}"
            if shrunk
            else f"{_x(a.macs_dense / max(a.macs_shrunk, 1))} fewer MACs"
        )
        if a.executes_as != "dense":
            return _verdict(
                a.model_copy(update={"pattern": "unstructured"}), profile, device, measured
            )
        return None, (
            f"{a.zero_rows} output and {a.zero_cols} input channels are all zero: executed dense they cost "
            f"what dense costs; the layer shrunk to its nonzero rows and columns is faster ({gain}) and "
            f"{kib(a.bytes_compressed)} instead of {kib(a.bytes_dense)}"
        )
    # Unstructured or 2:4 zeros.
    if measured:
        fastest = a.best_measured
        dense = a.latency_s.get("dense")
        as_is = a.latency_s.get("as_is")
        if a.executes_as != "dense":
            if dense and as_is and as_is > dense * 1.05:
                return (
                    f"{a.name}: executed as {a.executes_as} it measured {_x(dense / as_is)} of dense on "
                    f"{where}, slower than dense: put it back with prunus.to_dense(model)",
                    None,
                )
            return None, None
        equivalent = a.speedup("structured_equivalent")
        alternative = (
            f"structured pruning of {sparsity} of the output channels would be (a dense layer that much "
            f"smaller measured {_x(equivalent)})"
            if equivalent and equivalent > 1.0
            else "structured pruning would be, once the layer is shrunk"
        )
        if (
            fastest is not None
            and dense is not None
            and fastest[1] < dense * 0.95
            and fastest[0] != "dense"
        ):
            if fastest[0] == "as_is":
                return None, None
            how = (
                "prunus.to_sparse(model)"
                if fastest[0] in ("csr", "semi_structured")
                else fastest[0]
            )
            return None, (
                f"{fastest[0]} execution measured {_x(dense / fastest[1])} faster than dense here: convert "
                f"with {how}"
            )
        csr = a.speedup("csr")
        semi = a.speedup("semi_structured")
        tried = ", ".join(
            f"{name} measured {_x(value)} of dense"
            for name, value in (("CSR", csr), ("2:4", semi))
            if value is not None
        )
        more = (
            f"; unstructured sparsity above the crossover prunus.probe() measured, {crossover:.0%}"
            if crossover is not None and crossover < 1.0
            else ""
        )
        gpu = (
            "; 2:4 runs faster on CUDA GPUs of compute capability 8.0 or more (prunus.to_sparse there)"
            if a.pattern == "2:4" and device.type != "cuda"
            else ""
        )
        return (
            f"{a.name}: {sparsity} {a.pattern} zeros cannot run faster on {where}: executed dense they cost "
            f"what dense costs{f' and {tried}' if tried else ''}. Faster here: {alternative}{more}{gpu}",
            None,
        )
    # Not measured: judge from the crossover the probe measured, if any.
    if a.pattern == "2:4" and profile.supports_semi_structured:
        return (
            None,
            "2:4 pattern: convert with prunus.to_sparse(model) in float16/bfloat16 on the GPU",
        )
    if crossover is not None and crossover < 1.0 and a.sparsity >= crossover:
        return None, (
            f"above the CSR crossover prunus.probe() measured for this shape, {crossover:.0%}: convert with "
            "prunus.to_sparse(model) "
            "(check with analyze(..., measure=True))"
        )
    linear = a.kind in ("Linear", "SparseLinear")
    basis = (
        "torch has no sparse kernel for convolutions"
        if not linear
        else f"prunus.probe() measured CSR faster only above {crossover:.0%} for this shape here"
        if crossover is not None and crossover < 1.0
        else "prunus.probe() measured CSR faster at no sparsity for this shape here"
        if crossover is not None
        else "not measured here: unstructured sparse kernels usually need about 90 % zeros to beat "
        "dense ones (measure with analyze(..., measure=True) or prunus.probe())"
    )
    gpu = (
        "; 2:4 runs faster on CUDA GPUs of compute capability 8.0 or more"
        if a.pattern == "2:4" and device.type != "cuda"
        else ""
    )
    return (
        f"{a.name}: {sparsity} {a.pattern} zeros cannot run faster on {where}: executed dense they cost what "
        f"dense costs, and {basis}. Faster here: structured pruning (whole output channels) at the same "
        f"sparsity, once the layer is shrunk{gpu}",
        None,
    )


# -- entry point ----------------------------------------------------------------------------------------------


def analyze(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    measure: bool = False,
    hardware: str | HardwareProfile | dict[str, Any] = "auto",
    repeats: int = 10,
) -> AnalysisReport:
    """Report, per Linear and Conv layer and in total, what the pruning of ``model`` saves here.

    Args:
        model: the model (pruned, converted with :func:`prunus.to_sparse`, or dense).
        example_inputs: one batch as the model takes it: a tensor, a tuple of positional arguments, or a dict
            of keyword arguments. Without it MACs are counted per output position and nothing is measured.
        measure: time each layer on this device, with its recorded input, as it executes now and in each
            execution that suits its zeros (medians of ``repeats`` interleaved runs; torch's current thread
            count); and the whole model.
        hardware: the target whose measured crossover (:func:`prunus.probe`) informs the warnings when not
            measuring: ``"auto"`` (this machine) or a declared target.
        repeats: timed runs per median.

    Returns:
        An :class:`AnalysisReport`; ``print(report)`` shows the table, the warnings and the advice.

    Raises:
        ConfigError: ``measure=True`` without ``example_inputs``.
        TargetError: the model has no Linear or Conv layer.
    """
    check_model(model)
    check_bool("measure", measure)
    check_int("repeats", repeats, minimum=1)
    if measure and example_inputs is None:
        raise ConfigError("analyze(measure=True) needs example_inputs: one batch the model takes")
    layers = _layers(model)
    if not layers:
        raise TargetError(f"{type(model).__name__} has no Linear or Conv layer to analyse")
    profile = resolve_hardware(hardware)
    device = _dense_weight(layers[0][1]).device

    # One measurement: every forward below runs in eval mode, and the model keeps its training flags, its
    # buffers (BatchNorm statistics) and torch's random stream.
    with evaluation_mode(model):
        rows, model_latency = _analyse(
            model, layers, example_inputs, measure, profile, device, repeats
        )
    return AnalysisReport(
        device=str(device),
        hardware=profile,
        measured=measure,
        macs_per="forward" if example_inputs is not None else "position",
        layers=rows,
        model_latency_s=model_latency,
        threads=torch.get_num_threads(),
    )


def _analyse(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    example_inputs: Any,
    measure: bool,
    profile: HardwareProfile,
    device: torch.device,
    repeats: int,
) -> tuple[list[LayerAnalysis], float | None]:
    """Each layer's row and the model's latency (when measuring): the body of :func:`analyze`."""
    macs: dict[str, int] = {}
    seen_inputs: dict[str, Tensor] = {}
    if example_inputs is not None:
        handles = []
        for name, module in layers:

            def hook(mod: nn.Module, args: tuple[Any, ...], output: Any, name: str = name) -> None:
                macs[name] = macs.get(name, 0) + _macs_per_call(mod, args, output)
                if name not in seen_inputs and args and isinstance(args[0], Tensor):
                    seen_inputs[name] = args[0].detach()

            handles.append(module.register_forward_hook(hook))
        try:
            with torch.inference_mode():
                run_model(model, example_inputs)
        finally:
            for handle in handles:
                handle.remove()

    rows: list[LayerAnalysis] = []
    for name, module in layers:
        weight = _dense_weight(module)
        pattern, zero_rows, zero_cols, kept_rows, kept_cols = _pattern(weight, module)
        nnz = int((weight != 0).sum())
        sizes = _bytes(weight, pattern, kept_rows.numel(), kept_cols.numel(), module)
        best_format = min(sizes, key=sizes.__getitem__)
        per_call = macs.get(name) if example_inputs is not None else None
        if per_call is None:
            per_call = weight.numel()  # one output position (Linear: one token)
        shrunk_numel = (
            kept_rows.numel()
            * kept_cols.numel()
            * (weight.numel() // max(1, _rows_cols(weight, module)))
        )
        latency: dict[str, float] = {}
        if measure and name in seen_inputs:
            latency = _measure_layer(
                module, seen_inputs[name], weight, kept_rows, kept_cols, pattern, repeats
            )
        row = LayerAnalysis(
            name=name,
            kind=type(module).__name__,
            shape=tuple(weight.shape),
            params=weight.numel(),
            nonzeros=nnz,
            pattern=pattern,
            zero_rows=zero_rows,
            zero_cols=zero_cols,
            executes_as=module.layout if isinstance(module, SparseLinear) else "dense",
            bytes_dense=sizes["dense"],
            bytes_compressed=sizes[best_format],
            compressed_format=best_format,
            macs_dense=per_call,
            macs_nonzero=per_call * nnz // max(1, weight.numel()),
            macs_shrunk=per_call * shrunk_numel // max(1, weight.numel()),
            latency_s=latency,
        )
        warning, advice = _verdict(row, profile, device, bool(latency))
        rows.append(row.model_copy(update={"warning": warning, "advice": advice}))

    model_latency = None
    if measure:
        model_latency = time_interleaved(
            [partial(run_model, model, example_inputs)], repeats=repeats, device=device
        )[0]
    return rows, model_latency
