"""gpucnn: a readable convolutional-network framework.

Our own CUDA kernels (``cuda/*.cu``) launched through CuPy on NVIDIA GPUs, and a vectorised
NumPy backend chosen at runtime where no GPU is usable. Importing gpucnn never fails because
CuPy is missing or broken: the backend is probed on first use.
"""

from gpucnn import (
    amp,
    backend,
    callbacks,
    config,
    cuda_graph,
    data,
    datasets,
    filters,
    functional,
    initializers,
    keras,
    layers,
    metrics,
    models,
    optim,
    saving,
    transforms,
    utils,
    viz,
)
from gpucnn.backend import BackendUnavailable
from gpucnn.backend.threads import get_num_threads, set_num_threads
from gpucnn.functional.basic import cat, stack
from gpucnn.model import Model, Sequential
from gpucnn.module import Module, ModuleList, StateDictError, register_module
from gpucnn.random import manual_seed
from gpucnn.saving import CheckpointError, load, load_model, save
from gpucnn.tensor import (
    Device,
    Parameter,
    Tensor,
    enable_grad,
    from_numpy,
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
    "amp",
    "backend",
    "cuda_graph",
    "data",
    "datasets",
    "filters",
    "optim",
    "transforms",
    "viz",
    "utils",
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
    "Device",
    "StateDictError",
    "cat",
    "from_numpy",
    "load",
    "save",
    "stack",
    "config",
    "keras",
    "__version__",
]
