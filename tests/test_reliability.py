"""Nothing lost, nothing changed behind the user's back: one regression test per class of defect, each built from
the reproduction that found it.

1. threads (tests/test_threads.py runs them with real threads, many times; one quick case here);
2. "read-only" helpers that changed the model (training flags, BatchNorm statistics, the global RNG);
3. files written non-atomically;
4. loaders that trusted their input (probe cache, compressed checkpoints, shrink records, configs);
5. the command line (tests/test_cli_hardening.py);
6. plugin failures blamed on the wrong plugin;
7. mistakes silently accepted or layers silently skipped;
8. long runs: pickling, checkpoints, schedule lookups (the kill-and-resume run is tests/test_resume.py).
"""

from __future__ import annotations

import copy
import errno
import io
import json
import math
import os
import pickle
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations
from torch.nn.utils import prune as torch_prune

import prunus
from prunus import (
    ConfigError,
    ConfigTypeError,
    FileError,
    FileFormatError,
    PluginError,
    PrunusError,
    PrunusWarning,
    Registry,
    RollbackError,
    ShrinkError,
    Target,
    WeightError,
)
from prunus.hardware.probing import CACHE_ENV, ProbeResult, probe_cache_path
from prunus.schedules import SteppedPoints

Snapshot = Callable[[nn.Module], Any]


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes: compare two to prove nothing was written."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every write prunus makes fails as on a full disk (at the sync, once the content is written)."""

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    yield


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No new file can be created (a read-only directory, simulated: the tests may run as root)."""
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    yield


class FrozenBN(nn.Module):
    """A training model with a BatchNorm frozen in eval mode, and Dropout."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def frozen_bn() -> FrozenBN:
    model = FrozenBN()
    with torch.no_grad():
        model(torch.randn(16, 6))  # non-trivial statistics
    model.train()
    model.bn.eval()  # frozen: the user fine-tunes the rest
    return model


# -- 1. threads -------------------------------------------------------------------------------------------


def test_two_threads_pruning_one_model_keep_restore_exact() -> None:
    """The reproduction: two threads pruning the same model; 6 of 40 trials lost restore values."""
    for trial in range(40):
        torch.manual_seed(trial)
        model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 8))
        before = [p.detach().clone() for p in model.parameters()]
        barrier = threading.Barrier(2)

        def work(model: nn.Module = model, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            prunus.prune(model, "l1_unstructured", amount=0.4)

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert int((~prunus.masks(model)["0.weight"]).sum()) == 410 + round(0.4 * (1024 - 410))
        prunus.restore(model)
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# -- 2. measuring helpers leave the model as it was ---------------------------------------------------------


def state(model: nn.Module) -> tuple[Any, ...]:
    flags = [(name, m.training) for name, m in model.named_modules()]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    return flags, buffers


def same_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return (
        a[0] == b[0]
        and a[1].keys() == b[1].keys()
        and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    )


_G = torch.Generator().manual_seed(0)
X, Y = torch.randn(20, 6, generator=_G), torch.randint(0, 3, (20,), generator=_G)
BATCH = torch.randn(4, 6, generator=_G)

MEASURES: dict[str, Callable[[nn.Module], Any]] = {
    # Inputs are made beforehand: the test checks that prunus itself draws nothing from the global RNG.
    "accuracy": lambda m: prunus.accuracy(m, (X, Y)),
    "evaluate": lambda m: prunus.evaluate(m, data=(X, Y), example_input=BATCH),
    "compare": lambda m: prunus.compare(
        {"a": m, "b": copy.deepcopy(m)}, example_input=BATCH, latency_runs=2
    ),
    "latency_ms": lambda m: prunus.latency_ms(m, BATCH, runs=2),
    "sensitivity": lambda m: prunus.sensitivity(m, data=(X, Y), amounts=[0.5]),
    "compare_quantized": lambda m: prunus.compare_quantized(
        m, copy.deepcopy(m), example_input=BATCH, latency_runs=2
    ),
    "analyze": lambda m: prunus.analyze(m, BATCH, measure=True, hardware="cpu", repeats=2),
    # A user's evaluator that draws random numbers: the draws are undone too.
    "evaluator": lambda m: prunus.evaluate(
        m, evaluator=lambda net: float(net(torch.randn(8, 6)).detach().sum())
    ),
}


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_measuring_keeps_each_flag_buffers_and_the_global_rng(name: str) -> None:
    model = frozen_bn()
    before = state(model)
    rng = torch.get_rng_state()
    MEASURES[name](model)
    assert same_state(state(model), before), (
        "a training flag or a buffer (BatchNorm statistics) changed"
    )
    assert model.training and not model.bn.training  # the frozen BatchNorm stays frozen
    assert torch.equal(torch.get_rng_state(), rng), "the global random stream moved"


def test_analyze_measure_on_a_training_model_leaves_batchnorm_statistics() -> None:
    """The reproduction: analyze(measure=True) ran forwards in training mode and moved the statistics."""
    model = frozen_bn()
    model.bn.train()  # all in training mode this time
    mean = model.bn.running_mean.clone()
    prunus.analyze(model, torch.randn(4, 6), measure=True, hardware="cpu", repeats=2)
    assert torch.equal(model.bn.running_mean, mean) and model.bn.training


def test_a_buffer_a_module_updates_even_in_eval_mode_is_put_back() -> None:
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x: Tensor) -> Tensor:
            self.calls += 1  # counts forwards, training or not
            self.register_buffer("extra", torch.ones(1))  # and adds a buffer
            return self.fc(x)

    model = Counter()
    prunus.latency_ms(model, torch.randn(2, 6), runs=3)
    assert float(model.calls) == 0 and "extra" not in model._buffers


def test_fine_tune_gives_each_submodule_its_own_flag_back() -> None:
    model = frozen_bn()
    model.eval()
    model.fc1.train()
    flags = [m.training for m in model.modules()]
    prunus.fine_tune(model, (torch.randn(8, 6), torch.randint(0, 3, (8,))), epochs=1, batch_size=4)
    assert [m.training for m in model.modules()] == flags


def test_an_evaluator_drawing_random_numbers_does_not_shift_training() -> None:
    def run(evaluate: Any) -> Tensor:
        torch.manual_seed(0)
        model = FrozenBN()
        prunus.fine_tune(
            model,
            (torch.randn(16, 6), torch.randint(0, 3, (16,))),
            epochs=2,
            batch_size=4,
            evaluate=evaluate,
        )
        return model.fc2.weight.detach().clone()

    quiet = run(lambda m: 0.0)
    noisy = run(lambda m: float(torch.rand(5).sum()))
    assert torch.equal(quiet, noisy)


# -- 3. files ------------------------------------------------------------------------------------------------


def test_a_failed_save_compressed_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = nn.Linear(8, 8)
    path = tmp_path / "model.pt"
    prunus.save_compressed(model, path)
    good = tree(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(
            os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space"))
        )
        with pytest.raises(FileError, match=r"model\.pt.*No space.*unchanged"):
            prunus.save_compressed(nn.Linear(8, 8), path)
    assert tree(tmp_path) == good  # the old file, bit for bit, and no temporary file
    prunus.load_compressed(path)


def test_a_full_disk_midway_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reproduction: a write failing halfway left a partial file and a raw RuntimeError."""
    import safetensors.torch

    def half(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"\x08\x00\x00\x00 half a header")
        raise RuntimeError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(safetensors.torch, "save_file", half)
    with pytest.raises(FileError, match="No space left on device"):
        prunus.save_compressed(nn.Linear(4, 4), tmp_path / "m.safetensors")
    assert tree(tmp_path) == {}


def test_a_read_only_directory_is_a_file_error(tmp_path: Path, read_only: None) -> None:
    with pytest.raises(FileError, match=r"cannot write .*m\.pt: Permission denied"):
        prunus.save_compressed(nn.Linear(4, 4), tmp_path / "m.pt")
    assert tree(tmp_path) == {}


def test_a_failed_probe_save_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_disk: None
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(FileError, match="probe-cpu"):
        prunus.probe(shapes=[(8, 8)], batches=[1], sparsities=[0.5], repeats=1)
    assert tree(tmp_path) == {}


def test_a_failed_plot_keeps_the_previous_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.png"
    prunus.plots.plot_layer_sparsity({"a": 0.5}, path)
    good = tree(tmp_path)
    monkeypatch.setattr(
        os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
    )
    with pytest.raises(FileError, match=r"s\.png"):
        prunus.plots.plot_layer_sparsity({"a": 0.9}, path)
    assert tree(tmp_path) == good


def test_model_size_writes_atomically_in_the_directory_given(
    tmp_path: Path, full_disk: None
) -> None:
    with pytest.raises(FileError, match=r"dense\.pt"):
        prunus.model_size(nn.Linear(4, 4), tmp_path)
    assert tree(tmp_path) == {}


# -- 4. loaders -------------------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path


def measured_probe() -> ProbeResult:
    return prunus.probe(
        shapes=[(16, 16)], batches=[1], sparsities=[0.5, 0.9], repeats=1, save=False
    )


def test_a_non_utf8_probe_cache_warns_instead_of_crashing(cache: Path) -> None:
    """The reproduction: a non-UTF-8 cache crashed select, prune(..., "auto") and detect_hardware."""
    path = probe_cache_path("cpu")
    path.write_bytes(b"\xff\xfe not json \x80")
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 4))
    with pytest.warns(PrunusWarning, match="not UTF-8"):
        assert prunus.detect_hardware(cuda=False).sparse_crossover is None
    with pytest.warns(PrunusWarning, match="probe cache"):
        prunus.select(model, sparsity=0.5)
    with pytest.warns(PrunusWarning, match="probe cache"):
        prunus.prune(model, "auto", sparsity=0.5)


@pytest.mark.parametrize("forged", [-5, 7.5, math.nan, math.inf, "half", None])
def test_a_forged_crossover_is_refused(cache: Path, forged: Any) -> None:
    """The reproduction: a crossover of -5, 7.5 or NaN was accepted and changed the chosen strategy."""
    result = measured_probe()
    payload = json.loads(result.model_dump_json())
    payload["crossover"] = forged
    if forged is None:  # in range but not what the measurements say (they give a number or None)
        payload["crossovers"] = {k: 0.3 for k in payload["crossovers"]}
    probe_cache_path("cpu").write_text(json.dumps(payload, allow_nan=True))
    with pytest.warns(PrunusWarning, match="ignoring the prunus probe cache"):
        profile = prunus.detect_hardware(cuda=False)
    assert profile.sparse_crossover is None


def test_a_consistent_probe_cache_is_read(cache: Path) -> None:
    result = measured_probe()
    probe_cache_path("cpu").write_text(result.model_dump_json())
    assert prunus.load_probe() == result


def compressed_file(tmp_path: Path) -> Path:
    """A file of prunus.save_compressed (safetensors, the sparse-bitmask layout)."""
    state = {"fc.weight": torch.tensor([[0.0, 1.0] * 8] * 4), "fc.bias": torch.ones(3)}
    path = tmp_path / "c.safetensors"
    prunus.save_compressed(state, path)
    return path


def resaved(tmp_path: Path, change: Callable[[dict[str, Any], dict[str, str]], None]) -> Path:
    """The compressed file with its tensors or metadata changed, written back as valid safetensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = compressed_file(tmp_path)
    with safe_open(str(path), "pt") as opened:
        metadata = dict(opened.metadata())
    tensors = dict(load_file(str(path)))
    change(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)
    return path


def legacy_file(tmp_path: Path, change: Callable[[dict[str, Any]], None] = lambda c: None) -> Path:
    """A ``prunus-compressed-v1`` file, what earlier prunus versions wrote with torch.save, maybe changed."""
    bits = torch.tensor([0b01010101, 0b01010101], dtype=torch.uint8)
    content: dict[str, Any] = {
        "format": "prunus-compressed-v1",
        "state": {
            "w": {
                "__prunus__": "sparse",
                "shape": [16],
                "bits": bits,
                "values": torch.ones(8),
                "fill": 0,
            },
            "b": torch.ones(3),
        },
        "metadata": None,
    }
    change(content)
    path = tmp_path / "legacy.pt"
    torch.save(content, path)
    return path


def _layout(change: Callable[[Any], Any]) -> Callable[[dict[str, Any], dict[str, str]], None]:
    def apply(tensors: dict[str, Any], metadata: dict[str, str]) -> None:
        metadata["prunus.layout"] = json.dumps(change(json.loads(metadata["prunus.layout"])))

    return apply


LOAD_COMPRESSED_CASES: dict[str, tuple[Callable[[Path], Path], type[Exception], str]] = {
    "truncated": (
        lambda d: (p := compressed_file(d)).write_bytes(p.read_bytes()[:100]) and p,
        FileFormatError,
        "c.safetensors",
    ),
    "truncated after the header": (
        lambda d: (
            (p := compressed_file(d)).write_bytes(
                p.read_bytes()[: 8 + int.from_bytes(p.read_bytes()[:8], "little") + 4]
            )
            and p
        ),
        FileFormatError,
        "damaged",
    ),
    "random bytes": (
        lambda d: (d / "r.pt").write_bytes(b"\x00" * 8 + os.urandom(300)) and d / "r.pt",
        FileFormatError,
        "not a prunus compressed checkpoint",
    ),
    "empty": (
        lambda d: (d / "e.pt").write_bytes(b"") or d / "e.pt",
        FileFormatError,
        "not a prunus",
    ),
    "a plain state dict": (
        lambda d: torch.save({"w": torch.ones(2)}, d / "s.pt") or d / "s.pt",
        FileFormatError,
        "not a prunus compressed checkpoint",
    ),
    "one value for two bits": (
        lambda d: resaved(d, lambda t, m: t.update({"fc.compressed": torch.ones(1)})),
        FileFormatError,
        "marks 32 values, the file holds 1",
    ),
    "a bitmask of the wrong shape": (
        lambda d: resaved(
            d, lambda t, m: t.update({"fc.bitmask": torch.zeros(9, 1, dtype=torch.uint8)})
        ),
        FileFormatError,
        "does not fit the shape",
    ),
    "a missing tensor": (
        lambda d: resaved(d, lambda t, m: t.pop("fc.bias")),
        FileFormatError,
        "no tensor 'fc.bias'",
    ),
    "an unknown layout": (
        lambda d: resaved(d, _layout(lambda old: {**old, "entries": [["fc.bias", {"zip": 1}]]})),
        FileFormatError,
        "unknown layout",
    ),
    "a layout that is not a list": (
        lambda d: resaved(d, _layout(lambda old: {**old, "entries": 7})),
        FileFormatError,
        "damaged",
    ),
    "a newer format": (
        lambda d: resaved(d, lambda t, m: m.update({"prunus.format": "prunus.compressed/9"})),
        FileFormatError,
        "upgrade prunus",
    ),
    "a pickled function (legacy)": (
        lambda d: torch.save(print, d / "f.pt") or d / "f.pt",
        FileFormatError,
        "torch.load failed",
    ),
    "one value for eight bits (legacy)": (
        lambda d: legacy_file(d, lambda c: c["state"]["w"].update(values=torch.ones(1))),
        FileFormatError,
        "1 values for 8 set bits",
    ),
    "bits of the wrong length (legacy)": (
        lambda d: legacy_file(
            d, lambda c: c["state"]["w"].update(bits=torch.zeros(9, dtype=torch.uint8))
        ),
        FileFormatError,
        "bits has 9 bytes",
    ),
    "negative shape (legacy)": (
        lambda d: legacy_file(d, lambda c: c["state"]["w"].update(shape=[-16])),
        FileFormatError,
        "not a list of ints >= 0",
    ),
    "a NaN fill (legacy)": (
        lambda d: legacy_file(d, lambda c: c["state"]["w"].update(fill=math.nan)),
        FileFormatError,
        "not a finite number",
    ),
    "an unknown entry kind (legacy)": (
        lambda d: legacy_file(d, lambda c: c["state"]["w"].update({"__prunus__": "zip"})),
        FileFormatError,
        "unknown entry kind",
    ),
    "extra keys (legacy)": (
        lambda d: legacy_file(d, lambda c: c.update(extra=1)),
        FileFormatError,
        "has the keys",
    ),
    "missing": (lambda d: d / "missing.pt", FileError, "No such file"),
    "a directory": (lambda d: d, FileError, "directory"),
}


def test_a_legacy_compressed_file_still_loads(tmp_path: Path) -> None:
    state = prunus.load_compressed(legacy_file(tmp_path))
    assert torch.equal(state["w"], torch.tensor([0.0, 1.0] * 8)) and torch.equal(
        state["b"], torch.ones(3)
    )


@pytest.mark.parametrize("case", sorted(LOAD_COMPRESSED_CASES))
def test_load_compressed_checks_everything_it_reads(tmp_path: Path, case: str) -> None:
    """The reproduction: about ten kinds of raw exception, and one value broadcast over two mask bits."""
    make, error, fragment = LOAD_COMPRESSED_CASES[case]
    path = make(tmp_path)
    with pytest.raises(error, match=fragment) as caught:
        prunus.load_compressed(path)
    assert str(path) in str(caught.value)


def shrunk_pair() -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    return model, json.loads(json.dumps(prunus.shrink_state(model)))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: r["modules"]["0"]["attributes"].update(_parameters={}), "_parameters"),
        (lambda r: r["modules"]["0"]["attributes"].update(training=False), "training"),
        (lambda r: r["modules"]["0"]["attributes"].update(new_thing=1), "new_thing"),
        (lambda r: r["modules"]["0"]["attributes"].update(in_features="six"), "in_features"),
        (lambda r: r["modules"]["0"]["parameters"].update(weight=[-1, 6]), "greater than or equal"),
        (lambda r: r["modules"]["0"]["parameters"].update(ghost=[2]), "ghost"),
        (lambda r: r["modules"]["0"].update(type="Conv2d"), "Conv2d"),
        (lambda r: r["modules"]["0"].update(code="print(1)"), "code"),
        (lambda r: r.update(modules=[]), "modules"),
        (lambda r: r["modules"].update({"9": {"type": "Linear"}}), "'9'"),
    ],
)
def test_load_shrunk_sets_only_what_shrink_state_writes(
    change: Callable[[dict[str, Any]], None], fragment: str, snapshot: Snapshot
) -> None:
    """The reproduction: load_shrunk set any attribute a record named, private ones included."""
    source, record = shrunk_pair()
    change(record)
    target = shrunk_pair()[0]
    before = snapshot(target)
    with pytest.raises(ShrinkError, match=fragment):
        prunus.load_shrunk(target, source.state_dict(), record)
    assert snapshot(target) == before


def test_load_shrunk_rolls_back_values_when_loading_fails(snapshot: Snapshot) -> None:
    class Fussy(nn.Linear):
        def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("refuses at the last moment")

    source = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    record = prunus.shrink_state(source)
    target = nn.Sequential(nn.Linear(4, 4), Fussy(4, 4))
    record["modules"]["1"]["type"] = "Fussy"
    before = snapshot(target)
    with pytest.raises(ShrinkError, match="refuses at the last moment"):
        prunus.load_shrunk(target, source.state_dict(), record)
    assert snapshot(target) == before  # the first layer's weights were copied, then put back


def test_load_shrunk_still_rebuilds_a_shrunken_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    prunus.prune_channels(model, torch.randn(4, 6), "l1_structured", amount=0.5)
    prunus.shrink(model, torch.randn(4, 6))
    record = json.loads(json.dumps(prunus.shrink_state(model)))
    fresh = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    prunus.load_shrunk(fresh, model.state_dict(), record)
    x = torch.randn(5, 6)
    assert torch.equal(fresh(x), model(x)) and fresh[0].out_features == 4


BOMB = textwrap.dedent(
    """\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    strategy: [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    """
)


@pytest.mark.parametrize(
    ("content", "error", "fragment"),
    [
        (BOMB.encode(), FileFormatError, "alias"),
        (b"a: &a [*a]\n", FileFormatError, "contains itself"),
        (b"strategy: l1_unstructured\nnote: \xff\xfe\n", FileFormatError, "not UTF-8"),
        (b"- 1\n- 2\n", FileFormatError, "must hold a mapping"),
        (b"strategy: [unclosed\n", FileFormatError, "not valid YAML"),
        (b"strategy: l1_unstructured\nschedule: [1, 2]\n", ConfigError, "schedule"),
        (b"strategy: l1_unstructured\nfine_tune: 3\n", ConfigError, "fine_tune"),
        (b"strategy: l1_unstructured\namount: .nan\n", ConfigError, "amount"),
    ],
)
def test_configs_are_checked_as_they_are_read(
    tmp_path: Path, content: bytes, error: type[Exception], fragment: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    started = time.perf_counter()
    with pytest.raises(error, match=fragment) as caught:
        prunus.load_config(path, prunus.PruneConfig)
        prunus.registry.get(
            "l1_unstructured", amount=prunus.load_config(path, prunus.PruneConfig).amount
        )
    assert len(str(caught.value)) < 2000  # the bomb's 17.5 MB message is gone
    assert time.perf_counter() - started < 10


def test_a_huge_value_is_quoted_short() -> None:
    with pytest.raises(ConfigError) as caught:
        prunus.registry.get("l1_unstructured", amount=list(range(10**6)))
    assert len(str(caught.value)) < 600


# -- 6. plugin failures name the plugin and its distribution ----------------------------------------------


ACME = textwrap.dedent(
    """
    import torch
    import prunus

    class Nan(prunus.Criterion):
        name = "acme_nan"

        def score(self, target, context):
            return torch.full_like(target.tensor, float("nan"))

    class Writes(prunus.Criterion):
        name = "acme_writes"

        def score(self, target, context):
            target.tensor.mul_(2)  # writes into the weights while scoring
            return target.tensor.abs()

    @prunus.hookimpl
    def prunus_register_criteria(register):
        register(Nan)
        register(Writes)

    @prunus.hookimpl
    def prunus_score(criterion, target, context):
        if criterion.name == "random":
            raise ValueError("acme cannot score random")
        return None

    @prunus.hookimpl
    def prunus_select_strategy(model, hardware, objective, sparsity):
        return {"strategy": "l1_unstructured"}  # not a Selection
    """
)


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry with ``acme``, a plugin installed as the distribution ``acme-prune 2.0`` (entry point)."""
    (tmp_path / "acme_plugin.py").write_text(ACME)
    info = tmp_path / "acme_prune-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-prune\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text("[prunus]\nacme = acme_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("PRUNUS_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    registry = Registry()
    assert registry.provider("criterion", "acme_nan").distribution == "acme-prune"
    return registry


@pytest.fixture
def lenet(make_model: Callable[..., nn.Module], snapshot: Snapshot) -> Iterator[nn.Module]:
    model = make_model("lenet")
    before = snapshot(model)
    yield model
    assert snapshot(model) == before


def test_nan_scores_name_the_plugin_and_distribution(acme: Registry, lenet: nn.Module) -> None:
    with pytest.raises(PluginError, match=r"acme_nan.*acme \(acme-prune 2\.0\).*NaN"):
        prunus.prune(lenet, "acme_nan_unstructured", amount=0.5, registry=acme)


def test_a_raising_third_party_score_hook_is_not_blamed_on_a_builtin(
    acme: Registry, lenet: nn.Module
) -> None:
    with pytest.raises(PluginError) as caught:
        prunus.prune(lenet, "random_unstructured", amount=0.5, registry=acme)
    message = str(caught.value)
    assert "prunus_score hook of plugin acme (acme-prune 2.0)" in message
    assert "acme cannot score random" in message and "prunus.criteria" not in message


def test_writing_into_the_weights_while_scoring_is_caught(acme: Registry, make_model: Any) -> None:
    model = make_model("lenet")
    with pytest.raises(PluginError, match=r"acme_writes.*acme-prune.*wrote into the weights"):
        prunus.prune(model, "acme_writes_unstructured", amount=0.5, registry=acme)
    assert not prunus.is_pruned(model)


def test_a_select_hook_returning_a_dict_is_a_plugin_error(acme: Registry, lenet: nn.Module) -> None:
    with pytest.raises(
        PluginError,
        match=r"prunus_select_strategy hook of plugin acme \(acme-prune 2\.0\) returned dict",
    ):
        prunus.select(lenet, hardware="cpu", registry=acme)


def test_nan_in_the_model_own_weights_is_a_weight_error(lenet: nn.Module) -> None:
    broken = copy.deepcopy(lenet)
    with torch.no_grad():
        broken.fc1.weight[0, 0] = math.nan
        broken.fc2.weight[0, 0] = math.inf
    for name in ("l1_unstructured", "l1_structured", "l1_global"):
        model = copy.deepcopy(broken)
        with pytest.raises(WeightError, match=r"'fc1.weight' holds 1 NaN") as caught:
            prunus.prune(model, name, amount=0.5)
        assert not isinstance(caught.value, PluginError)
        assert not prunus.is_pruned(model)


def test_inf_weights_are_a_weight_error_too(make_model: Any) -> None:
    model = make_model("mlp")
    with torch.no_grad():
        model.fc2.weight[1, 1] = -math.inf
    with pytest.raises(WeightError, match="1 infinite"):
        prunus.prune(model, "l1_unstructured", amount=0.5)


def test_an_undo_that_raises_does_not_stop_the_rollback(
    private_registry: Registry, make_model: Any, snapshot: Snapshot
) -> None:
    model = make_model("mlp")
    before = snapshot(model)
    from prunus.masking import attach_mask

    class Plugin:
        @prunus.hookimpl
        def prunus_apply_mask(self, target: Target, mask: Tensor, restorable: bool) -> Any:
            if target.name == "fc3.weight":
                raise RuntimeError("no room for the last one")
            undo = attach_mask(target.module, target.param_name, mask, restorable=restorable)
            if target.name != "fc1.weight":
                return undo

            def failing_undo() -> None:
                undo()  # the real undo runs, then the plugin's own cleanup fails
                raise OSError("cleanup failed")

            return failing_undo

    private_registry.register_plugin(Plugin(), name="flaky")
    with pytest.raises(RollbackError, match=r"no room for the last one.*cleanup failed"):
        prunus.prune(model, "l1_unstructured", amount=0.5, registry=private_registry)
    assert snapshot(model) == before  # fc2's undo ran after fc1's... and fc1's own undo ran too


# -- 7. silently accepted or skipped -------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 0, 1, "yes", [True]])
def test_restorable_must_be_a_bool(value: Any, lenet: nn.Module) -> None:
    """The reproduction: restorable=None silently dropped the restore data."""
    with pytest.raises(ConfigTypeError, match="restorable") as caught:
        prunus.prune(lenet, "l1_unstructured", amount=0.5, restorable=value)
    assert isinstance(caught.value, TypeError)


def test_parametrized_and_torch_pruned_layers_are_named_in_a_warning() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 2))
    parametrizations.weight_norm(model[0])
    torch_prune.l1_unstructured(model[1], "weight", amount=0.5)
    with pytest.warns(
        PrunusWarning, match=r"leave out 2 .*'0'.*weight_norm's original1.*'1'.*weight_orig"
    ):
        report = prunus.prune(model, "l1_unstructured", amount=0.5)
    assert [p.name for p in report.parameters] == ["2.weight", "3.weight"]


def test_pruning_through_the_original_of_a_parametrized_weight() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 2))
    parametrizations.weight_norm(model[0])
    torch_prune.l1_unstructured(model[1], "weight", amount=0.25)
    before = [p.detach().clone() for p in model.parameters()]
    prunus.prune(
        model,
        "l1_unstructured",
        amount=0.5,
        include=["0.parametrizations.weight.original1", "1.weight_orig"],
    )
    masks = prunus.masks(model)
    assert bool((model[0].weight[~masks["0.parametrizations.weight.original1"]] == 0).all())
    effective = (
        model[1].weight_orig * model[1].weight_mask
    )  # torch recomputes weight at the next forward
    assert int((effective == 0).sum()) >= 6  # torch's mask and prunus's compose
    prunus.restore(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_global_pruning_never_empties_a_layer_unless_asked() -> None:
    """The reproduction: a global ranking pruned every entry of a small output layer ("layer collapse")."""

    def model() -> nn.Module:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 4))
        with torch.no_grad():
            net[1].weight.mul_(1e-4)  # a layer whose weights are all small
        return net

    for name in ("l1_global", "global_unstructured"):
        report = prunus.prune(model(), name, amount=0.5)
        assert report.emptied == [] and report["1.weight"].pruned == 128 - 1
        assert report.pruned == round(0.5 * (1024 + 128))  # the count is exact all the same
        collapsed = prunus.prune(model(), name, amount=0.5, min_keep=0)
        assert collapsed.emptied == ["1.weight"] and "EMPTY" in str(collapsed)
        assert prunus.prune(model(), name, amount=0.5, min_keep=8)["1.weight"].pruned == 120


def test_min_keep_holds_across_repeated_prunes_and_yields_to_amount_one() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 2))
    with torch.no_grad():
        net[1].weight.mul_(1e-3)
    for _ in range(4):
        prunus.prune(net, "l1_global", amount=0.6, min_keep=3)
        assert int(prunus.masks(net)["1.weight"].sum()) >= 3
    assert prunus.prune(net, "l1_global", amount=1.0).emptied == ["0.weight", "1.weight"]


BAD_ARGUMENTS: dict[str, tuple[Callable[[], Any], bool]] = {
    # name: (call, whether Python or torch would raise TypeError for the same mistake)
    "prune(None)": (lambda: prunus.prune(None, "l1_unstructured", amount=0.5), True),
    "prune(strategy=5)": (lambda: prunus.prune(nn.Linear(2, 2), 5), True),
    "prune(filter_fn=3)": (
        lambda: prunus.prune(nn.Linear(2, 2), "l1_unstructured", amount=0.5, filter_fn=3),
        True,
    ),
    "prune(include=5)": (
        lambda: prunus.prune(nn.Linear(2, 2), "l1_unstructured", amount=0.5, include=5),
        True,
    ),
    "prune(amounts=[1])": (
        lambda: prunus.prune(nn.Linear(2, 2), "l1_unstructured", amounts=[1]),
        True,
    ),
    "prune(registry=1)": (
        lambda: prunus.prune(nn.Linear(2, 2), "l1_unstructured", amount=0.5, registry=1),
        True,
    ),
    "prune(amount='0.5')": (
        lambda: prunus.prune(nn.Linear(2, 2), "l1_unstructured", amount="0.5"),
        True,
    ),
    "filter_fn returning None": (
        lambda: prunus.prune(
            nn.Linear(2, 2), "l1_unstructured", amount=0.5, filter_fn=lambda m, n: None
        ),
        True,
    ),
    "remove(None)": (lambda: prunus.remove(None), True),
    "restore('x')": (lambda: prunus.restore("x"), True),
    "masks(None)": (lambda: prunus.masks(None), True),
    "is_pruned(3)": (lambda: prunus.is_pruned(3), True),
    "select(sparsity=nan)": (lambda: prunus.select(nn.Linear(2, 2), sparsity=math.nan), False),
    "select_targets(None)": (lambda: prunus.select_targets(None), True),
    "keep_mask(None)": (lambda: prunus.keep_mask(None, 1), True),
    "keep_mask(k=1.5)": (lambda: prunus.keep_mask(torch.ones(3), 1.5), True),
    "keep_mask(k=9)": (lambda: prunus.keep_mask(torch.ones(3), 9), False),
    "keep_mask(eligible shape)": (
        lambda: prunus.keep_mask(torch.ones(3), 1, torch.ones(2, dtype=torch.bool)),
        False,
    ),
    "registry.names(5)": (lambda: prunus.registry.names(5), True),
    "analyze(None)": (lambda: prunus.analyze(None), True),
    "analyze(repeats=0)": (lambda: prunus.analyze(nn.Linear(2, 2), repeats=0), False),
    "detect_hardware(cuda='x')": (lambda: prunus.detect_hardware(cuda="x"), True),
    "probe(repeats=0)": (lambda: prunus.probe(repeats=0, save=False), False),
    "probe(device=5)": (lambda: prunus.probe(5, save=False), True),
    "to_sparse(None)": (lambda: prunus.to_sparse(None), True),
    "to_dense(None)": (lambda: prunus.to_dense(None), True),
    "shrink(None)": (lambda: prunus.shrink(None, torch.randn(2, 2)), True),
    "shrink_state(None)": (lambda: prunus.shrink_state(None), True),
    "load_config(None)": (lambda: prunus.load_config(None, prunus.PruneConfig), True),
    "accuracy(None)": (lambda: prunus.accuracy(None, (torch.ones(2, 2), torch.ones(2))), True),
    "accuracy(batch_size=0)": (
        lambda: prunus.accuracy(nn.Linear(2, 2), (torch.ones(2, 2), torch.ones(2)), batch_size=0),
        False,
    ),
    "accuracy(data=5)": (lambda: prunus.accuracy(nn.Linear(2, 2), 5), True),
    "compare(None)": (lambda: prunus.compare(None), True),
    "count_parameters(None)": (lambda: prunus.count_parameters(None), True),
    "evaluate(evaluator=5)": (lambda: prunus.evaluate(nn.Linear(2, 2), evaluator=5), True),
    "latency_ms(runs=1.5)": (
        lambda: prunus.latency_ms(nn.Linear(2, 2), torch.ones(1, 2), runs=1.5),
        True,
    ),
    "latency_ms(bad input)": (lambda: prunus.latency_ms(nn.Linear(2, 2), torch.ones(1, 3)), False),
    "load_compressed(None)": (lambda: prunus.load_compressed(None), True),
    "save_compressed(5, path)": (lambda: prunus.save_compressed(5, "x.pt"), True),
    "summary(None)": (lambda: prunus.summary(None), True),
    "GradualPruner(None)": (
        lambda: prunus.GradualPruner(None, "l1_unstructured", final_sparsity=0.5, end=4),
        True,
    ),
    "GradualPruner.step('a')": (
        lambda: prunus.GradualPruner(
            nn.Linear(2, 2), "l1_unstructured", final_sparsity=0.5, end=4
        ).step("a"),
        True,
    ),
    "fine_tune(batch_size=0)": (
        lambda: prunus.fine_tune(
            nn.Linear(2, 2), (torch.ones(2, 2), torch.ones(2).long()), batch_size=0
        ),
        False,
    ),
    "fine_tune(lr=nan)": (
        lambda: prunus.fine_tune(
            nn.Linear(2, 2), (torch.ones(2, 2), torch.ones(2).long()), lr=math.nan
        ),
        False,
    ),
    "fine_tune(optimizer=5)": (
        lambda: prunus.fine_tune(
            nn.Linear(2, 2), (torch.ones(2, 2), torch.ones(2).long()), optimizer=5
        ),
        True,
    ),
    "quantize(None)": (lambda: prunus.quantize(None), True),
    "quantize(layers=5)": (lambda: prunus.quantize(nn.Linear(2, 2), layers=5), True),
    "sensitivity(amounts=5)": (
        lambda: prunus.sensitivity(
            nn.Linear(2, 2), data=(torch.ones(2, 2), torch.ones(2)), amounts=5
        ),
        True,
    ),
    "plot_weights(None, None)": (lambda: prunus.plots.plot_weights(None, None), True),
    "plot_schedule(5)": (lambda: prunus.plots.plot_schedule(5), True),
    "SparseLinear.from_linear(None)": (lambda: prunus.SparseLinear.from_linear(None), True),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_bad_arguments_raise_prunus_errors(case: str) -> None:
    """The reproduction: about 45 bad arguments raised raw builtins (AttributeError, TypeError, ...)."""
    call, type_error = BAD_ARGUMENTS[case]
    with pytest.raises(PrunusError) as caught:
        call()
    assert isinstance(caught.value, TypeError) == type_error, repr(caught.value)


# -- 8. long runs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("l1_unstructured", {"amount": 0.3}),
        ("ln_structured", {"amount": 0.5, "n": 2, "dim": 0}),
        ("random_global", {"amount": 0.4, "seed": 3, "min_keep": 2}),
        (
            "global_unstructured",
            {"amount": 0.4, "criterion": "random", "criterion_options": {"seed": 1}},
        ),
        ("l1_nm", {}),
        ("l1_block", {"amount": 0.5, "block": (1, 4)}),
        ("magnitude_threshold", {"threshold": 0.1}),
        ("custom_mask", {"masks": {"fc1.weight": torch.rand(32, 16) > 0.5}}),
    ],
)
def test_strategies_and_configs_pickle_and_deep_copy(
    name: str, options: dict[str, Any], make_model: Any
) -> None:
    """The reproduction: a configured strategy could not be pickled or deep-copied (its config class is made at
    run time and it holds the registry)."""
    strategy = prunus.registry.get(name, **options)
    copies = [pickle.loads(pickle.dumps(strategy)), copy.deepcopy(strategy)]
    config = pickle.loads(pickle.dumps(strategy.config))
    assert type(config) is type(strategy.config) and same(dict(config), dict(strategy.config))
    reference = make_model("mlp")
    prunus.prune(reference, strategy)
    expected = prunus.masks(reference)
    for other in copies:
        assert repr(other) == repr(strategy)
        model = make_model("mlp")
        prunus.prune(model, other)
        got = prunus.masks(model)
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def same(a: Any, b: Any) -> bool:
    """Equal values, tensors compared entry for entry."""
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def test_a_gradual_pruner_pickles_deep_copies_and_resumes_from_its_state(make_model: Any) -> None:
    def pruner(model: nn.Module) -> prunus.GradualPruner:
        return prunus.GradualPruner(model, "l1_global", final_sparsity=0.9, end=20, every=2)

    model = make_model("mlp")
    first = pruner(model)
    for step in range(9):
        first.step(step)
    blob = pickle.dumps(first)
    twin = copy.deepcopy(first)
    # A training checkpoint: the weights, and the pruning state (masks, restore data, the pruner's state).
    saved = torch.load(
        _roundtrip(
            {"model": model.state_dict(), "pruning": prunus.pruning_state(model, pruner=first)}
        ),
        weights_only=True,
    )
    resumed_model = make_model("mlp")
    resumed_model.load_state_dict(saved["model"])
    resumed = pruner(resumed_model)
    prunus.load_pruning_state(resumed_model, saved["pruning"], pruner=resumed)
    unpickled = pickle.loads(blob)
    for step in range(9, 25):
        runs = [first, twin, resumed, unpickled]
        for run in runs:
            run.step(step)
        masks = [prunus.masks(run.model) for run in runs]
        for other in masks[1:]:
            assert all(torch.equal(masks[0][k], other[k]) for k in masks[0]), step
    assert resumed.history == first.history
    prunus.restore(resumed_model)  # the pruned values came back through the state
    assert torch.equal(resumed_model.fc1.weight, make_model("mlp").fc1.weight)


def _roundtrip(state: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda s: s.update(strategy="l1_structured"), "strategy"),
        (lambda s: s["schedule"]["options"].update(end=99), "schedule"),
        (lambda s: s.update(targets=["fc1.weight"]), "targets"),
        (lambda s: s.update(restorable=False), "restorable"),
        (lambda s: s.update(history=[{"step": "x"}]), "history"),
        (lambda s: s.update(format="other"), "format"),
        (lambda s: s.pop("history"), "history"),
        (lambda s: s.update(masks={}), "masks"),
    ],
)
def test_a_pruner_state_that_does_not_fit_changes_nothing(
    change: Callable[[dict[str, Any]], Any], fragment: str, make_model: Any, snapshot: Snapshot
) -> None:
    """A GradualPruner's own state (the JSON part of a checkpoint) is checked field by field."""
    source = prunus.GradualPruner(make_model("mlp"), "l1_unstructured", final_sparsity=0.5, end=4)
    source.step(4)
    state = source.state_dict()
    change(state)
    model = make_model("mlp")
    target = prunus.GradualPruner(model, "l1_unstructured", final_sparsity=0.5, end=4)
    before = snapshot(model)
    with pytest.raises(ConfigError, match=fragment):
        target.load_state_dict(state)
    assert snapshot(model) == before and target.history == []


def test_schedule_lookups_are_logarithmic_with_the_points_computed_once() -> None:
    """The reproduction: 2.1 s per lookup at end=10**6 and a MemoryError building one at end=10**8."""
    schedule = prunus.registry.schedule("cubic", final_sparsity=0.9, end=10**8)
    points = schedule.checked_points()
    assert isinstance(points, SteppedPoints) and len(points) == 10**8 + 1
    assert schedule.checked_points() is points  # computed once
    calls = 0
    shape = points.value

    def counted(progress: float) -> float:
        nonlocal calls
        calls += 1
        return shape(progress)

    points.value = counted
    for step in (0, 1, 12_345_678, 99_999_999, 10**8, 10**9):
        calls = 0
        value = schedule.sparsity(step)
        assert calls <= 2 * math.ceil(math.log2(10**8)) + 2, calls
        assert value == pytest.approx(0.9 * (1 - (1 - min(step, 10**8) / 10**8) ** 3))
    assert schedule.last_step == 10**8 and 50_000_000 in schedule.steps
    pruner = prunus.GradualPruner(nn.Linear(4, 4), "l1_unstructured", schedule=schedule)
    pruner.step(10**8)
    assert pruner.pruned == round(0.9 * 16)


def test_a_plugin_schedule_that_decreases_is_caught_when_read() -> None:
    class Wobbly(prunus.Schedule):
        name = "wobbly"

        def points(self) -> Any:
            return SteppedPoints(0, 10**6, 1, lambda p: 0.9 if 0.4 < p < 0.6 else p)

    schedule = Wobbly(prunus.NoOptions())
    assert schedule.sparsity(500_000) == 0.9
    with pytest.raises(PluginError, match="decreases"):
        schedule.sparsity(600_000)
