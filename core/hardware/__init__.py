"""Hardware tools: describe and measure the machine, run sparse formats, and analyse what pruning buys there.

* :mod:`~prunus.hardware.devices` and :mod:`~prunus.hardware.detection`: the current machine as a
  :class:`~prunus.HardwareProfile` (:func:`prunus.detect_hardware`), and ``hardware=`` arguments resolved;
* :mod:`~prunus.hardware.probing`: where sparse execution starts to beat dense here (:func:`prunus.probe`);
* :mod:`~prunus.hardware.sparse`: sparse execution modules (:class:`prunus.SparseLinear`, :func:`prunus.to_sparse`);
* :mod:`~prunus.hardware.analysis`: what a pruned model's layers cost and would cost (:func:`prunus.analyze`);
* :mod:`~prunus.hardware.timing`: interleaved medians for every measurement;
* :mod:`~prunus.hardware.plugin`: the ``prunus_resolve_hardware`` hook the selection reaches this package by.

It may import the contracts and the engine (the root of :mod:`prunus`), never the other way round.
"""
