"""Real threads: prune, restore and the registry's first use from several threads at once.

Races are rare events, so each test repeats its scenario ``PRUNUS_THREAD_REPETITIONS`` times (default 10, what
the suite runs; ``PRUNUS_THREAD_REPETITIONS=1000`` is the long run docs/user-guide.md quotes). Every repetition
starts its threads on a barrier, so they really do run at the same moment.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import prunus
from prunus import NotPrunedError

REPETITIONS = int(os.environ.get("PRUNUS_THREAD_REPETITIONS", "10"))
THREADS = 4


def together(work: list[Callable[[], Any]]) -> list[BaseException]:
    """Run each function in its own thread, all released at once; return what they raised."""
    barrier = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def run(function: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            function()
        except BaseException as error:  # collected, asserted by the caller
            errors.append(error)

    threads = [threading.Thread(target=run, args=(function,)) for function in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8)
    )


def weights(net: nn.Module) -> dict[str, bytes]:
    return {
        name: bytes(p.detach().reshape(-1).view(torch.uint8).numpy())
        for name, p in net.named_parameters()
    }


def test_prunes_from_several_threads_compose_and_restore_bit_exactly() -> None:
    """Four threads prune one model at once: the masks compose as in some serial order, restore is exact."""
    before = weights(model())
    serial = model()
    for _ in range(THREADS):
        prunus.prune(serial, "l1_unstructured", amount=0.2)
    expected = {name: int((~mask).sum()) for name, mask in prunus.masks(serial).items()}
    for repetition in range(REPETITIONS):
        net = model()
        errors = together([functools.partial(prune_some, net)] * THREADS)
        assert not errors, errors
        masks = prunus.masks(net)
        # Every prune counted 20 % of what the previous ones kept: the totals of any serial order.
        assert {name: int((~mask).sum()) for name, mask in masks.items()} == expected, repetition
        for name, param in net.named_parameters():
            if name in masks:
                assert not bool(param.detach()[~masks[name]].any()), (repetition, name)
        prunus.restore(net)
        assert weights(net) == before, f"repetition {repetition}: a restore value was lost"


def prune_some(net: nn.Module) -> None:
    prunus.prune(net, "l1_unstructured", amount=0.2)


def restore_if_pruned(net: nn.Module) -> None:
    with contextlib.suppress(NotPrunedError):  # it ran before any prune: nothing to restore
        prunus.restore(net)


def test_prune_and_restore_racing_on_one_model_never_lose_a_value() -> None:
    """Threads prune and restore the same model at once; whatever the order, a final restore is exact."""
    before = weights(model())
    for repetition in range(REPETITIONS):
        net = model()
        errors = together(
            [
                functools.partial(prunus.prune, net, "l1_unstructured", amount=0.3),
                functools.partial(restore_if_pruned, net),
                functools.partial(
                    prunus.prune, net, "random_structured", amount=0.25, seed=repetition
                ),
                functools.partial(restore_if_pruned, net),
            ]
        )
        assert not errors, errors
        if prunus.is_pruned(net):
            prunus.restore(net)
        assert weights(net) == before, f"repetition {repetition}: a restore value was lost"


def test_threads_pruning_different_layers_of_one_model() -> None:
    """One thread per layer, one model: each layer gets exactly its own mask."""
    names = ["0.weight", "2.weight", "4.weight"]
    for repetition in range(REPETITIONS):
        net = model()
        errors = together(
            [
                functools.partial(prunus.prune, net, "l1_unstructured", amount=0.5, include=name)
                for name in names
            ]
        )
        assert not errors, errors
        masks = prunus.masks(net)
        assert sorted(masks) == names, repetition
        for name in names:
            assert int((~masks[name]).sum()) == masks[name].numel() // 2, (repetition, name)


REGISTRY_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    import prunus
    from prunus import Registry

    THREADS = {threads}
    failures = []

    def first_use(registry):
        barrier = threading.Barrier(THREADS)

        def run(index):
            barrier.wait()
            try:
                if index % 2:
                    registry.get("l1_unstructured", amount=0.5)
                else:
                    assert "l1_global" in registry.names(), registry.names()
                    registry.schedule("cubic", final_sparsity=0.5, end=10)
            except BaseException as error:
                failures.append(f"{{type(error).__name__}}: {{error}}")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    first_use(prunus.registry)  # the process-wide registry, used for the first time here
    for _ in range({fresh}):
        first_use(Registry())  # a fresh registry: the same first-use path
    print(len(failures))
    for failure in failures[:5]:
        print(failure)
    sys.exit(1 if failures else 0)
    """
)


def test_registry_first_use_from_several_threads_in_fresh_processes() -> None:
    """The first use of the registry from several threads at once: no thread sees a half-loaded registry.

    Each process uses the global registry for the first time from all its threads at once, then does the same
    with fresh registries (the same loading path): one process per 50 repetitions, ``REPETITIONS`` first uses
    in all.
    """
    processes = max(1, REPETITIONS // 50)
    fresh = REPETITIONS // processes - 1
    env = {**os.environ, "PRUNUS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    for _ in range(processes):
        done = subprocess.run(
            [sys.executable, "-c", REGISTRY_SCRIPT.format(threads=8, fresh=fresh)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def first_use(registry: prunus.Registry, kind: str) -> object:
    if kind == "names":
        return len(registry.names())
    if kind == "get":
        return registry.get("l1_structured", amount=0.5, dim=0).name
    return registry.hooks is not None


@pytest.mark.parametrize("kind", ["names", "get", "hooks"])
def test_first_use_of_a_fresh_registry_from_threads(kind: str) -> None:
    """In this process too: every thread finds every built-in strategy on a fresh registry's first use."""
    for _ in range(max(REPETITIONS // 5, 1)):
        registry = prunus.Registry()
        seen: list[object] = []
        errors = together([lambda r=registry, out=seen: out.append(first_use(r, kind))] * THREADS)
        assert not errors, errors
        assert len(set(map(str, seen))) == 1 and len(seen) == THREADS, seen
