"""Workflow tools around a prune: evaluation, gradual schedules with fine-tuning, sensitivity, quantization.

* :mod:`~prunus.workflow.evaluation`: accuracy, size, latency, comparisons, compressed checkpoints;
* :mod:`~prunus.workflow.gradual`: :class:`prunus.GradualPruner` and :func:`prunus.fine_tune`;
* :mod:`~prunus.workflow.sensitivity_analysis`: per-layer sensitivity (:func:`prunus.sensitivity`);
* :mod:`~prunus.workflow.quantization`: int8 dynamic quantization of a pruned model;
* :mod:`~prunus.workflow.plots`: PNG figures through matplotlib (``prunus[plots]``);
* :mod:`~prunus.workflow.config`: the YAML/JSON workflow configs of the command line.

It may import the contracts and the engine (the root of :mod:`prunus`) and :mod:`prunus.hardware`.
"""
