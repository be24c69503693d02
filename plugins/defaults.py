"""The default implementations of the scoring and mask-application hooks.

Both are ``trylast``: a plugin that implements the same hook runs first and takes over by returning a value.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from prunus.plugin_api import Criterion, PruneContext, Target, attach_mask, hookimpl


@hookimpl(trylast=True)
def prunus_score(criterion: Criterion, target: Target, context: PruneContext) -> Tensor:
    """Score with the criterion's own :meth:`~prunus.Criterion.score`."""
    return criterion.score(target, context)


@hookimpl(trylast=True)
def prunus_apply_mask(
    target: Target, mask: Tensor, restorable: bool, context: PruneContext
) -> Callable[[], None]:
    """Zero the pruned entries in place and keep the mask (and the pruned values) beside the parameter."""
    return attach_mask(target.module, target.param_name, mask, restorable=restorable)
