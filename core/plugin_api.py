"""Everything a prunus plugin may use, in one place.

A plugin, built-in or third-party, imports from this module and from nothing else of prunus::

    from prunus.plugin_api import Criterion, PruneContext, Registrar, Target, hookimpl

prunus's own plugins (:mod:`prunus.plugins`) are held to it by an import contract checked in CI, so nothing a
built-in does is out of a third party's reach. What is here:

* **hooks**: :data:`hookimpl` and the :class:`Registrar` the registration hooks receive (the hooks themselves
  are documented in :mod:`prunus.hookspecs`);
* **contracts**: the registrable kinds (:class:`Criterion`, :class:`Granularity`, :class:`Strategy`,
  :class:`Schedule`, :class:`Allocation` with its :class:`Layer`, :class:`Reconstruction`, all
  :class:`Component`), what a strategy sees (:class:`Target`, :class:`PruneContext`), and the :class:`Registry`
  a strategy's ``create`` may look things up in;
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
  ranking across many parameters in a few percent of the memory of concatenating them;
* **targets**: :func:`select_targets` (what ``prune`` would target by default), :data:`DEFAULT_LAYERS`,
  :func:`input_dim`;
* **mask storage**: :func:`attach_mask`, what a ``prunus_apply_mask`` implementation calls to keep a mask the
  way prunus does (zeros in place, the packed mask and the pruned values beside the parameter);
* **hardware selection**: :class:`Selection`, :class:`HardwareProfile` (with :class:`CpuInfo`,
  :class:`GpuInfo`), what the ``prunus_select_strategy`` hook receives and returns;
* **errors** a plugin raises: :class:`ConfigError`, :class:`AmountError`, :class:`MaskError`,
  :class:`TargetError`, :class:`PluginError`, :class:`CalibrationError`.
"""

from __future__ import annotations

from .allocation import Allocation, Layer
from .component import Component, Kind
from .config import Amount, NoOptions, StrategyConfig, count_to_prune
from .errors import (
    AmountError,
    CalibrationError,
    ConfigError,
    MaskError,
    PluginError,
    TargetError,
)
from .global_ranking import global_keep_masks
from .hardware_profile import CpuInfo, GpuInfo, HardwareProfile
from .hookspecs import hookimpl
from .layout import from_matrix, input_features, input_weighted, matrix_view, per_input
from .masking import attach_mask
from .ranking import eligible_slices, keep_mask, keep_slices, rankable
from .reconstruction import Reconstruction
from .registration import Registrar, Registry
from .schedules import Fraction, Schedule, SchedulePoint, SteppedPoints
from .selection import Selection
from .statistics import InputGram, InputNorms, Statistic, Statistics
from .strategy import Criterion, Granularity, PruneContext, Strategy, Target
from .targets import DEFAULT_LAYERS, input_dim, select_targets

__all__ = [
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
    "NoOptions",
    "PluginError",
    "PruneContext",
    "Reconstruction",
    "Registrar",
    "Registry",
    "Schedule",
    "SchedulePoint",
    "Selection",
    "Statistic",
    "Statistics",
    "SteppedPoints",
    "Strategy",
    "StrategyConfig",
    "Target",
    "TargetError",
    "attach_mask",
    "count_to_prune",
    "eligible_slices",
    "from_matrix",
    "global_keep_masks",
    "hookimpl",
    "input_dim",
    "input_features",
    "input_weighted",
    "keep_mask",
    "keep_slices",
    "matrix_view",
    "per_input",
    "rankable",
    "select_targets",
]
