"""Hardware profiles: detection of this machine, declared targets, and no CUDA initialisation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from support import write_probe

import prunus
from prunus import CpuInfo, GpuInfo, HardwareProfile
from prunus.errors import ConfigError
from prunus.hardware.detection import resolve_hardware
from prunus.hardware.probing import CACHE_ENV

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")


pytestmark = pytest.mark.usefixtures("probe_cache")


@no_cuda
def test_detects_this_cpu():
    profile = prunus.detect_hardware()
    assert profile.kind == "cpu" and profile.detected and profile.gpu is None
    cpu = profile.cpu
    assert cpu is not None
    assert cpu.logical_cpus == os.cpu_count()
    assert cpu.threads == torch.get_num_threads()
    assert cpu.arch
    assert cpu.capability == torch.backends.cpu.get_cpu_capability()
    assert profile.sparse_crossover is None  # nothing probed in this cache dir
    assert not profile.supports_semi_structured
    assert profile.alignment in (4, 8, 16)
    assert "detected" in profile.describe()


def test_detection_reads_the_probe_cache():
    write_probe(0.87)
    profile = prunus.detect_hardware(cuda=False)
    assert profile.sparse_crossover == pytest.approx(0.87)
    assert "prunus.probe()" in profile.crossover_source and "2026-01-02" in profile.crossover_source
    assert prunus.detect_hardware(cuda=False, probe_cache=False).sparse_crossover is None


def test_a_probe_that_never_found_sparse_faster_reads_as_crossover_one():
    write_probe(None)
    assert prunus.detect_hardware(cuda=False).sparse_crossover == 1.0


def test_importing_and_detecting_does_not_initialise_cuda(tmp_path):
    code = """
import torch
import prunus
from torch import nn
assert not torch.cuda.is_initialized(), "import"
profile = prunus.detect_hardware()
model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
selection = prunus.select(model, sparsity=0.5)
prunus.analyze(model, torch.randn(2, 8))
prunus.prune(model, "auto", sparsity=0.5)
print(profile.kind, torch.cuda.is_initialized())
"""
    env = {**os.environ, CACHE_ENV: str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    if not torch.cuda.is_available():
        assert out == ["cpu", "False"]


@pytest.mark.parametrize(
    ("name", "kind"), [("cpu", "cpu"), ("gpu", "gpu"), ("sparse_accelerator", "sparse_accelerator")]
)
def test_declared_names(name, kind):
    profile = resolve_hardware(name)
    assert profile.kind == kind and not profile.detected
    assert profile.sparse_crossover is None
    assert not profile.supports_semi_structured  # a generic GPU: compute capability unknown


def test_unknown_names_and_bad_profiles_are_config_errors():
    with pytest.raises(ConfigError, match="auto, cpu, gpu, sparse_accelerator"):
        resolve_hardware("tpu")
    with pytest.raises(ConfigError, match="kind"):
        resolve_hardware({"kind": "abacus"})
    with pytest.raises(ConfigError, match="sparse_crossover"):
        resolve_hardware({"kind": "cpu", "sparse_crossover": 1.5})
    with pytest.raises(ConfigError, match="not int"):
        resolve_hardware(3)  # type: ignore[arg-type]


def test_declaring_a_gpu_by_compute_capability():
    ampere = HardwareProfile.declare("gpu", compute_capability=(8, 0), name="A100")
    assert ampere.supports_semi_structured and ampere.gpu == GpuInfo(
        name="A100", compute_capability=(8, 0)
    )
    turing = HardwareProfile.declare("gpu", compute_capability=(7, 5))
    assert not turing.supports_semi_structured
    assert HardwareProfile.declare("gpu", semi_structured=True).supports_semi_structured
    assert not HardwareProfile.declare("cpu", semi_structured=False).supports_semi_structured
    as_dict = resolve_hardware({"kind": "gpu", "gpu": {"compute_capability": [9, 0]}})
    assert as_dict.supports_semi_structured
    with pytest.raises(ConfigError):
        HardwareProfile.declare("gpu", channel_multiple=0)


@pytest.mark.parametrize(
    ("cpu", "lanes"),
    [
        (CpuInfo(capability="AVX512"), 16),
        (CpuInfo(capability="AVX2"), 8),
        (CpuInfo(capability="DEFAULT", features=("avx512f",)), 16),
        (CpuInfo(capability="SVE256"), 8),
        (CpuInfo(capability="DEFAULT"), 4),
    ],
)
def test_cpu_vector_width_sets_the_alignment(cpu, lanes):
    assert cpu.vector_lanes == lanes
    assert HardwareProfile(kind="cpu", cpu=cpu).alignment == lanes


def test_alignment_defaults_and_override():
    assert HardwareProfile(kind="gpu").alignment == 8
    assert HardwareProfile(kind="sparse_accelerator").alignment == 1
    assert HardwareProfile(kind="gpu", channel_multiple=16).alignment == 16


def test_profiles_round_trip_through_json():
    profile = prunus.detect_hardware(cuda=False)
    again = HardwareProfile.model_validate(json.loads(profile.model_dump_json()))
    assert again == profile
    assert resolve_hardware(profile) is profile


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_detects_the_cuda_device():
    profile = prunus.detect_hardware()
    assert profile.kind == "gpu" and profile.gpu is not None
    assert profile.gpu.compute_capability == torch.cuda.get_device_capability()
    assert profile.gpu.memory_bytes and profile.gpu.memory_bytes > 0
    assert profile.supports_semi_structured == (torch.cuda.get_device_capability()[0] >= 8)
    assert prunus.detect_hardware(cuda=False).kind == "cpu"
