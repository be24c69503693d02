"""Hardware profiles: what the machine a model will run on can execute fast.

A :class:`HardwareProfile` describes a target: its kind (``cpu``, ``gpu``, ``sparse_accelerator``), the CPU's
cores and vector instructions, the GPU's name, compute capability and memory, and, when one was measured, the
sparsity above which sparse execution beats dense execution there (see :func:`prunus.probe`).

:func:`detect_hardware` describes the current machine. Models are often pruned on one machine for another, so a
target can also be *declared*: by name (``"cpu"``, ``"gpu"``, ``"sparse_accelerator"``), as a dict, or as a full
profile::

    prunus.select(model, hardware="gpu")
    prunus.select(model, hardware=HardwareProfile.declare("gpu", compute_capability=(8, 0), name="A100"))
    prunus.select(model, hardware={"kind": "cpu", "sparse_crossover": 0.9})

Nothing here runs at import. :func:`detect_hardware` asks torch about CUDA only when it is called; on a machine
without CUDA that never initialises it. On a machine with a CUDA device, reading the device's properties
initialises CUDA in this process (as any CUDA query does); pass ``cuda=False`` to describe the CPU only.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import config_error
from .errors import ConfigError

__all__ = [
    "HARDWARE_NAMES",
    "CpuInfo",
    "GpuInfo",
    "HardwareKind",
    "HardwareProfile",
    "detect_hardware",
    "resolve_hardware",
]

HardwareKind = Literal["cpu", "gpu", "sparse_accelerator", "unknown"]

HARDWARE_NAMES: tuple[str, ...] = ("auto", "cpu", "gpu", "sparse_accelerator")
"""The names ``hardware=`` accepts besides a profile or a dict: ``auto`` detects the current machine."""

# /proc/cpuinfo flags worth reporting: the vector and matrix instructions dense and sparse kernels use.
_INTERESTING_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)


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
        from .probe import crossover_for

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


def resolve_hardware(
    hardware: str | HardwareProfile | Mapping[str, Any] = "auto",
) -> HardwareProfile:
    """A :class:`HardwareProfile` from what a user passes as ``hardware=``.

    ``"auto"`` detects the current machine (and reads the probe cache, see :func:`prunus.probe`); ``"cpu"``,
    ``"gpu"`` and ``"sparse_accelerator"`` declare a generic target; a dict is validated as a profile.

    Raises:
        ConfigError: an unknown name or an invalid profile.
    """
    if isinstance(hardware, HardwareProfile):
        return hardware
    if isinstance(hardware, str):
        if hardware == "auto":
            return detect_hardware()
        if hardware in HARDWARE_NAMES:
            return HardwareProfile.declare(hardware)  # type: ignore[arg-type]
        raise ConfigError(
            f"hardware={hardware!r} is not a known target; give one of {', '.join(HARDWARE_NAMES)}, "
            "a dict of HardwareProfile fields, or a prunus.HardwareProfile"
        )
    if isinstance(hardware, Mapping):
        try:
            return HardwareProfile.model_validate(dict(hardware))
        except ValidationError as error:
            raise config_error("hardware", error) from None
    raise ConfigError(
        f"hardware must be a name ({', '.join(HARDWARE_NAMES)}), a dict or a HardwareProfile, "
        f"not {type(hardware).__name__}"
    )


# -- detection ------------------------------------------------------------------------------------------------


def detect_hardware(*, cuda: bool = True, probe_cache: bool = True) -> HardwareProfile:
    """Describe the current machine.

    Args:
        cuda: look for a CUDA device (``torch.cuda.is_available()``; reading a device's properties initialises
            CUDA). With ``False`` only the CPU is described.
        probe_cache: fill ``sparse_crossover`` from a probe measured earlier on this machine, if one is cached.

    Returns:
        A ``gpu`` profile when a CUDA device is available (device 0, the CPU described too), else a ``cpu``
        profile.
    """
    import torch

    cpu = _detect_cpu()
    gpu = None
    if cuda and torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        gpu = GpuInfo(
            name=str(props.name),
            compute_capability=(int(props.major), int(props.minor)),
            memory_bytes=int(props.total_memory),
            index=index,
        )
    if gpu is not None:
        profile = HardwareProfile(kind="gpu", name=gpu.name, detected=True, cpu=cpu, gpu=gpu)
        device = f"cuda:{gpu.index}"
    else:
        name = cpu.model_name or cpu.arch or "cpu"
        profile = HardwareProfile(kind="cpu", name=name, detected=True, cpu=cpu)
        device = "cpu"
    if probe_cache:
        from .probe import load_probe, probe_cache_path

        cached = load_probe(device)
        if cached is not None:
            threads = f"{cached.threads} thread{'s' * (cached.threads > 1)}"
            source = f"measured by prunus.probe() on {cached.created[:10]} with {threads} ({probe_cache_path(device)})"
            profile = profile.model_copy(
                update={
                    # 1.0: sparse execution was faster at no sparsity measured.
                    "sparse_crossover": 1.0 if cached.crossover is None else cached.crossover,
                    "sparse_crossovers": dict(cached.crossovers),
                    "semi_structured_speedup": cached.semi_structured_speedup,
                    "crossover_source": source,
                }
            )
    return profile


def _detect_cpu() -> CpuInfo:
    import torch

    flags: set[str] = set()
    model_name = ""
    physical: int | None = None
    text = _read_cpuinfo()
    if text:
        cores_per_socket: dict[str, int] = {}
        socket = "0"
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key in ("flags", "features") and not flags:
                flags = set(value.split())
            elif key == "model name" and not model_name:
                model_name = value
            elif key == "physical id":
                socket = value
            elif key == "cpu cores" and value.isdigit():
                cores_per_socket[socket] = int(value)
        physical = sum(cores_per_socket.values()) or None
    if not model_name:
        model_name = platform.processor()
    capability_fn = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    capability = str(capability_fn()) if callable(capability_fn) else ""
    try:
        available: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = None
    return CpuInfo(
        arch=platform.machine(),
        model_name=model_name,
        logical_cpus=os.cpu_count(),
        available_cpus=available,
        physical_cores=physical,
        threads=torch.get_num_threads(),
        capability=capability,
        features=tuple(f for f in _INTERESTING_FLAGS if f in flags),
    )


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
