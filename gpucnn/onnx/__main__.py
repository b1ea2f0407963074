"""``python -m gpucnn.onnx export|inspect`` (see :mod:`gpucnn.onnx.cli`)."""

import sys

from gpucnn.onnx.cli import main

if __name__ == "__main__":
    sys.exit(main())
