"""prunus's own ``prunus_carry_out`` hook: how ``prune(model, "auto", ...)`` reaches this package.

Registered by the registry as the built-in plugin ``prunus.autoplan`` (see
:data:`prunus.registration.BUILTIN_TOOL_PLUGINS`), so the engine never imports the tools a plan uses. The
implementation is ``trylast``: an installed plugin that implements the hook carries out plans first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from torch import nn

    from ..registration import Registry
    from ..report import PruneReport
    from ..selection import AutoRequest, Selection


@hookimpl(trylast=True)
def prunus_carry_out(
    model: nn.Module, selection: Selection, request: AutoRequest, registry: Registry
) -> PruneReport:
    """Run the plan's steps (see :func:`prunus.autoplan.execute.carry_out`)."""
    # Imported here: loading the plugins must not import the shrinking and workflow tools.
    from .execute import carry_out

    return carry_out(model, selection, request, registry)
