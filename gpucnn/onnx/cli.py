"""Command line for ONNX: ``export`` a zoo model or a saved gpucnn model, ``inspect`` a file.

``python -m gpucnn.onnx export --model resnet20 --input 3,32,32 --out resnet20.onnx``,
``python -m gpucnn.onnx inspect resnet20.onnx``. :func:`add_onnx_parser` adds the same two
commands under ``gpucnn onnx`` to the main parser of :mod:`gpucnn.cli`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

__all__ = ["add_onnx_parser", "build_parser", "cmd_export", "cmd_inspect", "main"]


def cmd_export(args: argparse.Namespace) -> int:
    """Build (``--model``) or load (``--checkpoint``) a model and write it as ONNX."""
    from gpucnn.cli import UsageError, _parse_shape, build_model
    from gpucnn.onnx.export import export

    if (args.model is None) == (args.checkpoint is None):
        raise UsageError("give exactly one of --model NAME or --checkpoint FILE.npz")
    shape = _parse_shape(args.input) if args.input else None
    if args.model is not None:
        model = build_model(args.model, shape or (3, 32, 32), args.num_classes)
    else:
        from gpucnn.saving import load_model

        model = load_model(args.checkpoint)
    fixed = args.fixed_batch
    proto = export(model, args.out, input_shape=shape, opset=args.opset,
                   dynamic_batch=fixed is None, batch_size=fixed or 1)
    n_params = sum(int(_prod(i.dims)) for i in proto.graph.initializer)
    print(f"wrote {args.out}: opset {args.opset}, IR {proto.ir_version}, "
          f"{len(proto.graph.node)} nodes, {n_params:,} initializer values")
    return 0


def _prod(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _shape(vi: Any) -> str:
    dims = [d.dim_param or str(d.dim_value) if (d.dim_param or d.HasField("dim_value")) else "?"
            for d in vi.type.tensor_type.shape.dim]
    return "(" + ", ".join(dims) + ")"


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print what an ONNX file holds and whether gpucnn can import it."""
    from gpucnn.onnx._common import UnsupportedOpError, require_onnx
    from gpucnn.onnx.importer import load

    onnx = require_onnx()
    try:
        proto = onnx.load(args.path, load_external_data=False)
    except Exception as exc:
        from gpucnn.cli import RunError

        raise RunError(f"{args.path!r} is not a readable ONNX model: {exc}") from None
    g = proto.graph
    inits = {i.name for i in g.initializer}
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    print(f"file:      {args.path}")
    print(f"producer:  {proto.producer_name} {proto.producer_version}".rstrip())
    print(f"IR:        {proto.ir_version}")
    print(f"opsets:    {opsets}")
    for vi in g.input:
        if vi.name not in inits:
            print(f"input:     {vi.name} {_shape(vi)}")
    for vi in g.output:
        print(f"output:    {vi.name} {_shape(vi)}")
    n_params = sum(_prod(i.dims) for i in g.initializer)
    print(f"weights:   {len(g.initializer)} initializers, {n_params:,} values")
    counts = Counter(n.op_type for n in g.node)
    print(f"nodes:     {len(g.node)} ({', '.join(f'{k} x{v}' for k, v in sorted(counts.items()))})")
    try:
        load(args.path)
        print("gpucnn:    importable")
    except (UnsupportedOpError, ValueError) as exc:
        print(f"gpucnn:    not importable: {exc}")
    return 0


def _add_commands(sub: Any, fmt: Any) -> None:
    ex = sub.add_parser("export", help="write a zoo model or a saved model as ONNX",
                        description="Export a gpucnn model (a zoo model by name, or a model "
                        "saved with model.save) to an ONNX file.", formatter_class=fmt)
    ex.add_argument("--model", default=None, help="a model name (see: gpucnn models)")
    ex.add_argument("--checkpoint", default=None, help="a model saved with model.save (.npz)")
    ex.add_argument("--input", default=None,
                    help="per-sample input C,H,W (default: the model's own; 3,32,32 for "
                         "--model)")
    ex.add_argument("--num-classes", type=int, default=10, help="--model: output classes")
    ex.add_argument("--opset", type=int, default=21, help="ai.onnx opset, 17 to 21")
    ex.add_argument("--fixed-batch", type=int, default=None,
                    help="a fixed batch size instead of a dynamic batch dimension")
    ex.add_argument("--out", required=True, help="the .onnx file to write")
    ex.set_defaults(func=cmd_export)
    ins = sub.add_parser("inspect", help="print an ONNX file's inputs, outputs and ops",
                         description="Inputs, outputs, opsets, weights and op counts of an "
                         "ONNX file, and whether gpucnn.onnx.load can import it.",
                         formatter_class=fmt)
    ins.add_argument("path", help="an .onnx file")
    ins.set_defaults(func=cmd_inspect)


def add_onnx_parser(sub: Any, fmt: Any = argparse.HelpFormatter) -> argparse.ArgumentParser:
    """Add ``onnx {export,inspect}`` to the sub-parsers ``sub`` of the ``gpucnn`` command."""
    p = sub.add_parser("onnx", help="ONNX export and inspection",
                       description="ONNX export and inspection (needs the onnx extra).",
                       formatter_class=fmt)
    inner = p.add_subparsers(dest="onnx_command", metavar="{export,inspect}")
    inner.required = True
    _add_commands(inner, fmt)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m gpucnn.onnx``."""
    p = argparse.ArgumentParser(prog="python -m gpucnn.onnx",
                                description="ONNX export and inspection for gpucnn models.")
    sub = p.add_subparsers(dest="command", metavar="{export,inspect}")
    sub.required = True
    _add_commands(sub, argparse.ArgumentDefaultsHelpFormatter)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m gpucnn.onnx``; exit code 0 on success, 1 on a failure, 2 on bad usage."""
    from gpucnn.cli import RunError, UsageError
    from gpucnn.onnx._common import ExportError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, ValueError, TypeError) as exc:
        code = 1 if isinstance(exc, ExportError) else 2
        print(f"gpucnn onnx {args.command}: error: {exc}", file=sys.stderr)
        return code
    except (RunError, FileNotFoundError, ImportError) as exc:
        print(f"gpucnn onnx {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
