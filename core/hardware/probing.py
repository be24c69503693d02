"""The device probe: where sparse execution of a Linear layer starts to beat dense execution, here.

:func:`probe` times ``F.linear`` with a dense weight against the same layer run sparse (CSR through
``torch.sparse``, the kernel :class:`prunus.SparseLinear` uses; and, on CUDA devices that support it, 2:4
semi-structured through ``torch.sparse.to_sparse_semi_structured``) across sparsities, shapes and batch sizes,
and finds the *crossover*: the sparsity above which the sparse layer was faster for every shape and batch
measured. The result is cached as JSON, one file per device, torch version and thread count, under
``$PRUNUS_CACHE_DIR`` (default: the user cache dir, e.g. ``~/.cache/prunus``). :func:`prunus.detect_hardware`
reads it, and the built-in selection policy says in its reason when it used it.

Timings are medians of interleaved runs (dense, sparse, dense, ...), so a machine whose load drifts affects
both sides alike. They depend on the thread count: probe with the threads the model will run with.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import statistics
import sys
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import Tensor

from .. import files
from ..arguments import check_bool, check_int
from ..errors import ConfigError, ConfigTypeError, PrunusError, PrunusWarning, brief
from ..hardware_profile import crossover_for
from .devices import describe_cpu
from .sparse import _quiet, csr_linear, sparse_weight
from .timing import time_call, time_interleaved

__all__ = [
    "CACHE_ENV",
    "ProbePoint",
    "ProbeResult",
    "crossover_for",
    "crossover_of",
    "load_probe",
    "probe",
    "probe_cache_dir",
    "probe_cache_path",
    "time_call",
    "time_interleaved",
]

CACHE_ENV = "PRUNUS_CACHE_DIR"
"""Environment variable naming the directory prunus caches probe results in."""

DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((512, 512), (1024, 1024), (2048, 2048))
DEFAULT_BATCHES: tuple[int, ...] = (1, 32)
DEFAULT_SPARSITIES: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
CUDA_SHAPES: tuple[tuple[int, int], ...] = ((2048, 2048), (4096, 4096), (8192, 8192))
CUDA_BATCHES: tuple[int, ...] = (64, 2048)


Sparsity = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A fraction in [0, 1]: NaN, infinities and anything outside are refused (a cache file is input too)."""
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Positive = Annotated[int, Field(ge=1)]


class ProbePoint(BaseModel):
    """One measurement: a Linear layer of one shape, batch and sparsity, dense against sparse.

    Attributes:
        layout: the sparse layout measured (``csr`` or ``semi_structured``).
        out_features, in_features: the weight's shape.
        batch: rows of the input.
        sparsity: fraction of zero weights.
        dense_s, sparse_s: median seconds of one forward.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    layout: Literal["csr", "semi_structured"]
    out_features: Positive
    in_features: Positive
    batch: Positive
    sparsity: Sparsity
    dense_s: Seconds
    sparse_s: Seconds

    @property
    def speedup(self) -> float:
        """Dense time over sparse time: above 1 the sparse layer is faster."""
        return self.dense_s / self.sparse_s if self.sparse_s > 0 else math.inf

    @property
    def config(self) -> str:
        """``<out>x<in>@<batch>``: the shape and batch, as the keys of ``ProbeResult.crossovers``."""
        return f"{self.out_features}x{self.in_features}@{self.batch}"


class ProbeResult(BaseModel):
    """What :func:`probe` measured on one device.

    Attributes:
        device: ``cpu`` or ``cuda:<index>``.
        device_name: the CPU model or GPU name.
        key: the cache key (device, torch version, threads).
        torch_version: torch's version.
        threads: torch's intra-op threads during the measurement.
        created: when (ISO 8601, UTC).
        repeats: timed runs per median.
        points: every measurement.
        crossovers: per ``<out>x<in>@<batch>``, the sparsity above which CSR was faster (``None``: never,
            within the sparsities measured).
        crossover: the sparsity above which CSR was faster for every shape and batch measured; ``None`` if
            some never got faster.
        semi_structured_speedup: median speedup of 2:4 semi-structured over dense (CUDA only), or ``None``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str
    device_name: str
    key: str
    torch_version: str
    threads: Positive
    created: str
    repeats: Positive
    points: list[ProbePoint]
    crossovers: dict[str, Sparsity | None]
    crossover: Sparsity | None
    semi_structured_speedup: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ProbeResult:
        """With measurements, the crossovers must be the ones they give (a cache file could say anything)."""
        if not self.points:
            return self
        measured = _crossovers(self.points)
        if set(measured) != set(self.crossovers) or any(
            not _same(measured[k], self.crossovers[k]) for k in measured
        ):
            raise ValueError(
                "crossovers do not follow from the measured points: "
                f"{_cut(self.crossovers)} recorded, {_cut(measured)} measured"
            )
        if not _same(_overall(measured), self.crossover):
            raise ValueError(
                f"crossover {self.crossover!r} does not follow from the crossovers (it is "
                f"{_overall(measured)!r})"
            )
        return self

    def __str__(self) -> str:
        lines = [
            f"probe of {self.device} ({self.device_name}), torch {self.torch_version}, "
            f"{self.threads} thread{'s' * (self.threads > 1)}, {self.created[:19]}",
            f"{'layout':<16} {'shape@batch':<16} {'sparsity':>8} {'dense ms':>10} {'sparse ms':>10} "
            f"{'speedup':>8}",
        ]
        for p in self.points:
            lines.append(
                f"{p.layout:<16} {p.config:<16} {p.sparsity:>8.0%} {p.dense_s * 1e3:>10.3f} "
                f"{p.sparse_s * 1e3:>10.3f} {p.speedup:>7.2f}x"
            )
        for config, value in self.crossovers.items():
            shown = (
                f"{value:.1%}" if value is not None else "never (within the sparsities measured)"
            )
            lines.append(f"CSR crossover {config}: {shown}")
        shown = f"{self.crossover:.1%}" if self.crossover is not None else "none"
        lines.append(f"CSR crossover, every shape: {shown}")
        if self.semi_structured_speedup is not None:
            lines.append(
                f"2:4 semi-structured speedup (median): {self.semi_structured_speedup:.2f}x"
            )
        return "\n".join(lines)


# -- crossover ------------------------------------------------------------------------------------------------


def crossover_of(sparsities: Sequence[float], speedups: Sequence[float]) -> float | None:
    """The sparsity above which the sparse layer is faster, from speedups measured at increasing sparsities.

    It is the lowest measured sparsity from which every higher one was faster (speedup >= 1), moved back
    linearly toward the previous (slower) point to where the speedup crosses 1. ``None`` if the densest
    sparsity measured was not faster.
    """
    pairs = sorted(zip(sparsities, speedups, strict=True))
    if not pairs or pairs[-1][1] < 1.0:
        return None
    first = len(pairs) - 1
    while first > 0 and pairs[first - 1][1] >= 1.0:
        first -= 1
    if first == 0:
        return pairs[0][0]
    (s0, v0), (s1, v1) = pairs[first - 1], pairs[first]
    return s0 + (s1 - s0) * (1.0 - v0) / (v1 - v0)


def _crossovers(points: Sequence[ProbePoint]) -> dict[str, float | None]:
    """The CSR crossover of each measured shape and batch."""
    out: dict[str, float | None] = {}
    for config in dict.fromkeys(p.config for p in points if p.layout == "csr"):
        measured = [p for p in points if p.layout == "csr" and p.config == config]
        out[config] = crossover_of([p.sparsity for p in measured], [p.speedup for p in measured])
    return out


def _overall(crossovers: dict[str, float | None]) -> float | None:
    """The sparsity above which CSR was faster for every shape and batch; ``None`` if some never was."""
    values = list(crossovers.values())
    return max(v for v in values if v is not None) if values and None not in values else None


def _same(a: float | None, b: float | None) -> bool:
    return (
        a is None
        if b is None
        else a is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    )


def _cut(crossovers: dict[str, float | None]) -> str:
    return brief(crossovers, 120)


# -- cache ----------------------------------------------------------------------------------------------------


def probe_cache_dir() -> Path:
    """Where probe results are cached: ``$PRUNUS_CACHE_DIR``, else the user cache dir's ``prunus``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "prunus" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "prunus"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prunus"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()[:60] or "unknown"


def _device_of(device: object) -> torch.device:
    """``device`` as a ``torch.device``, or a clear error."""
    if not isinstance(device, (str, torch.device)):
        raise ConfigTypeError(
            f"device must be a str such as 'cpu' or 'cuda' or a torch.device, not {type(device).__name__}"
        )
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"device={brief(device)} is not a device: {error}") from None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":  # pragma: no cover - needs CUDA
        return str(torch.cuda.get_device_name(device))
    cpu = describe_cpu()
    return " ".join(part for part in (cpu.model_name, cpu.arch, cpu.capability) if part) or "cpu"


def _key(device: torch.device, threads: int | None = None) -> str:
    torch_version = torch.__version__.split("+")[0]
    if device.type == "cuda":  # pragma: no cover - needs CUDA
        return f"cuda-{_slug(_device_name(device))}-torch{torch_version}"
    threads = torch.get_num_threads() if threads is None else threads
    return f"cpu-{_slug(_device_name(device))}-torch{torch_version}-{threads}t"


def probe_cache_path(device: torch.device | str = "cpu", *, threads: int | None = None) -> Path:
    """The cache file of ``device``'s probe (for the CPU, at ``threads`` threads: default the current)."""
    if threads is not None:
        check_int("threads", threads, minimum=1)
    return probe_cache_dir() / f"probe-{_key(_device_of(device), threads)}.json"


def load_probe(
    device: torch.device | str = "cpu", *, threads: int | None = None
) -> ProbeResult | None:
    """The cached probe of ``device`` on this machine, torch version and thread count, or ``None``.

    A cache file that cannot be read, is not UTF-8 JSON, or holds values out of range or inconsistent with its
    own measurements (a crossover of -5, 7.5 or NaN) is ignored with a :class:`~prunus.errors.PrunusWarning`
    that names the file and what is wrong: a bad file never changes a selection.
    """
    path = probe_cache_path(device, threads=threads)
    if not path.exists():
        return None
    try:
        text = files.read_text(path, what="probe cache", limit=_CACHE_LIMIT)
        return ProbeResult.model_validate_json(text)
    except (PrunusError, ValidationError) as error:
        reason = (
            f"it is not a valid probe result ({_first_error(error)})"
            if isinstance(error, ValidationError)
            else str(error)
        )
        warnings.warn(
            f"ignoring the prunus probe cache {path}: {reason}; run prunus.probe() again to replace it",
            PrunusWarning,
            stacklevel=2,
        )
        return None


_CACHE_LIMIT = 16 << 20
"""Bytes a probe cache may have (a real one is a few kilobytes): a bigger file is not read."""


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the file"
    more = f", and {error.error_count() - 1} more" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


# -- the probe ------------------------------------------------------------------------------------------------


def _random_weight(
    out_features: int,
    in_features: int,
    sparsity: float,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    weight = torch.randn(out_features, in_features, generator=generator)
    keep = torch.rand(out_features, in_features, generator=generator) >= sparsity
    return (weight * keep).to(device=device, dtype=dtype)


def _two_four_weight(
    out_features: int,
    in_features: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:  # pragma: no cover - used on CUDA only
    weight = torch.randn(out_features, in_features, generator=generator)
    groups = weight.abs().reshape(out_features, -1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return (weight * keep.reshape(out_features, in_features)).to(device=device, dtype=dtype)


def probe(
    device: torch.device | str = "cpu",
    *,
    shapes: Sequence[tuple[int, int]] | None = None,
    batches: Sequence[int] | None = None,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    repeats: int = 15,
    seed: int = 0,
    save: bool = True,
) -> ProbeResult:
    """Measure dense against sparse Linear layers on ``device`` and cache the crossover.

    Args:
        device: ``cpu`` or a CUDA device.
        shapes: ``(out_features, in_features)`` of the layers measured. Default: 512 to 2048 square on a
            CPU, 2048 to 8192 on CUDA.
        batches: input rows. Default: 1 and 32 on a CPU, 64 and 2048 on CUDA.
        sparsities: fractions of zero weights measured for CSR.
        repeats: timed runs per median (after two warm-up runs).
        seed: of the random weights and inputs.
        save: write the result to :func:`probe_cache_path` (read back by :func:`prunus.detect_hardware`).

    Returns:
        A :class:`ProbeResult`; ``str()`` of it is a table.

    It runs with torch's current thread count (``torch.set_num_threads``), which is part of the cache key.
    On CUDA it also measures 2:4 semi-structured float16 layers when the device's compute capability is 8.0
    or more.
    """
    check_int("repeats", repeats, minimum=1)
    check_int("seed", seed, minimum=0)
    check_bool("save", save)
    device = _device_of(device)
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"probe measures 'cpu' or 'cuda' devices, not {device}")
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ConfigError("probe(device='cuda') was asked, but torch sees no CUDA device here")
    shapes = tuple(shapes or (CUDA_SHAPES if cuda else DEFAULT_SHAPES))
    batches = tuple(batches or (CUDA_BATCHES if cuda else DEFAULT_BATCHES))
    if not all(
        isinstance(shape, (tuple, list))
        and len(shape) == 2
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
        for shape in shapes
    ):
        raise ConfigError(
            f"shapes must be (out_features, in_features) pairs of ints >= 1, not {brief(shapes)}"
        )
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batches):
        raise ConfigError(f"batches must be ints >= 1, not {brief(batches)}")
    if (
        not isinstance(sparsities, (tuple, list))
        or not sparsities
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0
            for v in sparsities
        )
    ):
        raise ConfigError(f"sparsities must be fractions in [0, 1), not {brief(sparsities)}")
    dtype = torch.float16 if cuda else torch.float32
    generator = torch.Generator().manual_seed(seed)
    points: list[ProbePoint] = []
    with _quiet():
        for out_features, in_features in shapes:
            for batch in batches:
                x = torch.randn(batch, in_features, generator=generator).to(device, dtype)
                for sparsity in sorted(sparsities):
                    weight = _random_weight(
                        out_features, in_features, sparsity, generator, device, dtype
                    )
                    sparse = sparse_weight(weight, "csr")
                    dense_s, sparse_s = time_interleaved(
                        [partial(F.linear, x, weight), partial(csr_linear, x, sparse)],
                        repeats=repeats,
                        device=device,
                    )
                    points.append(
                        ProbePoint(
                            layout="csr",
                            out_features=out_features,
                            in_features=in_features,
                            batch=batch,
                            sparsity=sparsity,
                            dense_s=dense_s,
                            sparse_s=sparse_s,
                        )
                    )
                if cuda and torch.cuda.get_device_capability(device)[0] >= 8:  # pragma: no cover
                    points.extend(
                        _probe_semi_structured(
                            out_features, in_features, batch, x, generator, device, repeats
                        )
                    )
    crossovers = _crossovers(points)
    crossover = _overall(crossovers)
    semi = [p.speedup for p in points if p.layout == "semi_structured"]
    result = ProbeResult(
        device=str(device) if cuda else "cpu",
        device_name=_device_name(device),
        key=_key(device),
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        repeats=repeats,
        points=points,
        crossovers=crossovers,
        crossover=crossover,
        semi_structured_speedup=statistics.median(semi) if semi else None,
    )
    if save:
        # Atomic: a concurrent reader sees the old cache or the new one, and a failed write keeps the old one.
        files.write_text(
            probe_cache_path(device), json.dumps(result.model_dump(mode="json"), indent=1)
        )
    return result


def _probe_semi_structured(
    out_features: int,
    in_features: int,
    batch: int,
    x: Tensor,
    generator: torch.Generator,
    device: torch.device,
    repeats: int,
) -> list[ProbePoint]:  # pragma: no cover - needs a CUDA device of compute capability >= 8.0
    weight = _two_four_weight(out_features, in_features, generator, device, torch.float16)
    try:
        sparse = sparse_weight(weight, "semi_structured")
    except (ConfigError, RuntimeError):
        return []
    dense_s, sparse_s = time_interleaved(
        [lambda: F.linear(x, weight), lambda: F.linear(x, sparse)], repeats=repeats, device=device
    )
    return [
        ProbePoint(
            layout="semi_structured",
            out_features=out_features,
            in_features=in_features,
            batch=batch,
            sparsity=0.5,
            dense_s=dense_s,
            sparse_s=sparse_s,
        )
    ]
