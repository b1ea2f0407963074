"""Keras's ``losses`` module: the loss names ``compile`` takes (:mod:`gpucnn.train.losses`,
``LOSSES``) and the loss functions (:mod:`gpucnn.functional.loss`)."""

from gpucnn.keras._reexport import reexport

reexport(globals(), "gpucnn.train.losses", "gpucnn.functional.loss")
