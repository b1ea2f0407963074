"""Keras's ``optimizers`` module: the public names of :mod:`gpucnn.optim`
(``Adam(learning_rate=...)``, ``SGD``, ``RMSprop``, ...)."""

from gpucnn.keras._reexport import reexport

reexport(globals(), "gpucnn.optim")
