"""Keras's ``metrics`` module: the public names of :mod:`gpucnn.metrics`
(the metrics ``compile`` takes)."""

from gpucnn.keras._reexport import reexport

reexport(globals(), "gpucnn.metrics")
