"""The hardware target of a call: the current machine described and measured, or a declared one.

:func:`detect_hardware` describes the current machine, with the sparse-execution crossover a probe measured
earlier on it (see :func:`prunus.probe`). :func:`resolve_hardware` turns what a user passes as ``hardware=``
(a name, a dict, a profile) into a :class:`~prunus.HardwareProfile`; prunus reaches it through the
``prunus_resolve_hardware`` hook (see :mod:`prunus.hardware.plugin`), so a plugin can add targets of its own.

Nothing here runs at import. :func:`detect_hardware` asks torch about CUDA only when it is called; on a machine
without CUDA that never initialises it. On a machine with a CUDA device, reading the device's properties
initialises CUDA in this process (as any CUDA query does); pass ``cuda=False`` to describe the CPU only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..arguments import check_bool
from ..config import config_error
from ..errors import ConfigError
from ..hardware_profile import HARDWARE_NAMES, HardwareProfile
from .devices import describe_cpu, describe_gpu
from .probing import load_probe, probe_cache_path

__all__ = ["detect_hardware", "resolve_hardware"]


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
    check_bool("cuda", cuda)
    check_bool("probe_cache", probe_cache)
    cpu = describe_cpu()
    gpu = describe_gpu() if cuda else None
    if gpu is not None:
        profile = HardwareProfile(kind="gpu", name=gpu.name, detected=True, cpu=cpu, gpu=gpu)
        device = f"cuda:{gpu.index}"
    else:
        name = cpu.model_name or cpu.arch or "cpu"
        profile = HardwareProfile(kind="cpu", name=name, detected=True, cpu=cpu)
        device = "cpu"
    if probe_cache:
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
