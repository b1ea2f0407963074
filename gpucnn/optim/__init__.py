"""Optimizers (SGD, Adam, AdamW, RMSprop, Adagrad, NAdam/Nadam) and learning-rate schedules,
PyTorch semantics.

``from gpucnn import optim``; ``opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)``;
``sched = optim.CosineAnnealingLR(opt, T_max=100)`` (also under ``optim.lr_scheduler``).
Keras style: ``model.compile(optimizer=optim.Adam(learning_rate=1e-3), ...)`` (an optimizer
built without parameters is bound to the model's by ``compile``).

Each optimizer's per-tensor update is the reference; by default (``flat=True``) it runs once
per bucket of parameters on flat buffers (:mod:`gpucnn.optim.flat`, bit-identical;
``flat=False`` opts out).
"""

from gpucnn.optim import schedules as lr_scheduler
from gpucnn.optim.optimizers import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    NAdam,
    Nadam,
    Optimizer,
    RMSprop,
)
from gpucnn.optim.schedules import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LinearWarmup,
    LRScheduler,
    MultiStepLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
    warmup,
)

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "NAdam",
    "Nadam",
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LinearLR",
    "LinearWarmup",
    "SequentialLR",
    "ReduceLROnPlateau",
    "warmup",
    "lr_scheduler",
]
