"""prunus-taylor: the first-order Taylor criterion, ``|w * dL/dw|``, as a prunus plugin.

The criterion reads the gradients a backward pass left in each parameter's ``.grad``::

    loss_fn(model(inputs), targets).backward()
    prunus.prune(model, "taylor_structured", amount=0.25)
"""

from __future__ import annotations

import torch
from torch import Tensor

from prunus.plugin_api import ConfigError, Criterion, PruneContext, Registrar, Target, hookimpl

__version__ = "0.1.0"


class Taylor(Criterion):
    """First-order Taylor importance ``|w * dL/dw|`` (Molchanov et al., 2017).

    Setting an entry ``w`` to zero changes the loss by about ``-w * dL/dw``, so the entries with the smallest
    ``|w * grad|`` cost the least to prune. Per slice (``taylor_structured``) the scores are summed.
    """

    name = "taylor"
    summary = "first-order Taylor |w * grad| (run loss.backward() first)"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        grad = target.parameter.grad
        if grad is None:
            raise ConfigError(
                f"taylor scores {target.name!r} by |w * grad|, but it has no gradient: call "
                "loss.backward() on a batch before prunus.prune(...), and do not zero the gradients "
                "in between"
            )
        if not bool(torch.isfinite(grad).all()):
            raise ConfigError(
                f"the gradient of {target.name!r} has inf or NaN entries, so taylor cannot rank them; "
                "compute it again on a batch whose loss is finite"
            )
        return (target.tensor * grad).abs()


@hookimpl
def prunus_register_criteria(register: Registrar) -> None:
    """Register ``taylor``; prunus composes it with every granularity."""
    register(Taylor)
