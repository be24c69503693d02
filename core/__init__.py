"""prunus: a plugin-based pruning strategy registry for PyTorch.

>>> import prunus
>>> report = prunus.prune(model, "l1_unstructured", amount=0.5)   # doctest: +SKIP
>>> prunus.remove(model)                                           # doctest: +SKIP

Importing prunus loads no plugin: they load on the first use of :data:`registry`.
"""

from __future__ import annotations

from . import plots
from .analysis import AnalysisReport, LayerAnalysis, analyze
from .config import Amount, StrategyConfig
from .engine import DEFAULT_LAYERS, is_pruned, masks, prune, remove, restore, select_targets
from .errors import (
    AmountError,
    ConfigError,
    MaskError,
    NotPrunedError,
    PluginError,
    PluginLoadWarning,
    PrunusError,
    PrunusWarning,
    RegistrationError,
    TargetError,
    UnknownCriterionError,
    UnknownStrategyError,
)
from .evaluation import (
    Comparison,
    Evaluation,
    ModelSize,
    accuracy,
    compare,
    count_parameters,
    evaluate,
    latency_ms,
    load_compressed,
    model_size,
    save_compressed,
    summary,
)
from .gradual import FineTuneResult, GradualPruner, ScheduleStep, fine_tune
from .hardware import CpuInfo, GpuInfo, HardwareProfile, detect_hardware
from .hookspecs import hookimpl, hookspec
from .probe import ProbePoint, ProbeResult, load_probe, probe
from .quantization import compare_quantized, quantize, quantized_weights
from .ranking import keep_mask
from .registry import Registrar, Registry, StrategyInfo, registry
from .report import ParameterReport, PruneReport
from .schedules import Schedule, UnknownScheduleError
from .selection import Selection, select
from .sensitivity import SensitivityCurve, SensitivityResult, sensitivity
from .shrink import (
    ChannelGroupReport,
    MissingDependencyError,
    ShrinkError,
    ShrinkReport,
    load_shrunk,
    prune_channels,
    shrink,
    shrink_state,
)
from .sparse import SparseLinear, to_dense, to_sparse
from .strategy import (
    ComposedStrategy,
    Criterion,
    Granularity,
    NoOptions,
    PruneContext,
    Strategy,
    Target,
)
from .workflow_config import PruneConfig, SensitivityConfig, load_config

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LAYERS",
    "Amount",
    "AmountError",
    "AnalysisReport",
    "ChannelGroupReport",
    "Comparison",
    "ComposedStrategy",
    "ConfigError",
    "CpuInfo",
    "Criterion",
    "Evaluation",
    "FineTuneResult",
    "GpuInfo",
    "GradualPruner",
    "Granularity",
    "HardwareProfile",
    "LayerAnalysis",
    "MaskError",
    "MissingDependencyError",
    "ModelSize",
    "NoOptions",
    "NotPrunedError",
    "ParameterReport",
    "PluginError",
    "PluginLoadWarning",
    "ProbePoint",
    "ProbeResult",
    "PruneConfig",
    "PruneContext",
    "PruneReport",
    "PrunusError",
    "PrunusWarning",
    "Registrar",
    "RegistrationError",
    "Registry",
    "Schedule",
    "ScheduleStep",
    "Selection",
    "SensitivityConfig",
    "SensitivityCurve",
    "SensitivityResult",
    "ShrinkError",
    "ShrinkReport",
    "SparseLinear",
    "Strategy",
    "StrategyConfig",
    "StrategyInfo",
    "Target",
    "TargetError",
    "UnknownCriterionError",
    "UnknownScheduleError",
    "UnknownStrategyError",
    "accuracy",
    "analyze",
    "compare",
    "compare_quantized",
    "count_parameters",
    "detect_hardware",
    "evaluate",
    "fine_tune",
    "hookimpl",
    "hookspec",
    "is_pruned",
    "keep_mask",
    "latency_ms",
    "load_compressed",
    "load_config",
    "load_probe",
    "load_shrunk",
    "masks",
    "model_size",
    "plots",
    "probe",
    "prune",
    "prune_channels",
    "quantize",
    "quantized_weights",
    "registry",
    "remove",
    "restore",
    "save_compressed",
    "select",
    "select_targets",
    "sensitivity",
    "shrink",
    "shrink_state",
    "summary",
    "to_dense",
    "to_sparse",
]
