"""Global settings: the default image data format (Keras's ``image_data_format``).

``"channels_first"`` (NCHW, gpucnn's native layout and the default) or ``"channels_last"``
(NHWC, Keras's default). Image layers created with ``data_format=None`` take the value current
when they are constructed. The environment variable ``GPUCNN_IMAGE_DATA_FORMAT`` sets the
initial value; :func:`set_image_data_format` changes it for the process.

The kernels always run NCHW: a channels-last :class:`~gpucnn.Sequential` transposes its input
once (NHWC -> NCHW) and a 4-D output back once; see :mod:`gpucnn.layers`.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["DATA_FORMATS", "image_data_format", "set_image_data_format", "normalize_data_format"]

DATA_FORMATS = ("channels_first", "channels_last")
_ENV = "GPUCNN_IMAGE_DATA_FORMAT"


def _check(fmt: Any, where: str) -> str:
    if not isinstance(fmt, str) or fmt.lower() not in DATA_FORMATS:
        raise ValueError(
            f"{where}: data_format must be 'channels_first' (NCHW) or 'channels_last' (NHWC), "
            f"got {fmt!r}"
        )
    return fmt.lower()


def _from_env() -> str:
    value = os.environ.get(_ENV)
    if value is None or value == "":
        return "channels_first"
    return _check(value, f"environment variable {_ENV}")


_current: str = _from_env()


def image_data_format() -> str:
    """The default data format of image layers: ``"channels_first"`` or ``"channels_last"``."""
    return _current


def set_image_data_format(data_format: str) -> None:
    """Set the default data format of image layers constructed from now on."""
    global _current
    _current = _check(data_format, "set_image_data_format")


def normalize_data_format(data_format: str | None, where: str = "data_format") -> str:
    """``data_format`` checked and lower-cased; ``None`` gives :func:`image_data_format`."""
    if data_format is None:
        return image_data_format()
    return _check(data_format, where)
