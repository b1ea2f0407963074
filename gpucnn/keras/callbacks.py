"""Keras's ``callbacks`` module: the public names of :mod:`gpucnn.callbacks`
(``EarlyStopping``, ``ModelCheckpoint``, ...)."""

from gpucnn.keras._reexport import reexport

reexport(globals(), "gpucnn.callbacks")
