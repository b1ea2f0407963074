"""Differentiable operations, PyTorch semantics and NCHW layout (``import gpucnn.functional as F``).

Conv weights are ``(out, in/groups, kh, kw)``; linear weights ``(out, in)``.
"""

from gpucnn.functional.activation import *  # noqa: F403
from gpucnn.functional.basic import *  # noqa: F403
from gpucnn.functional.conv import *  # noqa: F403
from gpucnn.functional.loss import *  # noqa: F403
from gpucnn.functional.norm import *  # noqa: F403
from gpucnn.functional.pool import *  # noqa: F403
