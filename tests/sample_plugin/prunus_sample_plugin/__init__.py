"""A third-party prunus plugin: the ``sample_sq`` criterion scores each weight by its square.

Registered through the ``prunus`` entry-point group, so the registry composes it with every granularity:
``sample_sq_unstructured``, ``sample_sq_structured``, ``sample_sq_global``, ...
"""

from __future__ import annotations

from torch import Tensor

import prunus
from prunus import Criterion, PruneContext, Registrar, Target


class SampleSquare(Criterion):
    """``w**2``: ranks entries as ``l1`` does; a slice scores the sum of its squares."""

    name = "sample_sq"
    summary = "squared weights (a slice scores its sum of squares)"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return target.tensor.square()


@prunus.hookimpl
def prunus_register_criteria(register: Registrar) -> None:
    register(SampleSquare)
