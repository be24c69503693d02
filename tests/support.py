"""Helpers shared by the test modules (the models are in :mod:`prunus.testing.zoo`, the fixtures in conftest.py).

Test modules import them by name (``from support import registers``): pytest puts this folder on ``sys.path``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

import prunus
from prunus import Registrar
from prunus.hardware.probing import ProbeResult, probe_cache_path

# -- in-process plugins ---------------------------------------------------------------------------------------


def plugin(**hooks: Callable[..., Any]) -> types.ModuleType:
    """A plugin module with the given hook implementations."""
    module = types.ModuleType("test_plugin")
    for name, fn in hooks.items():
        setattr(module, name, prunus.hookimpl(fn))
    return module


def registers(*classes: type, kind: str = "criteria") -> types.ModuleType:
    """A plugin module whose ``prunus_register_<kind>`` hook registers ``classes``."""

    def hook(register: Registrar) -> None:
        for cls in classes:
            register(cls)

    return plugin(**{f"prunus_register_{kind}": hook})


# -- masks ------------------------------------------------------------------------------------------------------


def pruned_counts(model: nn.Module) -> dict[str, int]:
    """How many entries each mask of ``model`` prunes."""
    return {name: int((~mask).sum()) for name, mask in prunus.masks(model).items()}


def pruned_entries_are_zero(model: nn.Module) -> bool:
    """Whether every entry a mask of ``model`` prunes is zero in its parameter."""
    return all(
        bool((model.get_parameter(name).detach()[~mask] == 0).all())
        for name, mask in prunus.masks(model).items()
    )


# -- the probe cache ---------------------------------------------------------------------------------------------


def write_probe(crossover: float | None, semi: float | None = None) -> None:
    """Cache a CPU probe result with this overall crossover (and 2:4 speed-up), as ``prunus.probe()`` would."""
    result = ProbeResult(
        device="cpu",
        device_name="test",
        key="k",
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
        created="2026-01-02T03:04:05+00:00",
        repeats=1,
        points=[],
        crossovers={},
        crossover=crossover,
        semi_structured_speedup=semi,
    )
    path = probe_cache_path("cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json())


# -- what `import prunus` loads ----------------------------------------------------------------------------------

IMPORT_PROBE = textwrap.dedent(
    """
    import json, sys
    import click, pluggy, pydantic, torch
    before = set(sys.modules)
    import prunus
    print(json.dumps({
        "modules": sorted(sys.modules),
        "new_modules": sorted(set(sys.modules) - before),
        "pytest": "pytest" in sys.modules,
        "hypothesis": "hypothesis" in sys.modules,
        "plugins": sorted(m for m in sys.modules if m.startswith("prunus.plugins.")),
        "third_party": sorted(m for m in sys.modules if m.startswith("prunus_")),
        "cuda_initialized": torch.cuda.is_initialized(),
        "loaded": repr(prunus.registry),
    }))
    """
)


def import_in_fresh_process(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``import prunus`` in a new interpreter (after torch, pydantic, pluggy and click): the modules then loaded
    (``new_modules``: those ``import prunus`` added), whether CUDA started, the registry's state."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]
