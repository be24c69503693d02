"""prunus: a plugin-based pruning strategy registry for PyTorch.

>>> import prunus
>>> report = prunus.prune(model, "l1_unstructured", amount=0.5)   # doctest: +SKIP
>>> prunus.remove(model)                                           # doctest: +SKIP

The root of the package holds the contracts (strategies, configs, hooks, the registry) and the engine
(``prune``, ``remove``, ``restore``); the tools live in subpackages (:mod:`prunus.hardware`,
:mod:`prunus.workflow`, :mod:`prunus.shrinking`, :mod:`prunus.streaming`, :mod:`prunus.persistence`,
:mod:`prunus.cli`, :mod:`prunus.testing`) and load on first use
of one of their names here (PEP 562), so ``import prunus`` stays light. Plugins load on the first use of
:data:`registry`. A plugin imports from :mod:`prunus.plugin_api` only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .allocation import Allocation
from .anatomy import model_kind
from .auto import select
from .calibration import calibrate
from .component import Component
from .config import Amount, NoOptions, StrategyConfig
from .engine import is_pruned, masks, prune, remove, restore
from .errors import (
    AmountError,
    CalibrationError,
    CheckpointError,
    ConfigError,
    ConfigTypeError,
    CorruptShardError,
    ExportError,
    FileError,
    FileFormatError,
    MaskError,
    MissingDependencyError,
    MissingShardError,
    NotPrunedError,
    PluginError,
    PluginLoadWarning,
    PrunusError,
    PrunusWarning,
    QualityError,
    QualityWarning,
    RegistrationError,
    RollbackError,
    ShrinkError,
    StateError,
    TargetError,
    TargetTypeError,
    TargetWarning,
    UnknownCriterionError,
    UnknownScheduleError,
    UnknownStrategyError,
    WeightError,
)
from .hardware_profile import CpuInfo, GpuInfo, HardwareProfile
from .hookspecs import hookimpl, hookspec
from .ranking import keep_mask
from .reconstruction import Reconstruction
from .registration import Registrar, Registry, StrategyInfo, registry
from .report import AutoOutcome, ParameterReport, PruneReport, QualityFigure, StepReport
from .schedules import Schedule
from .selection import PlanStep, Selection
from .statistics import InputGram, InputNorms, Statistic, Statistics
from .strategy import ComposedStrategy, Criterion, Granularity, PruneContext, Strategy, Target
from .targets import DEFAULT_LAYERS, select_targets

if TYPE_CHECKING:
    from .hardware.analysis import AnalysisReport, LayerAnalysis, analyze
    from .hardware.detection import detect_hardware
    from .hardware.probing import ProbePoint, ProbeResult, load_probe, probe
    from .hardware.sparse import SparseLinear, to_dense, to_sparse
    from .persistence.compressed import load_compressed, save_compressed
    from .persistence.export import export_onnx, export_program
    from .persistence.huggingface import load_pretrained, save_pretrained
    from .persistence.state import (
        Manifest,
        load_pruned,
        load_pruning_state,
        pruning_state,
        read_manifest,
        save_pruned,
    )
    from .shrinking.channels import prune_channels, shrink
    from .shrinking.record import load_shrunk, shrink_state
    from .shrinking.report import ChannelGroupReport, ShrinkReport
    from .shrinking.sensitivity import GroupSensitivity, channel_sensitivity
    from .streaming.pruning import prune_checkpoint
    from .workflow import plots
    from .workflow.config import PruneConfig, SensitivityConfig, load_config
    from .workflow.evaluation import (
        Comparison,
        Evaluation,
        ModelSize,
        accuracy,
        compare,
        count_parameters,
        evaluate,
        latency_ms,
        model_size,
        summary,
    )
    from .workflow.gradual import FineTuneResult, GradualPruner, ScheduleStep, fine_tune
    from .workflow.quantization import compare_quantized, quantize, quantized_weights
    from .workflow.recovery import distill, recalibrate_batchnorm
    from .workflow.sensitivity_analysis import SensitivityCurve, SensitivityResult, sensitivity

__version__ = "0.1.0"

_TOOLS: dict[str, str] = {
    # name: the tool module that defines it (imported on first use of the name)
    "AnalysisReport": "hardware.analysis",
    "LayerAnalysis": "hardware.analysis",
    "analyze": "hardware.analysis",
    "detect_hardware": "hardware.detection",
    "ProbePoint": "hardware.probing",
    "ProbeResult": "hardware.probing",
    "load_probe": "hardware.probing",
    "probe": "hardware.probing",
    "SparseLinear": "hardware.sparse",
    "to_dense": "hardware.sparse",
    "to_sparse": "hardware.sparse",
    "load_compressed": "persistence.compressed",
    "save_compressed": "persistence.compressed",
    "export_onnx": "persistence.export",
    "export_program": "persistence.export",
    "load_pretrained": "persistence.huggingface",
    "save_pretrained": "persistence.huggingface",
    "Manifest": "persistence.state",
    "load_pruned": "persistence.state",
    "load_pruning_state": "persistence.state",
    "pruning_state": "persistence.state",
    "read_manifest": "persistence.state",
    "save_pruned": "persistence.state",
    "ChannelGroupReport": "shrinking.report",
    "ShrinkReport": "shrinking.report",
    "prune_channels": "shrinking.channels",
    "shrink": "shrinking.channels",
    "load_shrunk": "shrinking.record",
    "shrink_state": "shrinking.record",
    "GroupSensitivity": "shrinking.sensitivity",
    "channel_sensitivity": "shrinking.sensitivity",
    "prune_checkpoint": "streaming.pruning",
    "PruneConfig": "workflow.config",
    "SensitivityConfig": "workflow.config",
    "load_config": "workflow.config",
    "Comparison": "workflow.evaluation",
    "Evaluation": "workflow.evaluation",
    "ModelSize": "workflow.evaluation",
    "accuracy": "workflow.evaluation",
    "compare": "workflow.evaluation",
    "count_parameters": "workflow.evaluation",
    "evaluate": "workflow.evaluation",
    "latency_ms": "workflow.evaluation",
    "model_size": "workflow.evaluation",
    "summary": "workflow.evaluation",
    "FineTuneResult": "workflow.gradual",
    "GradualPruner": "workflow.gradual",
    "ScheduleStep": "workflow.gradual",
    "fine_tune": "workflow.gradual",
    "compare_quantized": "workflow.quantization",
    "quantize": "workflow.quantization",
    "quantized_weights": "workflow.quantization",
    "distill": "workflow.recovery",
    "recalibrate_batchnorm": "workflow.recovery",
    "SensitivityCurve": "workflow.sensitivity_analysis",
    "SensitivityResult": "workflow.sensitivity_analysis",
    "sensitivity": "workflow.sensitivity_analysis",
}

_TOOL_MODULES: dict[str, str] = {"plots": "workflow.plots"}
"""Names that are tool modules themselves (``prunus.plots.plot_weights(...)``)."""


def __getattr__(name: str) -> Any:
    # PEP 562: the tools load on first use, so `import prunus` imports none of them.
    if name in _TOOLS:
        value = getattr(importlib.import_module(f"{__name__}.{_TOOLS[name]}"), name)
    elif name in _TOOL_MODULES:
        value = importlib.import_module(f"{__name__}.{_TOOL_MODULES[name]}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_TOOLS, *_TOOL_MODULES})


__all__ = [
    "DEFAULT_LAYERS",
    "Allocation",
    "Amount",
    "AmountError",
    "AnalysisReport",
    "AutoOutcome",
    "CalibrationError",
    "ChannelGroupReport",
    "CheckpointError",
    "Comparison",
    "Component",
    "ComposedStrategy",
    "ConfigError",
    "ConfigTypeError",
    "CorruptShardError",
    "CpuInfo",
    "Criterion",
    "Evaluation",
    "ExportError",
    "FileError",
    "FileFormatError",
    "FineTuneResult",
    "GpuInfo",
    "GradualPruner",
    "Granularity",
    "GroupSensitivity",
    "HardwareProfile",
    "InputGram",
    "InputNorms",
    "LayerAnalysis",
    "Manifest",
    "MaskError",
    "MissingDependencyError",
    "MissingShardError",
    "ModelSize",
    "NoOptions",
    "NotPrunedError",
    "ParameterReport",
    "PlanStep",
    "PluginError",
    "PluginLoadWarning",
    "ProbePoint",
    "ProbeResult",
    "PruneConfig",
    "PruneContext",
    "PruneReport",
    "PrunusError",
    "PrunusWarning",
    "QualityError",
    "QualityFigure",
    "QualityWarning",
    "Reconstruction",
    "Registrar",
    "RegistrationError",
    "Registry",
    "RollbackError",
    "Schedule",
    "ScheduleStep",
    "Selection",
    "SensitivityConfig",
    "SensitivityCurve",
    "SensitivityResult",
    "ShrinkError",
    "ShrinkReport",
    "SparseLinear",
    "StateError",
    "Statistic",
    "Statistics",
    "StepReport",
    "Strategy",
    "StrategyConfig",
    "StrategyInfo",
    "Target",
    "TargetError",
    "TargetTypeError",
    "TargetWarning",
    "UnknownCriterionError",
    "UnknownScheduleError",
    "UnknownStrategyError",
    "WeightError",
    "accuracy",
    "analyze",
    "calibrate",
    "channel_sensitivity",
    "compare",
    "compare_quantized",
    "count_parameters",
    "detect_hardware",
    "distill",
    "evaluate",
    "export_onnx",
    "export_program",
    "fine_tune",
    "hookimpl",
    "hookspec",
    "is_pruned",
    "keep_mask",
    "latency_ms",
    "load_compressed",
    "load_config",
    "load_pretrained",
    "load_probe",
    "load_pruned",
    "load_pruning_state",
    "load_shrunk",
    "masks",
    "model_kind",
    "model_size",
    "plots",
    "probe",
    "prune",
    "prune_channels",
    "prune_checkpoint",
    "pruning_state",
    "quantize",
    "quantized_weights",
    "read_manifest",
    "recalibrate_batchnorm",
    "registry",
    "remove",
    "restore",
    "save_compressed",
    "save_pretrained",
    "save_pruned",
    "select",
    "select_targets",
    "sensitivity",
    "shrink",
    "shrink_state",
    "summary",
    "to_dense",
    "to_sparse",
]
