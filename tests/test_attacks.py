"""The public API under attack: Hypothesis-generated bad inputs, one oracle.

Every case is something a caller could get wrong or a file that could be damaged: arguments of the wrong type,
out-of-range and non-finite values, NaN and infinite weights, masks of the wrong shape, dtype or device, patterns
that match nothing, malformed configs, corrupt and truncated files, and directories that refuse writes (read-only,
full: simulated by failing the write at the system call). The oracle is the same for all of them:

* the call raises a typed prunus error (:class:`prunus.PrunusError`, of the expected kind), never a raw builtin;
* its message is clear: it names what was wrong and stays short (a huge value is quoted cut);
* the model is exactly as it was (every parameter's bytes and identity, buffers, hooks, flags: ``snapshot``)
  and every file in the directory is byte-identical to before (no partial or temporary file either).

Each test draws from a fixed, derandomized example budget and checks it met its count of distinct cases
(``@attack(cases=...)``); together they are over 400. The whole module takes seconds.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import inspect
import io
import json
import math
import os
import shutil
import string
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import prunus
from prunus import (
    ConfigError,
    FileError,
    FileFormatError,
    MaskError,
    PluginError,
    PrunusError,
    PrunusWarning,
    ShrinkError,
    StateError,
    TargetError,
    UnknownScheduleError,
    UnknownStrategyError,
    WeightError,
)
from prunus.cli import run
from prunus.hardware.probing import CACHE_ENV, probe_cache_path

Snapshot = Callable[[nn.Module], Any]

MESSAGE_LIMIT = 2000
"""A message longer than this is not a clear message."""


def attack(
    strategy: st.SearchStrategy[Any], *, cases: int
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Run the decorated ``check(case, **fixtures)`` on cases drawn from ``strategy``.

    A fixed, derandomized budget of examples is drawn (twice ``cases``); the test then checks it saw at least
    ``cases`` distinct ones. pytest gives the check the fixtures it names after ``case``.
    """

    def decorate(check: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(check)
        def test(**fixtures: Any) -> None:
            seen: set[str] = set()

            @settings(
                max_examples=cases * 2,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(strategy)
            def run_case(case: Any) -> None:
                seen.add(repr(case))
                check(case, **fixtures)

            run_case()
            assert len(seen) >= cases, f"only {len(seen)} distinct cases of {cases}"

        # pytest sees the fixtures only (the case is not one).
        params = list(inspect.signature(check).parameters.values())[1:]
        test.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return test

    return decorate


def tree(directory: Path | None) -> dict[str, bytes]:
    if directory is None:
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def refused(
    call: Callable[[], Any],
    *,
    error: type[PrunusError] | tuple[type[PrunusError], ...] = PrunusError,
    names: tuple[str, ...] = (),
    model: nn.Module | None = None,
    snapshot: Snapshot | None = None,
    directory: Path | None = None,
    type_error: bool | None = None,
) -> PrunusError:
    """The oracle: a typed prunus error with a clear message; the model and every file exactly as before."""
    before = snapshot(model) if model is not None and snapshot is not None else None
    files = tree(directory)
    try:
        call()
    except PrunusError as caught:
        problem = caught
    except Exception as raw:  # the one thing that must never happen
        raise AssertionError(f"raw {type(raw).__name__}: {raw}") from raw
    else:
        raise AssertionError("the bad input was accepted")
    message = str(problem)
    assert isinstance(problem, error), f"{type(problem).__name__}: {message}"
    assert message.strip() and len(message) <= MESSAGE_LIMIT, len(message)
    assert not names or any(name in message for name in names), (names, message)
    if type_error is not None:
        assert isinstance(problem, TypeError) == type_error, repr(problem)
    if before is not None:
        assert model is not None and snapshot is not None
        assert snapshot(model) == before, "the model changed"
    assert tree(directory) == files, "a file changed"
    return problem


@pytest.fixture
def mlp(make_model: Callable[..., nn.Module]) -> nn.Module:
    return make_model("mlp")


NOT_MODULES = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(torch.ones(2)),
    st.just(print),
    st.just(nn.Linear),  # the class, not an instance
)

MODEL_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "prune": lambda m: prunus.prune(m, "l1_unstructured", amount=0.5),
    "remove": prunus.remove,
    "restore": prunus.restore,
    "masks": prunus.masks,
    "is_pruned": prunus.is_pruned,
    "select_targets": prunus.select_targets,
    "accuracy": lambda m: prunus.accuracy(m, (torch.ones(2, 16), torch.zeros(2).long())),
    "latency_ms": lambda m: prunus.latency_ms(m, torch.ones(2, 16)),
    "evaluate": prunus.evaluate,
    "count_parameters": prunus.count_parameters,
    "summary": prunus.summary,
    "analyze": prunus.analyze,
    "to_sparse": prunus.to_sparse,
    "to_dense": prunus.to_dense,
    "shrink": lambda m: prunus.shrink(m, torch.ones(2, 16)),
    "prune_channels": lambda m: prunus.prune_channels(
        m, torch.ones(2, 16), "l1_structured", amount=0.5
    ),
    "shrink_state": prunus.shrink_state,
    "load_shrunk": lambda m: prunus.load_shrunk(m, {}, prunus.shrink_state(nn.Linear(2, 2))),
    "quantize": prunus.quantize,
    "quantized_weights": prunus.quantized_weights,
    "model_size": prunus.model_size,
    "GradualPruner": lambda m: prunus.GradualPruner(
        m, "l1_unstructured", final_sparsity=0.5, end=4
    ),
    "fine_tune": lambda m: prunus.fine_tune(m, (torch.ones(2, 16), torch.zeros(2).long())),
    "sensitivity": lambda m: prunus.sensitivity(m, data=(torch.ones(2, 16), torch.zeros(2).long())),
    "compare_quantized": lambda m: prunus.compare_quantized(m, m),
    "select": lambda m: prunus.select(m, hardware="cpu"),
}


@attack(st.tuples(st.sampled_from(sorted(MODEL_FUNCTIONS)), NOT_MODULES), cases=60)
def test_anything_but_a_module_as_the_model(case: Any) -> None:
    name, value = case
    if (
        name == "select"
    ):  # the selection reads the model through plugins: it refuses a non-module there
        refused(lambda: MODEL_FUNCTIONS[name](value))
        return
    refused(lambda: MODEL_FUNCTIONS[name](value), names=("torch.nn.Module",), type_error=True)


AMOUNT_STRATEGIES = [
    "l1_unstructured",
    "random_structured",
    "l1_global",
    "global_unstructured",
    "l1_block",
]

BAD_AMOUNTS = st.one_of(
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=True),
    st.floats(min_value=1 + 1e-9, allow_nan=False, allow_infinity=True),
    st.just(math.nan),
    st.integers(max_value=-1),
    st.integers(min_value=10_000),  # a count larger than any parameter of the MLP
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.lists(st.floats(0, 1), max_size=2),
    st.complex_numbers(max_magnitude=1, allow_nan=False),
    st.just(torch.tensor(0.5)),
)


@attack(st.tuples(st.sampled_from(AMOUNT_STRATEGIES), BAD_AMOUNTS), cases=50)
def test_bad_amounts(case: Any, mlp: nn.Module, snapshot: Snapshot) -> None:
    strategy, amount = case
    refused(
        lambda: prunus.prune(mlp, strategy, amount=amount),
        error=ConfigError,
        names=("amount",),
        model=mlp,
        snapshot=snapshot,
    )


IDENTIFIERS = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)

BAD_OPTIONS = st.one_of(
    # an option the strategy does not have
    st.tuples(
        st.sampled_from(AMOUNT_STRATEGIES),
        IDENTIFIERS.filter(
            lambda n: (
                n
                not in {
                    "amount",
                    "dim",
                    "seed",
                    "block",
                    "min_keep",
                    "criterion",
                    "criterion_options",
                    "n",
                }
            )
        ),
        st.integers(),
    ),
    # dims out of range for 2-D weights
    st.tuples(
        st.just("l1_structured"),
        st.just("dim"),
        st.one_of(st.integers(2, 10**6), st.integers(max_value=-3)),
    ),
    st.tuples(
        st.just("random_structured"),
        st.just("seed"),
        st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3)),
    ),
    st.tuples(
        st.just("ln_structured"),
        st.just("n"),
        st.one_of(st.just(math.nan), st.text(max_size=3), st.none()),
    ),
    st.tuples(
        st.just("l1_global"),
        st.just("min_keep"),
        st.one_of(st.integers(max_value=-1), st.floats(), st.booleans()),
    ),
    st.tuples(
        st.just("l1_block"),
        st.just("block"),
        st.one_of(
            st.tuples(st.integers(max_value=0), st.integers(1, 4)),
            st.just("1x4"),
            st.just((1, 2, 3)),
        ),
    ),
    st.tuples(
        st.just("global_unstructured"),
        st.just("criterion"),
        IDENTIFIERS.filter(lambda n: n not in {"l1", "ln", "random"}),
    ),
)


@attack(BAD_OPTIONS, cases=40)
def test_bad_options(case: Any, mlp: nn.Module, snapshot: Snapshot) -> None:
    strategy, option, value = case
    options: dict[str, Any] = {"amount": 0.5, option: value}
    if strategy == "ln_structured" and option != "n":
        options["n"] = 2
    refused(
        lambda: prunus.prune(mlp, strategy, **options),
        error=(ConfigError, UnknownStrategyError, prunus.UnknownCriterionError),
        model=mlp,
        snapshot=snapshot,
    )


PATTERNS = st.one_of(
    st.text(min_size=1, max_size=10).map(lambda t: "zz" + t),  # matches no parameter
    st.lists(st.text(min_size=1, max_size=6).map(lambda t: "q" + t), min_size=1, max_size=3),
    st.just([]),
    st.lists(st.one_of(st.integers(), st.none(), st.binary(max_size=2)), min_size=1, max_size=2),
    st.integers(),
    st.binary(min_size=1, max_size=4),
    st.dictionaries(
        st.text(max_size=2).map(lambda t: "zz" + t), st.text(max_size=2), min_size=1, max_size=2
    ),
)


@attack(st.tuples(st.sampled_from(["include", "exclude", "amounts"]), PATTERNS), cases=40)
def test_patterns_that_match_nothing_or_are_not_patterns(
    case: Any, mlp: nn.Module, snapshot: Snapshot
) -> None:
    where, pattern = case
    if where == "amounts":
        keys = pattern if isinstance(pattern, list) else [pattern]
        call = functools.partial(
            prunus.prune,
            mlp,
            "l1_unstructured",
            amounts={k: 0.5 for k in keys if isinstance(k, str)} or pattern,
        )
    else:
        call = functools.partial(
            prunus.prune, mlp, "l1_unstructured", amount=0.5, **{where: pattern}
        )
    refused(call, error=(TargetError, ConfigError), model=mlp, snapshot=snapshot)


WEIGHT_FAULTS = st.tuples(
    st.sampled_from(["fc1.weight", "fc2.weight", "fc3.weight"]),
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 15)), min_size=1, max_size=4, unique=True),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.sampled_from(
        ["l1_unstructured", "l1_structured", "l1_global", "ln_structured", "l1_block", "l1_nm"]
    ),
)


@attack(WEIGHT_FAULTS, cases=40)
def test_nan_and_infinite_weights(
    case: Any, make_model: Callable[..., nn.Module], snapshot: Snapshot
) -> None:
    name, positions, value, strategy = case
    model = make_model("mlp")
    with torch.no_grad():
        for row, col in positions:
            model.get_parameter(name)[row, col] = value
    options = {"n": 2} if strategy == "ln_structured" else {}
    if strategy != "l1_nm":
        options["amount"] = 0.5
    refused(
        lambda: prunus.prune(model, strategy, **options),
        error=WeightError,
        names=(name,),
        model=model,
        snapshot=snapshot,
    )


MASKS = st.one_of(
    st.tuples(st.integers(1, 40), st.integers(1, 40))
    .filter(lambda s: s != (32, 16))
    .map(lambda s: torch.ones(s, dtype=torch.bool)),
    st.sampled_from([torch.float32, torch.int64, torch.uint8, torch.float16]).map(
        lambda d: torch.ones(32, 16, dtype=d)
    ),
    st.just(torch.ones(32, 16, dtype=torch.bool, device="meta")),
    st.just(torch.ones(32 * 16, dtype=torch.bool)),
    st.text(min_size=1, max_size=6).map(lambda name: {"name": "zz" + name}),
    st.just(None),
    st.lists(st.booleans(), min_size=1, max_size=3),
)


@attack(MASKS, cases=30)
def test_custom_masks_of_the_wrong_shape_dtype_or_device(
    case: Any, mlp: nn.Module, snapshot: Snapshot
) -> None:
    masks = (
        {case["name"]: torch.ones(32, 16, dtype=torch.bool)}
        if isinstance(case, dict)
        else {"fc1.weight": case}
    )
    refused(
        lambda: prunus.prune(mlp, "custom_mask", masks=masks),
        error=(MaskError, ConfigError, PluginError),
        model=mlp,
        snapshot=snapshot,
    )


KEEP_MASK_CASES = st.one_of(
    st.tuples(
        st.just(torch.ones(6)), st.one_of(st.integers(max_value=-1), st.integers(min_value=7))
    ),
    st.tuples(
        st.just(torch.ones(6)),
        st.one_of(st.floats(), st.text(max_size=2), st.none(), st.booleans()),
    ),
    st.tuples(
        st.sampled_from([torch.ones(6, dtype=torch.bool), torch.ones(6, dtype=torch.complex64)]),
        st.just(1),
    ),
    st.tuples(
        st.one_of(st.none(), st.lists(st.floats(), max_size=3), st.text(max_size=3)), st.just(1)
    ),
)


@attack(KEEP_MASK_CASES, cases=25)
def test_keep_mask_arguments(case: Any) -> None:
    scores, k = case
    refused(lambda: prunus.keep_mask(scores, k), error=ConfigError)


@attack(
    st.one_of(
        st.integers(1, 12).filter(lambda n: n != 6).map(lambda n: torch.ones(n, dtype=torch.bool)),
        st.sampled_from([torch.float32, torch.int8]).map(lambda d: torch.ones(6, dtype=d)),
        st.just(torch.ones(2, 3, dtype=torch.bool)),
    ),
    cases=10,
)
def test_keep_mask_eligible_of_the_wrong_shape_or_dtype(case: Any) -> None:
    refused(lambda: prunus.keep_mask(torch.arange(6.0), 1, case), error=MaskError)


YAML_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)

BAD_CONFIGS = st.one_of(
    # unknown keys
    st.dictionaries(IDENTIFIERS.map(lambda k: "x_" + k), YAML_VALUES, min_size=1, max_size=3).map(
        lambda d: {"strategy": "l1_unstructured", **d}
    ),
    # known keys with values of the wrong kind
    st.tuples(
        st.sampled_from(
            ["strategy", "amount", "include", "schedule", "fine_tune", "quantize", "amounts"]
        ),
        st.one_of(
            st.lists(st.integers(), min_size=1, max_size=2),
            st.text(min_size=1, max_size=3).map(lambda t: "t" + t),
        ),
    ).map(
        lambda kv: (
            {"strategy": "l1_unstructured", kv[0]: kv[1]}
            if kv[0] != "strategy"
            else {"strategy": [kv[1]]}  # a strategy's name is any str: a list is the wrong kind
        )
    ),
    # not a mapping at the top
    st.one_of(
        st.lists(YAML_VALUES, min_size=1, max_size=3),
        st.integers(),
        st.text(min_size=1, max_size=5).map(lambda t: "t" + t),
    ),
)


@attack(st.tuples(st.sampled_from([".yaml", ".json"]), BAD_CONFIGS), cases=40)
def test_malformed_configs(case: Any, tmp_path: Path) -> None:
    suffix, content = case
    path = tmp_path / f"config{suffix}"
    path.write_text(json.dumps(content))  # JSON is YAML too
    refused(
        lambda: prunus.load_config(path, prunus.PruneConfig), error=ConfigError, directory=tmp_path
    )


@attack(
    st.one_of(
        st.binary(min_size=1, max_size=30).map(lambda b: b"\xff" + b),
        st.text(alphabet="{[:,&*!|>", min_size=1, max_size=12).map(str.encode),
        # deeper than Python recurses
        st.sampled_from([1100, 3000]).map(lambda d: ("[" * d).encode()),
        st.just(b"x: " + b"y" * (1 << 20)),
    ),
    cases=25,
)
def test_undecodable_unparsable_and_oversized_configs(case: Any, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(case)
    refused(
        lambda: prunus.load_config(path, prunus.PruneConfig), error=ConfigError, directory=tmp_path
    )


def _compressed(directory: Path) -> bytes:
    torch.manual_seed(0)
    state = {"w": torch.randn(16, 16) * (torch.rand(16, 16) > 0.7), "b": torch.randn(16)}
    path = directory / "good.pt"
    prunus.save_compressed(state, path)
    data = path.read_bytes()
    path.unlink()
    return data


@attack(
    st.one_of(
        st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
        st.tuples(
            st.just("flip"),
            st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=6),
        ),
        st.tuples(st.just("random"), st.binary(max_size=200)),
    ),
    cases=40,
)
def test_corrupt_and_truncated_compressed_checkpoints(case: Any, tmp_path: Path) -> None:
    good = _compressed(tmp_path)
    kind, how = case
    if kind == "truncate":
        data = good[: int(len(good) * how)]
    elif kind == "flip":
        damaged = bytearray(good)
        for where, mask in how:
            damaged[int(where * (len(good) - 1))] ^= mask
        data = bytes(damaged)
    else:
        data = how
    path = tmp_path / "bad.pt"
    path.write_bytes(data)
    try:
        prunus.load_compressed(path)
    except (FileFormatError, FileError) as error:
        assert str(path) in str(error)
        return
    except Exception as raw:
        raise AssertionError(f"raw {type(raw).__name__}: {raw}") from raw
    # A flip inside a tensor's raw bytes gives other values, consistent ones: no format can tell that (torch does
    # not check the zip's checksums). Loading then succeeds; what matters is that nothing raw escaped.
    assert kind == "flip"


FAILURES = st.sampled_from(["open", "write", "fsync", "replace"])
PATH_WRITERS = {"save_compressed", "save_pruned"}
"""Writers that hand prunus.files a path to write to (safetensors), not a file object."""
ERRNOS = st.sampled_from([errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EIO, errno.EDQUOT])


@contextlib.contextmanager
def failing(where: str, code: int, after: int) -> Iterator[None]:
    """Make the write prunus is about to do fail at ``where`` (after ``after`` bytes, for ``write``)."""
    patch = pytest.MonkeyPatch()
    error = OSError(code, os.strerror(code))
    if where == "open":
        real_open = os.open

        def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & os.O_CREAT:
                raise error
            return real_open(path, flags, *args, **kwargs)

        patch.setattr(os, "open", refuse)
    elif where == "write":
        real_fdopen = os.fdopen

        class Full(io.RawIOBase):
            def __init__(self, file: Any) -> None:
                self.file, self.written = file, 0

            def write(self, data: Any) -> int:
                if self.written + len(data) > after:
                    raise error
                self.written += len(data)
                return int(self.file.write(data))

            def fileno(self) -> int:
                return int(self.file.fileno())

            def flush(self) -> None:
                self.file.flush()

            def close(self) -> None:
                self.file.close()

            def writable(self) -> bool:
                return True

        patch.setattr(
            os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k))
        )
    elif where == "fsync":
        patch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(error))
    else:
        patch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(error))
    try:
        yield
    finally:
        patch.undo()


@attack(
    st.tuples(
        st.sampled_from(["save_compressed", "save_pruned", "model_size", "plot", "probe"]),
        FAILURES,
        ERRNOS,
        st.integers(
            0, 64
        ),  # every file written here is longer: a write failing "after" bytes does fail
        st.booleans(),
    ),
    cases=40,
)
def test_writes_into_read_only_or_full_directories(
    case: Any, tmp_path: Path, mlp: nn.Module, snapshot: Snapshot
) -> None:
    writer, where, code, after, previous = case
    if where == "write" and writer in PATH_WRITERS:
        where = (
            "open"  # safetensors writes through a path, not through a file object prunus hands it
        )
    directory = tmp_path / f"{writer}-{where}-{code}-{after}-{previous}"
    shutil.rmtree(directory, ignore_errors=True)  # Hypothesis may replay a case
    directory.mkdir()
    os.environ[CACHE_ENV] = str(directory)
    try:
        target = {
            "save_compressed": directory / "m.safetensors",
            "save_pruned": directory / "p.safetensors",
            "model_size": directory / "dense.pt",
            "plot": directory / "p.png",
            "probe": probe_cache_path("cpu"),
        }[writer]
        if previous:
            target.write_bytes(b"the previous file, which must survive")
        calls: dict[str, Callable[[], Any]] = {
            "save_compressed": lambda: prunus.save_compressed(mlp, target),
            "save_pruned": lambda: prunus.save_pruned(pruned, target),
            "model_size": lambda: prunus.model_size(mlp, directory),
            "plot": lambda: prunus.plots.plot_layer_sparsity({"fc1.weight": 0.5}, target),
            "probe": lambda: prunus.probe(
                shapes=[(8, 8)], batches=[1], sparsities=[0.5], repeats=1
            ),
        }
        pruned = copy.deepcopy(mlp)
        prunus.prune(pruned, "l1_unstructured", amount=0.5)
        with failing(where, code, after):
            refused(
                calls[writer],
                error=FileError,
                names=(os.strerror(code), target.name),
                model=mlp,
                snapshot=snapshot,
                directory=directory,
            )
    finally:
        del os.environ[CACHE_ENV]


STATE_DAMAGE = st.one_of(
    # the pruner's own state (JSON, in the manifest)
    st.tuples(
        st.just("drop"),
        st.sampled_from(
            ["strategy", "history", "targets", "schedule", "restorable", "strategy_options"]
        ),
    ),
    st.tuples(
        st.just("strategy"), st.sampled_from(["l1_structured", "random_unstructured", "l1_global"])
    ),
    st.tuples(st.just("end"), st.integers(0, 100).filter(lambda e: e != 8)),
    st.tuples(
        st.just("history"), st.one_of(st.integers(), st.text(max_size=3), st.just([{"x": 1}]))
    ),
    st.tuples(st.just("format"), st.text(max_size=8).map(lambda t: "prunus.gradual/9" + t)),
    st.tuples(st.just("extra"), IDENTIFIERS),
    # the masks and restore data beside it
    st.tuples(st.just("mask bytes"), st.integers(0, 100).filter(lambda n: n != 64)),
    st.tuples(st.just("values"), st.integers(0, 600).filter(lambda n: n != 256)),
    st.tuples(
        st.just("values dtype"), st.sampled_from([torch.float64, torch.int64, torch.float16])
    ),
    st.tuples(st.just("manifest"), st.text(max_size=10)),
    st.tuples(
        st.just("manifest key"),
        st.sampled_from(["format", "parameters", "weights", "architecture"]),
    ),
    st.tuples(
        st.just("not a state"),
        st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2)),
    ),
)


@attack(STATE_DAMAGE, cases=40)
def test_damaged_pruning_states(
    case: Any, make_model: Callable[..., nn.Module], snapshot: Snapshot
) -> None:
    """A training checkpoint's pruning state (prunus.pruning_state) with its pruner's state, damaged."""

    def pruner(model: nn.Module) -> prunus.GradualPruner:
        return prunus.GradualPruner(model, "l1_unstructured", final_sparsity=0.5, end=8)

    source = pruner(make_model("mlp"))
    source.step(8)
    state: Any = prunus.pruning_state(source.model, pruner=source)
    manifest = json.loads(state["manifest"])
    own = manifest["pruner"]
    kind, value = case
    if kind == "drop":
        del own[value]
    elif kind == "strategy":
        own["strategy"] = value
    elif kind == "end":
        own["schedule"]["options"]["end"] = value
    elif kind in ("history", "format"):
        own[kind] = value
    elif kind == "extra":
        own["x_" + value] = 1
    elif kind == "mask bytes":
        state["tensors"]["mask.fc1.weight"] = torch.zeros(value, dtype=torch.uint8)
    elif kind == "values":
        state["tensors"]["pruned.fc1.weight"] = torch.zeros(value)
    elif kind == "values dtype":
        state["tensors"]["pruned.fc1.weight"] = state["tensors"]["pruned.fc1.weight"].to(value)
    elif kind == "manifest key":
        del manifest[value]
    if kind == "manifest":
        state["manifest"] = value
    elif kind == "not a state":
        state = value
    else:
        state["manifest"] = json.dumps(manifest)
    model = make_model("mlp")
    target = pruner(model)
    refused(
        lambda: prunus.load_pruning_state(model, state, pruner=target),
        error=(ConfigError, StateError),
        model=model,
        snapshot=snapshot,
    )
    assert target.history == []


RECORD_DAMAGE = st.one_of(
    st.tuples(
        st.just("attribute"),
        st.sampled_from(["_parameters", "_buffers", "_modules", "training", "forward", "x"]),
        YAML_VALUES,
    ),
    st.tuples(
        st.just("kind"),
        st.sampled_from(["in_features", "out_features"]),
        st.one_of(st.text(max_size=3), st.floats(), st.lists(st.integers(), max_size=2)),
    ),
    st.tuples(
        st.just("shape"),
        st.sampled_from(["weight", "bias"]),
        st.lists(st.integers(max_value=-1), min_size=1, max_size=2),
    ),
    st.tuples(st.just("type"), st.sampled_from(["Conv2d", "ReLU", "", "Linear2"]), st.none()),
    st.tuples(st.just("format"), st.text(max_size=8), st.none()),
    st.tuples(st.just("state"), st.sampled_from(["missing", "extra", "shape"]), st.none()),
)


@attack(RECORD_DAMAGE, cases=30)
def test_damaged_shrink_records(
    case: Any, make_model: Callable[..., nn.Module], snapshot: Snapshot
) -> None:
    source = make_model("mlp")
    record = json.loads(json.dumps(prunus.shrink_state(source)))
    state = dict(source.state_dict())
    kind, key, value = case
    layer = record["modules"]["fc1"]
    if kind == "attribute" or kind == "kind":
        layer["attributes"][key] = value
    elif kind == "shape":
        layer["parameters"][key] = value
    elif kind == "type":
        layer["type"] = key
    elif kind == "format":
        record["format"] = "prunus.shrink/1" + key + "!"
    elif key == "missing":
        del state["fc1.weight"]
    elif key == "extra":
        state["fc9.weight"] = torch.ones(1)
    else:
        state["fc1.weight"] = torch.ones(3, 3)
    model = make_model("mlp")
    refused(
        lambda: prunus.load_shrunk(model, state, record),
        error=ShrinkError,
        model=model,
        snapshot=snapshot,
    )


HARDWARE = st.one_of(
    st.text(min_size=1, max_size=10).filter(
        lambda t: t not in ("auto", "cpu", "gpu", "sparse_accelerator")
    ),
    st.dictionaries(IDENTIFIERS.map(lambda k: "x_" + k), st.integers(), min_size=1, max_size=2).map(
        lambda d: {"kind": "cpu", **d}
    ),
    st.fixed_dictionaries(
        {"kind": st.text(max_size=5).filter(lambda t: t not in ("cpu", "gpu", "unknown"))}
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("cpu"),
            "sparse_crossover": st.one_of(
                st.floats(min_value=1.01), st.floats(max_value=-0.01), st.just(math.nan)
            ),
        }
    ),
    st.integers(),
    st.lists(st.integers(), max_size=2),
)


@attack(
    st.one_of(
        st.tuples(st.just("hardware"), HARDWARE),
        st.tuples(
            st.just("objective"),
            st.text(max_size=8).filter(lambda t: t not in ("latency", "memory", "accuracy")),
        ),
        st.tuples(
            st.just("sparsity"),
            st.one_of(
                st.floats(min_value=1.0001),
                st.floats(max_value=-0.0001),
                st.just(math.nan),
                st.text(max_size=3),
                st.none(),
            ),
        ),
    ),
    cases=30,
)
def test_bad_selection_requests(case: Any, mlp: nn.Module, snapshot: Snapshot) -> None:
    key, value = case
    refused(
        lambda: prunus.select(mlp, **{key: value}),
        error=(ConfigError, PluginError),
        model=mlp,
        snapshot=snapshot,
    )
    refused(
        lambda: prunus.prune(mlp, "auto", **{"sparsity": 0.5, key: value}),
        model=mlp,
        snapshot=snapshot,
    )


SCHEDULE_OPTIONS = st.one_of(
    st.fixed_dictionaries(
        {
            "final_sparsity": st.one_of(
                st.floats(min_value=1.0001), st.floats(max_value=-0.0001), st.just(math.nan)
            ),
            "end": st.just(10),
        }
    ),
    st.fixed_dictionaries({"final_sparsity": st.just(0.5), "end": st.integers(max_value=-1)}),
    st.fixed_dictionaries(
        {"final_sparsity": st.just(0.5), "end": st.just(10), "every": st.integers(max_value=0)}
    ),
    st.fixed_dictionaries(
        {"final_sparsity": st.just(0.5), "start": st.integers(11, 100), "end": st.just(10)}
    ),
    st.fixed_dictionaries(
        {"final_sparsity": st.just(0.5), "end": st.one_of(st.floats(), st.text(max_size=3))}
    ),
    st.dictionaries(IDENTIFIERS.map(lambda k: "x_" + k), st.integers(), min_size=1, max_size=2).map(
        lambda d: {"final_sparsity": 0.5, "end": 10, **d}
    ),
)


@attack(
    st.one_of(
        st.tuples(st.sampled_from(["cubic", "linear"]), SCHEDULE_OPTIONS),
        st.tuples(IDENTIFIERS.map(lambda n: "zz" + n), st.just({})),
    ),
    cases=25,
)
def test_bad_schedules(case: Any, mlp: nn.Module, snapshot: Snapshot) -> None:
    name, options = case
    refused(
        lambda: prunus.GradualPruner(mlp, "l1_unstructured", schedule=name, **options),
        error=(ConfigError, UnknownScheduleError),
        model=mlp,
        snapshot=snapshot,
    )


CLI_MISTAKES = st.one_of(
    st.tuples(
        st.just("--amount"),
        st.one_of(
            st.text(min_size=1, max_size=6).map(lambda t: "a" + t),
            st.floats(min_value=1.01, allow_nan=False, allow_infinity=False).map(str),
            st.integers(min_value=10_000).map(str),
        ),
    ),
    st.tuples(
        st.just("--input-shape"),
        st.one_of(
            st.text(string.ascii_letters, min_size=1, max_size=5),
            st.lists(st.integers(1, 7).filter(lambda n: n != 8), min_size=1, max_size=3).map(
                lambda s: ",".join(map(str, [*s, 3]))
            ),
        ),
    ),
    st.tuples(st.just("--option"), IDENTIFIERS.map(lambda k: "x_" + k + "=1")),
    st.tuples(
        st.just("--include"),
        st.text(string.ascii_letters, min_size=1, max_size=6).map(lambda t: "zz" + t),
    ),
    st.tuples(st.just("--strategy"), IDENTIFIERS.map(lambda n: "zz" + n)),
    st.tuples(st.just("--threads"), st.integers(max_value=0).map(str)),
)


@attack(CLI_MISTAKES, cases=20)
def test_command_line_mistakes_change_no_file(
    case: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flag, value = case
    workdir = tmp_path / "cli"
    if not workdir.exists():
        workdir.mkdir()
        (workdir / "net.py").write_text(
            "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))\n"
        )
        torch.manual_seed(0)
        torch.save(
            nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)).state_dict(),
            workdir / "dense.pt",
        )
    before = tree(workdir)
    args = [
        "prune",
        str(workdir / "dense.pt"),
        "--factory",
        f"{workdir / 'net.py'}:make",
        "--strategy",
        "l1_unstructured",
    ]
    if flag != "--amount":
        args += ["--amount", "0.5"]
    args += [flag, value, "-o", str(workdir / "out.pt")]
    capsys.readouterr()
    code = run(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(err) < 1200, err
    assert tree(workdir) == before


@attack(
    st.one_of(
        st.binary(min_size=1, max_size=40),
        st.tuples(
            st.sampled_from(["crossover", "threads", "repeats", "points", "crossovers"]),
            YAML_VALUES,
        ),
    ),
    cases=20,
)
def test_corrupt_probe_caches_are_ignored_with_a_warning(case: Any, tmp_path: Path) -> None:
    """The probe cache's own oracle, as its docstring promises: a typed PrunusWarning naming the file, no error,
    and the cache ignored (the profile says nothing was measured)."""
    os.environ[CACHE_ENV] = str(tmp_path)
    try:
        path = probe_cache_path("cpu")
        if isinstance(case, bytes):
            path.write_bytes(b"\x80" + case)
        else:
            key, value = case
            payload = {
                "device": "cpu",
                "device_name": "x",
                "key": "k",
                "torch_version": "2",
                "threads": 1,
                "created": "2026-01-01",
                "repeats": 1,
                "points": [],
                "crossovers": {},
                "crossover": 0.5,
            }
            payload[key] = [{"bad": value}] if key == "points" else {"bad": [value]}
            path.write_text(json.dumps(payload))
        before = tree(tmp_path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert prunus.load_probe() is None
        assert [w.category for w in caught] == [PrunusWarning] and str(path) in str(
            caught[0].message
        )
        assert tree(tmp_path) == before
    finally:
        del os.environ[CACHE_ENV]


@attack(
    st.tuples(
        st.sampled_from(["get", "info", "schedule", "criterion", "unregister", "provider"]),
        st.one_of(st.text(max_size=12).map(lambda t: "zz" + t), st.integers(), st.none()),
    ),
    cases=20,
)
def test_unknown_names(case: Any, private_registry: prunus.Registry) -> None:
    verb, name = case
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: prunus.registry.get(name),
        "info": lambda: prunus.registry.info(name),
        "schedule": lambda: prunus.registry.schedule(name),
        "criterion": lambda: prunus.registry.criterion(name),
        "unregister": lambda: private_registry.unregister(name),
        "provider": lambda: prunus.registry.provider("criterion", name),
    }
    refused(
        calls[verb],
        error=(
            prunus.UnknownStrategyError,
            prunus.UnknownScheduleError,
            prunus.UnknownCriterionError,
        ),
    )
