"""Hardware profiles: the description of a target that strategy selection reads.

A :class:`HardwareProfile` describes what a model will run on: its kind (``cpu``, ``gpu``,
``sparse_accelerator``), the CPU's cores and vector instructions, the GPU's name, compute capability and memory,
and, when one was measured, the sparsity above which sparse execution beats dense execution there.

The profile is part of the plugin contract (the ``prunus_select_strategy`` hook receives one), so it lives with
the contracts. Describing the current machine and measuring it are tools: :func:`prunus.detect_hardware` and
:func:`prunus.probe` in :mod:`prunus.hardware`. A target can also be *declared*::

    prunus.select(model, hardware="gpu")
    prunus.select(model, hardware=HardwareProfile.declare("gpu", compute_capability=(8, 0), name="A100"))
    prunus.select(model, hardware={"kind": "cpu", "sparse_crossover": 0.9})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import config_error

__all__ = [
    "HARDWARE_NAMES",
    "CpuInfo",
    "GpuInfo",
    "HardwareKind",
    "HardwareProfile",
    "crossover_for",
]

HardwareKind = Literal["cpu", "gpu", "sparse_accelerator", "unknown"]

HARDWARE_NAMES: tuple[str, ...] = ("auto", "cpu", "gpu", "sparse_accelerator")
"""The names ``hardware=`` accepts besides a profile or a dict: ``auto`` detects the current machine."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuInfo(_Frozen):
    """The CPU of a profile.

    Attributes:
        arch: the machine architecture (``x86_64``, ``aarch64``, ...).
        model_name: the CPU's model name, when the OS tells it.
        logical_cpus: logical CPUs of the machine (``os.cpu_count()``).
        available_cpus: logical CPUs this process may run on (its affinity), when known.
        physical_cores: physical cores, when ``/proc/cpuinfo`` tells them.
        threads: torch's intra-op threads (``torch.get_num_threads()``) when detected.
        capability: the vector ISA torch's CPU kernels were dispatched to (``DEFAULT``, ``AVX2``, ``AVX512``,
            ``SVE256``, ...; from ``torch.backends.cpu.get_cpu_capability()``).
        features: the relevant ISA flags the OS reports (``avx2``, ``avx512f``, ``amx_tile``, ``asimd``...).
    """

    arch: str = ""
    model_name: str = ""
    logical_cpus: int | None = Field(default=None, ge=1)
    available_cpus: int | None = Field(default=None, ge=1)
    physical_cores: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, ge=1)
    capability: str = ""
    features: tuple[str, ...] = ()

    @property
    def vector_lanes(self) -> int:
        """float32 lanes of the widest vector unit torch uses here: 16 (AVX-512), 8 (AVX2, SVE256) or 4."""
        capability = self.capability.upper()
        if "AVX512" in capability or "avx512f" in self.features:
            return 16
        if capability in ("AVX2", "SVE256") or "avx2" in self.features:
            return 8
        return 4


class GpuInfo(_Frozen):
    """The GPU of a profile.

    Attributes:
        name: the device name (``NVIDIA A100-SXM4-80GB``...).
        compute_capability: CUDA compute capability ``(major, minor)``, when known.
        memory_bytes: device memory, when known.
        index: the CUDA device index it was detected at.
    """

    name: str = ""
    compute_capability: tuple[int, int] | None = None
    memory_bytes: int | None = Field(default=None, ge=0)
    index: int = Field(default=0, ge=0)


class HardwareProfile(_Frozen):
    """A hardware target: what a model will run on, detected or declared.

    Attributes:
        kind: ``cpu``, ``gpu`` (CUDA), ``sparse_accelerator`` (hardware that skips zero weights one by one) or
            ``unknown``.
        name: a label for reasons and reports.
        detected: ``True`` when :func:`detect_hardware` described the current machine, ``False`` when declared.
        cpu: the CPU, when known.
        gpu: the GPU, when known.
        semi_structured: whether 2:4 semi-structured sparse kernels run there; ``None`` derives it from the GPU
            (CUDA compute capability 8.0 or more).
        channel_multiple: the multiple of channels a dense kernel handles best there (8 for GPU tensor cores,
            the float32 vector width on a CPU); ``None`` derives it. Structured selections round to it.
        sparse_crossover: the sparsity above which unstructured sparse execution (CSR) was measured faster
            than dense execution on that machine, from :func:`prunus.probe`; ``1.0`` if it was faster at no
            sparsity measured, ``None`` if not measured.
        sparse_crossovers: the crossover per measured layer shape and batch (``"<out>x<in>@<batch>"``,
            ``None``: never faster), from the same probe; selection and analysis read the one closest to each
            layer's shape.
        semi_structured_speedup: the measured speedup of 2:4 semi-structured layers over dense ones there.
        crossover_source: where the measured figures come from (the probe's cache file and conditions).
    """

    kind: HardwareKind
    name: str = ""
    detected: bool = False
    cpu: CpuInfo | None = None
    gpu: GpuInfo | None = None
    semi_structured: bool | None = None
    channel_multiple: int | None = Field(default=None, ge=1)
    sparse_crossover: float | None = Field(default=None, ge=0.0, le=1.0)
    sparse_crossovers: dict[str, float | None] = Field(default_factory=dict)
    semi_structured_speedup: float | None = Field(default=None, gt=0.0)
    crossover_source: str = ""

    # -- derived ------------------------------------------------------------------------------------------

    @property
    def supports_semi_structured(self) -> bool:
        """Whether 2:4 semi-structured sparse matmuls run there (CUDA compute capability >= 8.0)."""
        if self.semi_structured is not None:
            return self.semi_structured
        if self.kind != "gpu" or self.gpu is None or self.gpu.compute_capability is None:
            return False
        return self.gpu.compute_capability >= (8, 0)

    @property
    def alignment(self) -> int:
        """``channel_multiple``, or the default for the kind: 8 on a GPU, the vector width on a CPU, else 1."""
        if self.channel_multiple is not None:
            return self.channel_multiple
        if self.kind == "gpu":
            return 8
        if self.kind == "cpu":
            return self.cpu.vector_lanes if self.cpu is not None else 8
        return 1

    def crossover_for(self, out_features: int, in_features: int) -> float | None:
        """The measured CSR crossover for a Linear layer of this shape (the closest shape probed).

        Falls back to ``sparse_crossover`` when no per-shape figures are known; ``None`` if nothing was measured.
        """
        found = crossover_for(self.sparse_crossovers, out_features, in_features)
        return self.sparse_crossover if found is None else found

    def describe(self) -> str:
        """One line: the kind, the device and what matters for the selection."""
        parts = [self.name or self.kind]
        if self.gpu is not None and self.gpu.compute_capability is not None:
            major, minor = self.gpu.compute_capability
            parts.append(f"compute capability {major}.{minor}")
        if self.cpu is not None:
            if self.cpu.capability:
                parts.append(self.cpu.capability)
            if self.cpu.threads:
                parts.append(f"{self.cpu.threads} torch thread{'s' * (self.cpu.threads > 1)}")
        parts.append("detected" if self.detected else "declared")
        return ", ".join(parts)

    # -- declared targets ---------------------------------------------------------------------------------

    @classmethod
    def declare(
        cls,
        kind: HardwareKind,
        *,
        name: str = "",
        compute_capability: tuple[int, int] | None = None,
        **fields: Any,
    ) -> HardwareProfile:
        """A declared target, e.g. ``HardwareProfile.declare("gpu", compute_capability=(8, 0), name="A100")``.

        Args:
            kind: ``cpu``, ``gpu``, ``sparse_accelerator`` or ``unknown``.
            name: a label (default: the kind).
            compute_capability: for a ``gpu``, its CUDA compute capability; 8.0 or more runs 2:4 kernels.
            **fields: any other field, e.g. ``sparse_crossover=0.9`` measured on the target.

        Raises:
            ConfigError: an invalid field.
        """
        values: dict[str, Any] = {"kind": kind, "name": name or kind, **fields}
        if compute_capability is not None:
            values["gpu"] = {"name": name or kind, "compute_capability": compute_capability}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise config_error("hardware", error) from None


def crossover_for(
    crossovers: Mapping[str, float | None], out_features: int, in_features: int
) -> float | None:
    """The crossover measured for the shape closest to ``out_features x in_features`` (by entry count).

    ``crossovers`` maps ``"<out>x<in>@<batch>"`` to a crossover (``None``: never faster), as the
    ``crossovers`` of a :class:`~prunus.hardware.probing.ProbeResult`. Over the batches measured for that shape it takes the highest (the sparsity
    above which sparse was faster at every batch); ``1.0`` when some batch was never faster; ``None`` when
    nothing was measured.
    """
    parsed: dict[int, list[float]] = {}
    for key, value in crossovers.items():
        shape, _, _ = key.partition("@")
        out_text, _, in_text = shape.partition("x")
        if not (out_text.isdigit() and in_text.isdigit()):
            continue
        parsed.setdefault(int(out_text) * int(in_text), []).append(1.0 if value is None else value)
    if not parsed:
        return None
    target = math.log(max(out_features * in_features, 1))
    closest = min(parsed, key=lambda numel: (abs(math.log(numel) - target), numel))
    return max(parsed[closest])
