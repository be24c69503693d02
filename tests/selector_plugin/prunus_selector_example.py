"""An installable prunus plugin that implements the selection hook (used by prunus's tests).

It answers every request except those for objective ``accuracy``, which it leaves to the next plugin (prunus's
built-in policy) by returning ``None``. For objective ``memory`` it returns a plan (random pruning, then CSR
storage); for the others a plain selection, as plugins written before plans do.
"""

from __future__ import annotations

from typing import Any

import prunus
from prunus import PlanStep, Selection


@prunus.hookimpl
def prunus_select_strategy(
    model: Any, hardware: Any, objective: str, sparsity: float
) -> Selection | None:
    if objective == "accuracy":
        return None
    if objective == "memory":
        options = {"amount": sparsity, "seed": 7}
        return Selection(
            strategy="random_unstructured",
            options=options,
            reason="the example plugin stores random zeros in CSR",
            steps=[
                PlanStep(kind="prune", strategy="random_unstructured", options=options),
                PlanStep(kind="to_sparse", settings={"layout": "csr"}),
            ],
        )
    return Selection(
        strategy="random_unstructured",
        options={"amount": sparsity, "seed": 7},
        reason=f"the example plugin prunes at random on every target (here a {hardware.kind})",
    )
