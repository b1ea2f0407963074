"""gpucnn: a readable convolutional-network framework.

Our own CUDA kernels (``cuda/*.cu``) launched through CuPy on NVIDIA GPUs, and a vectorised
NumPy backend chosen at runtime where no GPU is usable. Importing gpucnn never fails because
CuPy is missing or broken: the backend is probed on first use.
"""

from gpucnn import (
    backend,
    callbacks,
    data,
    datasets,
    filters,
    functional,
    initializers,
    layers,
    metrics,
    models,
    optim,
    saving,
    transforms,
    viz,
)
from gpucnn.backend import BackendUnavailable
from gpucnn.backend.threads import get_num_threads, set_num_threads
from gpucnn.model import Model, Sequential
from gpucnn.module import Module, ModuleList, register_module
from gpucnn.random import manual_seed
from gpucnn.saving import CheckpointError, load_model
from gpucnn.tensor import (
    Parameter,
    Tensor,
    enable_grad,
    is_grad_enabled,
    no_grad,
    ones,
    rand,
    randn,
    tensor,
    zeros,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "CheckpointError",
    "Model",
    "Module",
    "ModuleList",
    "Sequential",
    "callbacks",
    "initializers",
    "layers",
    "load_model",
    "metrics",
    "models",
    "register_module",
    "get_num_threads",
    "set_num_threads",
    "saving",
    "Parameter",
    "Tensor",
    "backend",
    "data",
    "datasets",
    "filters",
    "optim",
    "transforms",
    "viz",
    "enable_grad",
    "functional",
    "is_grad_enabled",
    "manual_seed",
    "no_grad",
    "ones",
    "rand",
    "randn",
    "tensor",
    "zeros",
    "__version__",
]
