"""The device probe: crossover arithmetic, the cache, and a small real measurement."""

from __future__ import annotations

import json

import pytest
import torch

import prunus
from prunus.errors import ConfigError, PrunusWarning
from prunus.hardware.probing import (
    CACHE_ENV,
    ProbeResult,
    crossover_for,
    crossover_of,
    load_probe,
    probe_cache_dir,
    probe_cache_path,
    time_call,
    time_interleaved,
)

pytestmark = pytest.mark.usefixtures("probe_cache")


@pytest.mark.parametrize(
    ("sparsities", "speedups", "expected"),
    [
        ([0.5, 0.9], [0.5, 1.5], 0.7),  # interpolated to where the speedup crosses 1
        ([0.5, 0.7, 0.9], [0.2, 0.6, 2.6], 0.74),
        ([0.5, 0.9], [1.2, 3.0], 0.5),  # faster already at the lowest sparsity measured
        ([0.5, 0.9], [0.5, 0.9], None),  # never faster
        ([0.9, 0.5, 0.7], [2.6, 0.2, 0.6], 0.74),  # order does not matter
        (
            [0.5, 0.7, 0.9],
            [1.1, 0.8, 1.4],
            0.7 + 0.2 * 0.2 / 0.6,
        ),  # faster from the last crossing on
        ([0.5, 0.7, 0.9], [0.5, 1.5, 0.9], None),  # slower again at the densest: no crossover
        ([], [], None),
    ],
)
def test_crossover_of(sparsities, speedups, expected):
    result = crossover_of(sparsities, speedups)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    assert probe_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if probe_cache_dir().parent == tmp_path / "xdg":  # Linux and other XDG platforms
        assert probe_cache_dir() == tmp_path / "xdg" / "prunus"


def test_cache_key_names_the_device_torch_and_threads():
    path = probe_cache_path("cpu", threads=3)
    assert path.name.startswith("probe-cpu-") and path.name.endswith("-3t.json")
    assert torch.__version__.split("+")[0] in path.name


def test_a_small_probe_measures_caches_and_loads_back():
    assert load_probe() is None
    result = prunus.probe(shapes=[(64, 64)], batches=[1, 4], sparsities=[0.5, 0.99], repeats=2)
    assert result.device == "cpu"
    assert result.threads == torch.get_num_threads()
    assert [p.config for p in result.points] == ["64x64@1"] * 2 + ["64x64@4"] * 2
    assert all(p.layout == "csr" and p.dense_s > 0 and p.sparse_s > 0 for p in result.points)
    assert set(result.crossovers) == {"64x64@1", "64x64@4"}
    assert result.semi_structured_speedup is None
    assert probe_cache_path().exists()
    assert load_probe() == result
    text = str(result)
    assert "crossover" in text and "64x64@4" in text
    json.loads(probe_cache_path().read_text())  # plain JSON


def test_probe_without_saving_leaves_no_file():
    prunus.probe(shapes=[(32, 32)], batches=[2], sparsities=[0.9], repeats=1, save=False)
    assert load_probe() is None


def test_an_unreadable_cache_is_ignored_with_a_warning():
    path = probe_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.warns(PrunusWarning, match="run prunus.probe"):
        assert load_probe() is None


def test_the_overall_crossover_is_the_highest_and_none_if_any_shape_never_wins(monkeypatch):
    import prunus.hardware.probing as module

    speeds = {1: {0.5: 0.5, 0.9: 1.5}, 2: {0.5: 0.8, 0.9: 2.0}}
    calls = iter([(1.0, 1.0 / speeds[b][s]) for b in (1, 2) for s in (0.5, 0.9)])
    monkeypatch.setattr(module, "time_interleaved", lambda fns, **kw: list(next(calls)))
    result = prunus.probe(shapes=[(8, 8)], batches=[1, 2], sparsities=[0.5, 0.9], save=False)
    assert result.crossovers["8x8@1"] == pytest.approx(0.7)
    assert result.crossovers["8x8@2"] == pytest.approx(0.5 + 0.4 * 0.2 / 1.2)
    assert result.crossover == pytest.approx(0.7)
    assert result.points[0].speedup == pytest.approx(0.5)

    calls = iter([(1.0, 2.0), (1.0, 2.0), (1.0, 2.0), (1.0, 0.5)])
    result = prunus.probe(shapes=[(8, 8)], batches=[1, 2], sparsities=[0.5, 0.9], save=False)
    assert result.crossovers["8x8@1"] is None and result.crossover is None


def test_bad_probe_arguments():
    with pytest.raises(ConfigError, match="sparsities"):
        prunus.probe(sparsities=[0.5, 1.0], save=False)
    with pytest.raises(ConfigError, match="'cpu' or 'cuda'"):
        prunus.probe("meta", save=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            prunus.probe("cuda", save=False)


def test_timers_return_medians_in_seconds():
    calls = []
    assert time_call(lambda: calls.append(1), repeats=3, warmup=1) >= 0
    assert len(calls) == 4
    order = []
    times = time_interleaved(
        [lambda: order.append("a"), lambda: order.append("b")], repeats=2, warmup=0
    )
    assert len(times) == 2 and order == ["a", "b", "a", "b"]


def test_probe_results_round_trip_through_json():
    result = ProbeResult(
        device="cpu",
        device_name="x",
        key="k",
        torch_version="2",
        threads=1,
        created="2026-01-01T00:00:00+00:00",
        repeats=1,
        points=[],
        crossovers={"8x8@1": None},
        crossover=None,
    )
    assert ProbeResult.model_validate_json(result.model_dump_json()) == result


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probe_on_cuda_measures_csr_and_two_four():
    result = prunus.probe(
        "cuda", shapes=[(1024, 1024)], batches=[256], sparsities=[0.5, 0.99], repeats=3
    )
    assert result.device.startswith("cuda")
    assert any(p.layout == "csr" for p in result.points)
    if torch.cuda.get_device_capability()[0] >= 8:
        assert result.semi_structured_speedup is not None
    assert load_probe("cuda") == result
    profile = prunus.detect_hardware()
    assert profile.kind == "gpu"
    assert profile.semi_structured_speedup == result.semi_structured_speedup


def test_crossover_for_takes_the_closest_shape_and_its_worst_batch():
    crossovers = {
        "512x512@1": None,
        "512x512@32": 0.7,
        "1024x1024@1": 0.9,
        "1024x1024@32": 0.6,
        "2048x2048@1": 0.8,
        "bad key": 0.1,
    }
    assert crossover_for(crossovers, 1024, 1024) == 0.9
    assert crossover_for(crossovers, 4096, 1024) == 0.8  # 4M entries: closest to 2048x2048
    assert crossover_for(crossovers, 300, 700) == 1.0  # closest is 512x512, never faster at batch 1
    assert crossover_for(crossovers, 10, 10) == 1.0
    assert crossover_for({}, 8, 8) is None
