"""What this machine is: its CPU (architecture, cores, vector instructions) and its CUDA device.

These read the operating system and torch only when called; nothing runs at import. Describing a CUDA device
reads its properties, which initialises CUDA in the process (as any CUDA query does).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ..hardware_profile import CpuInfo, GpuInfo

__all__ = ["describe_cpu", "describe_gpu"]

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


def describe_cpu() -> CpuInfo:
    """The CPU this process runs on: architecture, model, cores, torch's threads and vector ISA."""
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


def describe_gpu() -> GpuInfo | None:
    """The current CUDA device, or ``None`` without one (never initialises CUDA on a machine that has none)."""
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()  # pragma: no cover - needs CUDA
    props = torch.cuda.get_device_properties(index)  # pragma: no cover - needs CUDA
    return GpuInfo(  # pragma: no cover - needs CUDA
        name=str(props.name),
        compute_capability=(int(props.major), int(props.minor)),
        memory_bytes=int(props.total_memory),
        index=index,
    )
