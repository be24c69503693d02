"""prunus's own ``prunus_resolve_hardware`` hook: how ``hardware=`` names become profiles.

Registered by the registry as the built-in plugin ``prunus.hardware`` (see
:data:`prunus.registration.BUILTIN_TOOL_PLUGINS`), so ``prunus.select`` and ``prune(model, "auto")`` reach the
detection code through a hook and the engine never imports this package.
"""

from __future__ import annotations

from typing import Any

from ..hardware_profile import HardwareProfile
from ..hookspecs import hookimpl
from .detection import resolve_hardware


@hookimpl(trylast=True)
def prunus_resolve_hardware(hardware: Any) -> HardwareProfile:
    """``"auto"`` detects this machine; ``"cpu"``, ``"gpu"``, ``"sparse_accelerator"``, dicts and profiles
    are declared targets (see :func:`prunus.hardware.detection.resolve_hardware`)."""
    return resolve_hardware(hardware)
