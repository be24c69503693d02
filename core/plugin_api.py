"""Everything a prunus plugin may use, in one place.

A plugin, built-in or third-party, imports from this module and from nothing else of prunus::

    from prunus.plugin_api import Criterion, PruneContext, Registrar, Target, hookimpl

prunus's own plugins (:mod:`prunus.plugins`) are held to it by an import contract checked in CI, so nothing a
built-in does is out of a third party's reach. What is here:

* **hooks**: :data:`hookimpl` and the :class:`Registrar` the registration hooks receive (the hooks themselves
  are documented in :mod:`prunus.hookspecs`);
* **contracts**: the registrable kinds (:class:`Criterion`, :class:`Granularity`, :class:`Strategy`,
  :class:`Schedule`, :class:`Allocation` with its :class:`Layer`, :class:`Reconstruction`, all
  :class:`Component`), what a strategy sees (:class:`Target`, :class:`PruneContext`), the :class:`Scorer` a
  granularity is handed its scores by, the :class:`Partition` a granularity declares (its units and groups, what
  the test kit checks its masks against), and the :class:`Registry` a strategy's ``create`` may look things up
  in;
* **calibration statistics** a data-aware criterion declares in its ``statistics`` and reads with
  ``context.statistic(target, kind)``: the base class :class:`Statistic` (subclass it for a statistic of your
  own), the built-in :class:`InputNorms` and :class:`InputGram`, and the :class:`Statistics` table;
* **layout** of weights against their inputs: :func:`matrix_view`, :func:`from_matrix`, :func:`per_input`,
  :func:`input_features` (a Linear, a convolution and GPT-2's transposed ``Conv1D`` alike), and
  :func:`input_weighted` (Wanda's ``|w| * ||x||``);
* **config building blocks**: :class:`StrategyConfig`, :class:`NoOptions`, the :data:`Amount` and
  :data:`Fraction` field types, :data:`SchedulePoint` and :class:`SteppedPoints` (many schedule points,
  computed when read);
* **ranking primitives**: :func:`count_to_prune` (torch's rounding of an amount), :func:`keep_mask`,
  :func:`keep_slices`, :func:`eligible_slices`, :func:`rankable`, and :func:`global_keep_masks`, the one
  ranking across many parameters in a few percent of the memory of concatenating them (:data:`CHUNKED_FROM`:
  the size from which a CPU ranking goes chunk by chunk);
* **targets**: :func:`select_targets` (what ``prune`` would target by default), :data:`DEFAULT_LAYERS`,
  :func:`input_dim`;
* **running the model**: :func:`call_model` (a batch in prunus's one form: a tuple is positional arguments, a
  mapping keyword arguments) and :func:`evaluation_mode` (a calibration forward that leaves the model's modes,
  buffers and the global random state as they were), for criteria that read activations;
* **sharded parameters** (DTensors, e.g. under FSDP2): :func:`count_true` (a count of the whole tensor, where
  ``int(mask.sum())`` gives this rank's), :func:`local_along` (compute on the local shard when the lines a
  granularity works along stay whole); :func:`keep_mask` and :func:`global_keep_masks` rank sharded scores
  across ranks by themselves;
* **mask storage**: :func:`attach_mask`, what a ``prunus_apply_mask`` implementation calls to keep a mask the
  way prunus does (zeros in place, the packed mask and the pruned values beside the parameter);
* **hardware selection**: :class:`Selection` and its :class:`PlanStep` steps, :class:`HardwareProfile` (with
  :class:`CpuInfo`, :class:`GpuInfo`), what the ``prunus_select_strategy`` hook receives and returns, and
  :func:`model_kind`, what the model is (a language model, an encoder, a CNN, an MLP);
* **errors** a plugin raises: :class:`ConfigError`, :class:`AmountError`, :class:`MaskError`,
  :class:`TargetError`, :class:`PluginError`, :class:`CalibrationError`.
"""

from __future__ import annotations

from .allocation import Allocation, Layer
from .anatomy import ModelKind, model_kind
from .component import Component, Kind
from .config import Amount, NoOptions, StrategyConfig, count_to_prune
from .distributed import count_true, local_along
from .errors import (
    AmountError,
    CalibrationError,
    ConfigError,
    MaskError,
    PluginError,
    TargetError,
)
from .forward import call_model, evaluation_mode
from .global_ranking import global_keep_masks
from .hardware_profile import CpuInfo, GpuInfo, HardwareProfile
from .hookspecs import hookimpl
from .layout import from_matrix, input_features, input_weighted, matrix_view, per_input
from .masking import attach_mask
from .ranking import CHUNKED_FROM, eligible_slices, keep_mask, keep_slices, rankable
from .reconstruction import Reconstruction
from .registration import Registrar, Registry
from .schedules import Fraction, Schedule, SchedulePoint, SteppedPoints
from .selection import PlanStep, Selection
from .statistics import InputGram, InputNorms, Statistic, Statistics
from .strategy import Criterion, Granularity, Partition, PruneContext, Scorer, Strategy, Target
from .targets import DEFAULT_LAYERS, input_dim, select_targets

__all__ = [
    "CHUNKED_FROM",
    "DEFAULT_LAYERS",
    "Allocation",
    "Amount",
    "AmountError",
    "CalibrationError",
    "Component",
    "ConfigError",
    "CpuInfo",
    "Criterion",
    "Fraction",
    "GpuInfo",
    "Granularity",
    "HardwareProfile",
    "InputGram",
    "InputNorms",
    "Kind",
    "Layer",
    "MaskError",
    "ModelKind",
    "NoOptions",
    "Partition",
    "PlanStep",
    "PluginError",
    "PruneContext",
    "Reconstruction",
    "Registrar",
    "Registry",
    "Schedule",
    "SchedulePoint",
    "Scorer",
    "Selection",
    "Statistic",
    "Statistics",
    "SteppedPoints",
    "Strategy",
    "StrategyConfig",
    "Target",
    "TargetError",
    "attach_mask",
    "call_model",
    "count_to_prune",
    "count_true",
    "eligible_slices",
    "evaluation_mode",
    "from_matrix",
    "global_keep_masks",
    "hookimpl",
    "input_dim",
    "input_features",
    "input_weighted",
    "keep_mask",
    "keep_slices",
    "local_along",
    "matrix_view",
    "model_kind",
    "per_input",
    "rankable",
    "select_targets",
]
