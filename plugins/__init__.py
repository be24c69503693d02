"""prunus's built-in plugins.

Each module here is a pluggy plugin that uses exactly the hooks a third-party plugin uses
(see :mod:`prunus.hookspecs`). The registry loads them by the names below, as ``prunus.<name>``; each can be
skipped with ``PRUNUS_DISABLED_PLUGINS=prunus.<name>``.
"""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "criteria",
    "granularities",
    "semistructured",
    "sparsegpt",
    "allocations",
    "strategies",
    "defaults",
    "schedules",
    "hardware_policy",
)
"""Modules of this package that are plugins, in registration order."""
