"""Every kernel in cuda/*.cu is reached by a CUDA-backend launcher and agrees with its twin.

Each primitive of ``gpucnn.backend.cuda_ops`` runs through the host emulator (float32 and
float64, every activation kind and option that selects a different kernel) under a runtime that
records the kernels it asks for; outputs are compared with the NumPy twin. The recorded set
must equal the set of ``extern "C" __global__`` kernels declared in ``cuda/`` (after
preprocessing): a kernel no launcher reaches is dead code that would escape CI, and a launcher
naming a missing kernel fails here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from gpucnn.backend.kernels import all_kernel_sources
from gpucnn.backend.runtime import KernelRuntime

DTYPES = (np.float32, np.float64)
ACT_KINDS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "gelu_tanh")


def declared_kernels(emulator: Any) -> set[str]:
    """Kernels of every ``cuda/*.cu``, found after preprocessing (macro-made ones included)."""
    names: set[str] = set()
    for src in all_kernel_sources():
        names |= set(emulator.EmulatedModule(src).kernel_names)
    return names


def _cases(dt: type) -> Iterator[tuple[str, str, Callable[[Any], Any]]]:
    """(family, label, call(ops_module)) for every kernel-selecting option at dtype ``dt``."""
    r = np.random.default_rng(0)

    def a(*shape: int) -> np.ndarray:
        return r.standard_normal(shape).astype(dt)

    x4 = a(2, 3, 5, 6)
    for kind in ACT_KINDS:
        yield "activation", f"{kind} fwd", lambda m, k=kind: m.activation_forward(x4, k, 0.1)
        yield (
            "activation",
            f"{kind} bwd",
            lambda m, k=kind: m.activation_backward(x4, x4 * 0.5, k, 0.1),
        )
    w = a(3)
    yield "activation", "prelu fwd", lambda m: m.prelu_forward(x4, w)
    yield "activation", "prelu bwd", lambda m: m.prelu_backward(x4, w, x4 * 0.3)
    yield "bias", "add", lambda m: m.bias_add_nchw(x4.copy(), w)
    yield "bias", "grad", lambda m: m.bias_grad_nchw(x4)
    cols = a(2, 3 * 2 * 2, 4 * 5)
    yield "im2col", "im2col", lambda m: m.im2col(x4, 2, 2, 1, 1, 0, 0, 1, 1, 4, 5)
    yield "im2col", "col2im", lambda m: m.col2im(cols, 2, 3, 5, 6, 2, 2, 1, 1, 0, 0, 1, 1, 4, 5)
    cols2 = a(3 * 2 * 2, 2 * 4 * 5)
    yield "im2col", "im2col_cn", lambda m: m.im2col_cn(x4, 2, 2, 1, 1, 0, 0, 1, 1, 4, 5)
    yield (
        "im2col",
        "col2im_cn",
        lambda m: m.col2im_cn(cols2, 2, 3, 5, 6, 2, 2, 1, 1, 0, 0, 1, 1, 4, 5),
    )
    from gpucnn.backend.geometry import Conv2dGeometry  # conv_igemm: a strided, grouped conv

    cg = Conv2dGeometry.create((2, 4, 7, 6), (6, 2, 3, 3), stride=2, padding=1, groups=2)
    cx, cw, cdy = a(2, 4, 7, 6), a(6, 2, 3, 3), a(*cg.output_shape)
    yield "conv_igemm", "fwd", lambda m: m.conv2d_igemm_forward(cx, cw, cw[:, 0, 0, 0], cg)
    yield "conv_igemm", "bwd data", lambda m: m.conv2d_igemm_backward_data(cdy, cw, cg)
    yield "conv_igemm", "bwd weight", lambda m: m.conv2d_igemm_backward_weight(cdy, cx, cg, 1)
    yield (  # split-K: partial sums + conv_igemm_splitk_sum
        "conv_igemm", "bwd weight split", lambda m: m.conv2d_igemm_backward_weight(cdy, cx, cg, 2)
    )
    yield (  # the fused epilogue: bias, GELU and the pre-activation output
        "conv_igemm",
        "fwd gelu pre",
        lambda m: m.conv2d_igemm_forward(
            cx, cw, cw[:, 0, 0, 0], cg, activation="gelu", return_preactivation=True
        ),
    )
    if dt == np.float32:  # tensor cores (cuda/conv_igemm_tc.cu): float32/float16/bf16 bits in
        from gpucnn.backend.precision import bf16_bits

        for prec in ("tf32", "fp16", "bf16"):
            cast = bf16_bits if prec == "bf16" else (lambda v, p=prec: v.astype(
                np.float16 if p == "fp16" else np.float32))  # fmt: skip
            tx, tw, tdy = cast(cx), cast(cw), cast(cdy)
            yield (
                "conv_igemm",
                f"tc fwd {prec}",
                lambda m, p=prec, x=tx, w=tw: m.conv2d_igemm_forward(
                    x, w, cw[:, 0, 0, 0], cg, precision=p, activation="leaky_relu",
                    slope=0.1, return_preactivation=True,
                ),
            )  # fmt: skip
            yield (
                "conv_igemm",
                f"tc bwd data {prec}",
                lambda m, p=prec, d=tdy, w=tw: m.conv2d_igemm_backward_data(d, w, cg, precision=p),
            )
            yield (
                "conv_igemm",
                f"tc bwd weight {prec}",
                lambda m, p=prec, d=tdy, x=tx: m.conv2d_igemm_backward_weight(
                    d, x, cg, 2, precision=p
                ),
            )
    mean, var = x4.mean(axis=(0, 2, 3)), x4.var(axis=(0, 2, 3)) + 0.5
    yield "norm", "stats", lambda m: m.batchnorm_stats(x4)
    yield "norm", "fwd", lambda m: m.batchnorm_forward(x4, mean, var, w, w, 1e-5)
    yield "norm", "bwd", lambda m: m.batchnorm_backward(x4 * 0.2, x4, mean, var, w, 1e-5, True)
    p, g = a(7), a(7)

    def sgd(m: Any) -> tuple:
        q, buf = p.copy(), np.zeros_like(p)
        m.sgd_update(q, g, buf, 0.1, 0.9, 0.0, 0.01, True, False)
        return q, buf

    def adam(m: Any) -> tuple:
        q, s1, s2, mx = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        m.adam_update(q, g, s1, s2, mx, 1e-3, 0.9, 0.999, 1e-8, 0.01, 1, True, True)
        return q, s1, s2, mx

    def rms(m: Any) -> tuple:
        q, sq, ga, mb = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        m.rmsprop_update(q, g, sq, ga, mb, 0.01, 0.99, 1e-8, 0.0, 0.9, True)
        return q, sq, ga, mb

    def adagrad(m: Any) -> tuple:
        q, acc = p.copy(), np.full_like(p, 0.1)
        m.adagrad_update(q, g, acc, 0.01, 0.01, 0.02, 1e-10, 2)
        return q, acc

    def nadam(m: Any) -> tuple:
        q, s1, s2 = p.copy(), np.zeros_like(p), np.zeros_like(p)
        m.nadam_update(q, g, s1, s2, 2e-3, 0.9, 0.999, 1e-8, 0.01, 0.45, 0.46, 0.45, 1, True)
        return q, s1, s2

    yield "optim", "sgd", sgd
    yield "optim", "adam", adam
    yield "optim", "rmsprop", rms
    yield "optim", "adagrad", adagrad
    yield "optim", "nadam", nadam

    def h(*v: float) -> np.ndarray:  # the per-step scalars a captured graph reads from memory
        return np.array(v, dtype=dt)

    buf0 = a(7)

    def sgd_dev(m: Any) -> tuple:
        q, buf = p.copy(), buf0.copy()
        m.sgd_update(q, g, buf, 0.0, 0.9, 0.1, 0.01, False, False, hyper=h(0.1))
        return q, buf

    def adam_dev(m: Any) -> tuple:
        q, s1, s2 = p.copy(), np.zeros_like(p), np.zeros_like(p)
        m.adam_update(q, g, s1, s2, None, 0.0, 0.9, 0.999, 1e-8, 0.01, 1, False, False,
                      hyper=h(1e-3, 0.271, 0.00299))  # fmt: skip
        return q, s1, s2

    def rms_dev(m: Any) -> tuple:
        q, sq = p.copy(), np.zeros_like(p)
        m.rmsprop_update(q, g, sq, None, None, 0.0, 0.99, 1e-8, 0.01, 0.0, False, hyper=h(0.01))
        return q, sq

    def adagrad_dev(m: Any) -> tuple:
        q, acc = p.copy(), np.full_like(p, 0.1)
        m.adagrad_update(q, g, acc, 0.0, 0.0, 0.02, 1e-10, 2, hyper=h(0.0098))
        return q, acc

    def nadam_dev(m: Any) -> tuple:
        q, s1, s2 = p.copy(), np.zeros_like(p), np.zeros_like(p)
        m.nadam_update(q, g, s1, s2, 0.0, 0.9, 0.999, 1e-8, 0.01, 0.45, 0.46, 0.45, 1, True,
                       hyper=h(2e-3, 0.001, 0.0011, 0.0012))  # fmt: skip
        return q, s1, s2

    yield "optim", "sgd dev", sgd_dev
    yield "optim", "adam dev", adam_dev
    yield "optim", "rmsprop dev", rms_dev
    yield "optim", "adagrad dev", adagrad_dev
    yield "optim", "nadam dev", nadam_dev
    dy23, dy34 = a(2, 3, 2, 3), a(2, 3, 3, 4)
    yield "pool", "max fwd", lambda m: m.maxpool2d_forward(x4, 2, 2, 2, 2, 0, 0, 1, 1, 2, 3)
    yield (
        "pool",
        "max bwd",
        lambda m: m.maxpool2d_backward(
            dy23,
            np.asarray(m.maxpool2d_forward(x4, 2, 2, 2, 2, 0, 0, 1, 1, 2, 3)[1]),
            5,
            6,
            2,
            2,
            2,
            2,
            0,
            0,
            1,
            1,
        ),
    )
    yield "pool", "avg fwd", lambda m: m.avgpool2d_forward(x4, 2, 2, 2, 2, 1, 1, 3, 4, True, 0)
    yield "pool", "avg bwd", lambda m: m.avgpool2d_backward(dy34, 5, 6, 2, 2, 2, 2, 1, 1, False, 0)
    yield "pool", "adaptive avg fwd", lambda m: m.adaptive_avgpool2d_forward(x4, 3, 4)
    yield "pool", "adaptive avg bwd", lambda m: m.adaptive_avgpool2d_backward(dy34, 5, 6)
    yield "pool", "adaptive max fwd", lambda m: m.adaptive_maxpool2d_forward(x4, 3, 4)
    yield (
        "pool",
        "adaptive max bwd",
        lambda m: m.adaptive_maxpool2d_backward(
            dy34, np.asarray(m.adaptive_maxpool2d_forward(x4, 3, 4)[1]), 5, 6
        ),
    )
    if dt == np.float32:  # gemm: float32 / float16 / bfloat16 inputs, float32 out, one kernel each
        ga, gb, gbias = a(19, 11), a(13, 11), a(13)
        from gpucnn.backend.precision import bf16_bits  # bf16 operands as uint16 bit patterns

        for prec in ("fp32", "tf32", "fp16", "bf16"):
            cast = bf16_bits if prec == "bf16" else (lambda v, p=prec: v.astype(
                np.float16 if p == "fp16" else np.float32))  # fmt: skip
            yield (
                "gemm",
                prec,
                lambda m, p=prec, f=cast: m.gemm(
                    f(ga), f(gb), trans_b=True, precision=p, bias=gbias, relu=True
                ),
            )
    yield "random", "uniform", lambda m: m.random_uniform(33, dt, 7, 8)
    logits, tgt = a(6, 11), np.array([0, 3, 10, 2, -100, 5], dtype=np.int64)
    yield "softmax_xent", "softmax", lambda m: m.softmax_forward(logits)
    yield "softmax_xent", "log_softmax", lambda m: m.log_softmax_forward(logits)
    yield (
        "softmax_xent",
        "softmax bwd",
        lambda m: m.softmax_backward(np.asarray(m.softmax_forward(logits)), logits * 0.1),
    )
    yield (
        "softmax_xent",
        "log_softmax bwd",
        lambda m: m.log_softmax_backward(np.asarray(m.log_softmax_forward(logits)), logits * 0.1),
    )
    yield "softmax_xent", "xent fwd", lambda m: m.softmax_xent_forward(logits, tgt, None, -100, 0.1)
    yield (
        "softmax_xent",
        "xent bwd",
        lambda m: m.softmax_xent_backward(
            np.asarray(m.log_softmax_forward(logits)), tgt, None, np.ones(6, dt), -100, 0.1
        ),
    )


class RecordingRuntime(KernelRuntime):
    """The emulated runtime, remembering every kernel name it hands out."""

    def __init__(self, emulator: Any) -> None:
        base = emulator.emulated_runtime(grid_cap=3, block=64)
        super().__init__(base.xp, base._get_kernel, grid_cap=3, block=64, name="recording")
        self.seen: set[str] = set()

    def kernel(self, family: str, name: str, defines: Any = None) -> Any:
        self.seen.add(name)
        return super().kernel(family, name, defines)


def test_every_declared_kernel_is_launched_and_matches_its_twin(emulator, kernel_parity) -> None:
    rt = RecordingRuntime(emulator)
    for dt in DTYPES:
        tol = 1e-5 if dt == np.float32 else 1e-12
        for family, label, call in _cases(dt):
            kernel_parity(
                family, call, launch=rt, rtol=tol, atol=tol, label=f"{label} {np.dtype(dt)}"
            )
    declared = declared_kernels(emulator)
    assert declared, "no kernels found in cuda/"
    assert rt.seen - declared == set(), "launchers name kernels that no .cu declares"
    assert declared - rt.seen == set(), "kernels in cuda/ that no launcher reaches"


@pytest.mark.parametrize(
    "module,call,op",
    [
        ("activation", lambda m, x: m.activation_forward(x, "relu", 0.0), "relu"),
        ("im2col", lambda m, x: m.im2col(x, 2, 2, 1, 1, 0, 0, 1, 1, 4, 5), "im2col"),
        ("pool", lambda m, x: m.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, 1, 1, 2, 3), "maxpool"),
    ],
)
def test_float16_reaching_a_launcher_is_a_clear_type_error(
    emulate: Callable, module: str, call: Callable, op: str
) -> None:
    """No kernel of ours takes float16 yet: say so, naming the op, instead of a missing kernel."""
    m = importlib.import_module(f"gpucnn.backend.cuda_ops.{module}")
    x = np.ones((2, 3, 5, 6), dtype=np.float16)
    with emulate():
        with pytest.raises(TypeError, match="float16") as exc:
            call(m, x)
    msg = str(exc.value)
    assert msg.startswith(op) and "float32 or float64" in msg, msg
