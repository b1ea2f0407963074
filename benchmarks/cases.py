"""Benchmark cases: each builds a gpucnn step and its PyTorch twin on the same device.

A :class:`Case` holds the shapes, the work (FLOPs and/or bytes moved, images per call) and two
builders; a builder allocates inputs (not timed) and returns the zero-argument callable that is
timed. Shapes of every case are stated in its ``params``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks import models as bm
from benchmarks.models import Missing

__all__ = ["Case", "Ctx", "build_cases", "GROUPS", "Missing"]

GROUPS = ("conv", "pool", "gemm", "xent", "optim", "train", "loader")


@dataclass
class Ctx:
    """Where a case runs: ``device`` ``"cpu"``/``"cuda"``, the gpucnn backend name, modules."""

    device: str
    backend: str  # "numpy" or "cuda"
    torch: Any | None
    quick: bool
    seed: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    @property
    def tdev(self) -> str:
        return "cuda" if self.device == "cuda" else "cpu"

    def randn(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape, dtype=np.float32)

    def g(self, arr: np.ndarray, grad: bool = False) -> Any:
        """``arr`` as a gpucnn tensor on this context's backend."""
        import gpucnn

        return gpucnn.Tensor(gpucnn.backend.to_backend(np.ascontiguousarray(arr), self.backend),
                             requires_grad=grad)

    def t(self, arr: np.ndarray, grad: bool = False) -> Any:
        """``arr`` as a torch tensor on this context's device."""
        return self.torch.from_numpy(np.ascontiguousarray(arr)).to(self.tdev).requires_grad_(grad)

    def xp(self) -> Any:
        import gpucnn

        return gpucnn.backend.get_backend(self.backend).xp


@dataclass
class Case:
    """One benchmark: ``group``/``name``, shapes, work, and the two step builders."""

    group: str
    name: str
    params: dict[str, Any]
    build_gpucnn: Callable[[], Callable[[], Any]]
    build_torch: Callable[[], Callable[[], Any]] | None
    flops: float | None = None
    bytes: float | None = None
    images: int | None = None
    repeats: int = 5
    warmup: int = 1
    # optional: builder of a plain GEMM with the same FLOPs (xp.matmul: BLAS / cuBLAS)
    build_gemm_equiv: Callable[[], Callable[[], Any]] | None = None
    gemm_equiv_shape: tuple[int, int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _F(name: str) -> Any:
    import gpucnn.functional as F

    fn = getattr(F, name, None)
    if fn is None:
        raise Missing(f"gpucnn.functional.{name} does not exist yet")
    return fn


def _clear(*tensors: Any) -> None:
    for t in tensors:
        t.grad = None


# ---------------------------------------------------------------------------- conv
def _conv_out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


def _conv_cases(ctx: Ctx, reps: int) -> list[Case]:
    dev = ctx.device
    q = ctx.quick
    b_le = 4 if q else 128
    b_r20 = 4 if q else (256 if dev == "cuda" else 128)
    b_r18 = 2 if q else (256 if dev == "cuda" else 64)
    # (label, N, C, H, O, k, stride, pad)
    shapes = [
        ("lenet5.conv1", b_le, 1, 28, 6, 5, 1, 2),
        ("lenet5.conv2", b_le, 6, 14, 16, 5, 1, 0),
        ("resnet20.16x32", b_r20, 16, 32, 16, 3, 1, 1),
        ("resnet20.16to32s2", b_r20, 16, 32, 32, 3, 2, 1),
        ("resnet20.32x16", b_r20, 32, 16, 32, 3, 1, 1),
        ("resnet20.32to64s2", b_r20, 32, 16, 64, 3, 2, 1),
        ("resnet20.64x8", b_r20, 64, 8, 64, 3, 1, 1),
        ("resnet18c.64x32", b_r18, 64, 32, 64, 3, 1, 1),
        ("resnet18c.64to128s2", b_r18, 64, 32, 128, 3, 2, 1),
        ("resnet18c.128x16", b_r18, 128, 16, 128, 3, 1, 1),
        ("resnet18c.256x8", b_r18, 256, 8, 256, 3, 1, 1),
        ("resnet18c.512x4", b_r18, 512, 4, 512, 3, 1, 1),
    ]
    if q:  # smoke-test subset: one shape per family
        shapes = [shapes[i] for i in (1, 2, 3, 8)]
    if dev == "cuda" and not q:  # ImageNet-style (224 input) ResNet-18 stage shapes, batch 64
        shapes += [
            ("resnet18i.64x56", 64, 64, 56, 64, 3, 1, 1),
            ("resnet18i.128x28", 64, 128, 28, 128, 3, 1, 1),
            ("resnet18i.256x14", 64, 256, 14, 256, 3, 1, 1),
            ("resnet18i.512x7", 64, 512, 7, 512, 3, 1, 1),
        ]
    cases: list[Case] = []
    for label, n, c, h, o, k, s, p in shapes:
        oh = _conv_out(h, k, s, p)
        fl = 2.0 * n * o * oh * oh * c * k * k
        params = {"N": n, "C": c, "H": h, "W": h, "O": o, "k": k, "stride": s, "pad": p,
                  "OH": oh, "OW": oh}
        gemm_shape = (o, c * k * k, n * oh * oh)  # (M, K, N) of the equivalent GEMM
        for mode in ("fwd", "fwdbwd"):
            cases.append(_conv_case(ctx, label, mode, params, fl, reps, gemm_shape))
            # Our implicit-GEMM kernels (cuda/conv_igemm.cu) beside im2col + cuBLAS at the
            # ResNet-18 shapes: the measurement a rule in cuda_ops/conv.py's
            # conv2d_algorithm must cite. CUDA only (there is no NumPy igemm).
            # Forward also with the 8x8-per-thread tiles (cuda_ops/conv_igemm.py TILES).
            if ctx.backend == "cuda" and label.startswith("resnet18"):
                for tile in (None, "64x128", "128x128") if mode == "fwd" else (None,):
                    cases.append(_conv_case(ctx, label, mode, params, fl, reps, gemm_shape,
                                            algorithm="igemm", tile=tile))  # fmt: skip
        # Our tensor-core implicit-GEMM forward (cuda/conv_igemm_tc.cu) in TF32 and BF16 beside
        # cuBLAS TF32 GEMM of the same FLOPs (the gemm_equiv column, conv_over_gemm): targets
        # "TF32 conv >= 60% of cuBLAS TF32 GEMM" and "BF16 >= 1.6x our TF32" (compare the
        # conv2d_igemm_tc_fwd rows of one shape). CUDA only.
        if ctx.backend == "cuda" and label.startswith("resnet18"):
            for prec in ("tf32", "bf16"):
                for tile in (None, "128x128"):
                    cases.append(_conv_tc_case(ctx, label, params, fl, reps, gemm_shape, prec,
                                               tile))  # fmt: skip
    return cases


def _conv_tc_case(ctx: Ctx, label: str, p: dict, fl: float, reps: int,
                  gemm_shape: tuple[int, int, int], prec: str, tile: str | None) -> Case:
    """Forward of ``conv2d_igemm_forward(precision=prec)`` (the backend primitive, bias fused)
    at one shape and tensor-core tile; ``gemm_equiv``: cuBLAS float32 GEMM with TF32 on."""
    n, c, h, o, k, s, pad = p["N"], p["C"], p["H"], p["O"], p["k"], p["stride"], p["pad"]
    x0, w0, b0 = ctx.randn(n, c, h, h), ctx.randn(o, c, k, k) * 0.1, ctx.randn(o)

    def build_g() -> Callable[[], Any]:
        import contextlib
        import importlib

        import gpucnn
        from gpucnn.backend.geometry import Conv2dGeometry

        igemm = importlib.import_module("gpucnn.backend.cuda_ops.conv_igemm")
        geom = Conv2dGeometry.create((n, c, h, h), (o, c, k, k), stride=s, padding=pad)
        dt = _gemm_dtype(prec)
        to = gpucnn.backend.to_backend
        x = to(np.ascontiguousarray(x0.astype(dt)), ctx.backend)
        w = to(np.ascontiguousarray(w0.astype(dt)), ctx.backend)
        b = to(np.ascontiguousarray(b0.astype(np.float32)), ctx.backend)

        def step() -> Any:
            with igemm.use_tc_tile(tile) if tile else contextlib.nullcontext():
                return igemm.conv2d_igemm_forward(x, w, b, geom, precision=prec)
        return step

    def build_t() -> Callable[[], Any]:  # cuDNN in the same format (TF32: allow_tf32's default)
        torch = ctx.torch
        tdt = getattr(torch, "bfloat16" if prec == "bf16" else "float32")
        x, w, b = (ctx.t(a).to(tdt) for a in (x0, w0, b0))

        def step() -> Any:
            with torch.no_grad():
                return torch.nn.functional.conv2d(x, w, b, stride=s, padding=pad)
        return step

    def build_gemm_tf32() -> Callable[[], Any]:
        import gpucnn

        xp = ctx.xp()
        m, kk, nn = gemm_shape
        a, bb = xp.asarray(ctx.randn(m, kk)), xp.asarray(ctx.randn(kk, nn))

        def step() -> Any:
            prev = gpucnn.backend.tf32_enabled()
            gpucnn.backend.set_tf32(True)
            try:
                return xp.matmul(a, bb)
            finally:
                gpucnn.backend.set_tf32(prev)
        return step

    return Case(
        group="conv",
        name=f"conv2d_igemm_tc_fwd[{label},{prec}{',' + tile if tile else ''}]",
        params=dict(p, precision=prec, algorithm="igemm_tc", **({"tile": tile} if tile else {})),
        build_gpucnn=build_g, build_torch=build_t, flops=fl, images=n, repeats=reps,
        build_gemm_equiv=build_gemm_tf32, gemm_equiv_shape=gemm_shape,
        extra={"label": label, "mode": "fwd", "algorithm": "igemm_tc", "precision": prec,
               "tile": tile or "default", "gemm_equiv": "cuBLAS float32 GEMM, TF32 on"},
    )


def _with_conv_algorithm(
    algorithm: str | None, tile: str | None, step: Callable[[], Any]
) -> Callable[[], Any]:
    """``step`` run with the CUDA conv algorithm ``algorithm`` and the implicit-GEMM tile
    ``tile`` (``None``: unchanged / the default tile)."""
    if algorithm is None:
        return step
    import contextlib
    import importlib

    cconv = importlib.import_module("gpucnn.backend.cuda_ops.conv")
    igemm = importlib.import_module("gpucnn.backend.cuda_ops.conv_igemm")

    def run() -> Any:
        cconv.set_conv_algorithm(algorithm)
        try:
            with igemm.use_tile(tile) if tile else contextlib.nullcontext():
                return step()
        finally:
            cconv.set_conv_algorithm(None)

    return run


def _conv_case(ctx: Ctx, label: str, mode: str, p: dict, fl: float, reps: int,
               gemm_shape: tuple[int, int, int], algorithm: str | None = None,
               tile: str | None = None) -> Case:
    n, c, h, o, k, s, pad = p["N"], p["C"], p["H"], p["O"], p["k"], p["stride"], p["pad"]
    x0, w0, b0 = ctx.randn(n, c, h, h), ctx.randn(o, c, k, k) * 0.1, ctx.randn(o)
    gy0 = ctx.randn(n, o, p["OH"], p["OW"])
    bwd = mode == "fwdbwd"

    def build_g() -> Callable[[], Any]:
        import gpucnn

        conv2d = _F("conv2d")
        x, w, b = ctx.g(x0, bwd), ctx.g(w0, bwd), ctx.g(b0, bwd)
        gy = ctx.g(gy0)
        if not bwd:
            def step() -> Any:
                with gpucnn.no_grad():
                    return conv2d(x, w, b, stride=s, padding=pad)
            return _with_conv_algorithm(algorithm, tile, step)

        def step_b() -> Any:
            _clear(x, w, b)
            y = conv2d(x, w, b, stride=s, padding=pad)
            y.backward(gy)
        return _with_conv_algorithm(algorithm, tile, step_b)

    def build_t() -> Callable[[], Any]:
        torch = ctx.torch
        tF = torch.nn.functional
        x, w, b = ctx.t(x0, bwd), ctx.t(w0, bwd), ctx.t(b0, bwd)
        gy = ctx.t(gy0)
        if not bwd:
            def step() -> Any:
                with torch.no_grad():
                    return tF.conv2d(x, w, b, stride=s, padding=pad)
            return step

        def step_b() -> Any:
            _clear(x, w, b)
            y = tF.conv2d(x, w, b, stride=s, padding=pad)
            y.backward(gy)
        return step_b

    def build_gemm() -> Callable[[], Any]:
        xp = ctx.xp()
        m, kk, nn = gemm_shape
        a = xp.asarray(ctx.randn(m, kk))
        bb = xp.asarray(ctx.randn(kk, nn))
        return lambda: xp.matmul(a, bb)

    return Case(
        group="conv",
        name=f"conv2d_{'igemm_' if algorithm else ''}{mode}[{label}{',' + tile if tile else ''}]",
        params=dict(p, **({"algorithm": algorithm} if algorithm else {}),
                    **({"tile": tile} if tile else {})),
        build_gpucnn=build_g,
        build_torch=build_t, flops=fl * (3 if bwd else 1), images=n, repeats=reps,
        build_gemm_equiv=None if bwd else build_gemm, gemm_equiv_shape=None if bwd else gemm_shape,
        extra={"label": label, "mode": mode, "algorithm": algorithm or "default",
               "tile": tile or "default"},
    )


# ---------------------------------------------------------------------------- pooling
def _pool_cases(ctx: Ctx, reps: int) -> list[Case]:
    q = ctx.quick
    big = 256 if ctx.device == "cuda" else 64
    shapes = [  # (label, N, C, H, k, stride, pad)
        ("lenet5.pool1", 4 if q else 128, 6, 28, 2, 2, 0),
        ("resnet18i.stem_pool", 2 if q else big // 4, 64, 112, 3, 2, 1),
        ("cifar.64x32", 2 if q else big, 64, 32, 2, 2, 0),
    ]
    if q:
        shapes = shapes[:1]
    cases = []
    for kind in ("max", "avg"):
        for label, n, c, h, k, s, pad in shapes:
            oh = _conv_out(h, k, s, pad)
            nbytes = 4.0 * n * c * (h * h + oh * oh)  # read x, write y (forward)
            for mode in ("fwd", "fwdbwd"):
                cases.append(_pool_case(ctx, kind, label, mode, (n, c, h, k, s, pad, oh),
                                        nbytes * (3 if mode == "fwdbwd" else 1), reps))
    return cases


def _pool_case(ctx: Ctx, kind: str, label: str, mode: str, shp: tuple, nbytes: float,
               reps: int) -> Case:
    n, c, h, k, s, pad, oh = shp
    # tie-free input (max pooling argmax is then unique)
    x0 = ctx.rng.permutation(n * c * h * h).astype(np.float32).reshape(n, c, h, h)
    gy0 = ctx.randn(n, c, oh, oh)
    bwd = mode == "fwdbwd"
    fname = f"{kind}_pool2d"

    def build_g() -> Callable[[], Any]:
        import gpucnn

        fn = _F(fname)
        x, gy = ctx.g(x0, bwd), ctx.g(gy0)
        if not bwd:
            def step() -> Any:
                with gpucnn.no_grad():
                    return fn(x, k, s, pad)
            return step

        def step_b() -> Any:
            _clear(x)
            fn(x, k, s, pad).backward(gy)
        return step_b

    def build_t() -> Callable[[], Any]:
        torch = ctx.torch
        fn = getattr(torch.nn.functional, fname)
        x, gy = ctx.t(x0, bwd), ctx.t(gy0)
        if not bwd:
            def step() -> Any:
                with torch.no_grad():
                    return fn(x, k, s, pad)
            return step

        def step_b() -> Any:
            _clear(x)
            fn(x, k, s, pad).backward(gy)
        return step_b

    params = {"N": n, "C": c, "H": h, "W": h, "k": k, "stride": s, "pad": pad, "OH": oh}
    return Case(group="pool", name=f"{fname}_{mode}[{label}]", params=params,
                build_gpucnn=build_g, build_torch=build_t, bytes=nbytes, images=n,
                repeats=reps, extra={"label": label, "mode": mode})


# ---------------------------------------------------------------------------- GEMM
def _gemm_cases(ctx: Ctx, reps: int) -> list[Case]:
    sizes = (64,) if ctx.quick else (1024, 2048, 4096)
    cases = []
    for n in sizes:
        a0, b0 = ctx.randn(n, n), ctx.randn(n, n)

        def build_g(a0: np.ndarray = a0, b0: np.ndarray = b0) -> Callable[[], Any]:
            import gpucnn

            matmul = _F("matmul")
            a, b = ctx.g(a0), ctx.g(b0)

            def step() -> Any:
                with gpucnn.no_grad():
                    return matmul(a, b)
            return step

        def build_t(a0: np.ndarray = a0, b0: np.ndarray = b0) -> Callable[[], Any]:
            a, b = ctx.t(a0), ctx.t(b0)
            return lambda: ctx.torch.mm(a, b)

        r = reps if (n < 4096 or ctx.device == "cuda") else max(1, min(reps, 2))
        cases.append(Case(group="gemm", name=f"matmul[{n}x{n}x{n}]",
                          params={"M": n, "K": n, "N": n, "dtype": "float32"},
                          build_gpucnn=build_g, build_torch=build_t, flops=2.0 * n**3,
                          bytes=12.0 * n * n, repeats=r))
    if ctx.backend == "cuda":  # our kernels (cuda/gemm.cu) per precision, beside cuBLAS
        cases += _our_gemm_cases(ctx, reps)
    return cases


_GEMM_DTYPES = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _gemm_dtype(prec: str) -> Any:
    if _GEMM_DTYPES[prec] != "bfloat16":
        return np.dtype(_GEMM_DTYPES[prec])
    try:
        import ml_dtypes
    except ImportError as exc:
        raise Missing("bf16 GEMM needs ml_dtypes") from exc
    return ml_dtypes.bfloat16


def _our_gemm_cases(ctx: Ctx, reps: int) -> list[Case]:
    """``backend.gemm`` (ours, cuda/gemm.cu: FP32 SIMT, TF32/FP16/BF16 mma.sync) vs cuBLAS
    (``xp.matmul`` in the same dtype: the ``gemm_equiv`` column; FP32 cuBLAS follows
    ``CUPY_TF32``) and ``torch.mm`` in the same dtype (none for TF32)."""
    sizes = (64,) if ctx.quick else (1024, 2048, 4096)
    cases = []
    for n in sizes:
        a0, b0 = ctx.randn(n, n), ctx.randn(n, n)
        for prec in ("fp32", "tf32", "fp16", "bf16"):

            def arrays(prec: str = prec, a0: np.ndarray = a0, b0: np.ndarray = b0) -> tuple:
                import gpucnn

                dt = _gemm_dtype(prec)
                to = gpucnn.backend.to_backend
                return (to(np.ascontiguousarray(a0.astype(dt)), ctx.backend),
                        to(np.ascontiguousarray(b0.astype(dt)), ctx.backend))

            def build_g(prec: str = prec, arrays: Callable = arrays) -> Callable[[], Any]:
                import gpucnn

                be = gpucnn.backend.get_backend(ctx.backend)
                if not hasattr(be, "gemm"):
                    raise Missing("backend primitive gemm does not exist yet")
                a, b = arrays()
                return lambda: be.gemm(a, b, precision=prec)

            def build_cublas(arrays: Callable = arrays) -> Callable[[], Any]:
                a, b = arrays()
                xp = ctx.xp()
                return lambda: xp.matmul(a, b)

            def build_t(prec: str = prec, a0: np.ndarray = a0,
                        b0: np.ndarray = b0) -> Callable[[], Any]:
                tdt = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[prec]
                a = ctx.t(a0).to(getattr(ctx.torch, tdt))
                b = ctx.t(b0).to(getattr(ctx.torch, tdt))
                return lambda: ctx.torch.mm(a, b)

            cases.append(Case(
                group="gemm", name=f"gemm_ours_{prec}[{n}x{n}x{n}]",
                params={"M": n, "K": n, "N": n, "precision": prec, "dtype": _GEMM_DTYPES[prec]},
                build_gpucnn=build_g, build_torch=None if prec == "tf32" else build_t,
                flops=2.0 * n**3, repeats=reps, build_gemm_equiv=build_cublas,
                gemm_equiv_shape=(n, n, n), extra={"precision": prec}))
    return cases


# ---------------------------------------------------------------------------- softmax-xent
def _xent_cases(ctx: Ctx, reps: int) -> list[Case]:
    shapes = [(64, 10), (64, 1000)] if ctx.quick else [
        (256, 10), (4096, 10), (256, 1000), (4096, 1000)]
    cases = []
    for n, c in shapes:
        z0 = ctx.randn(n, c)
        y0 = ctx.rng.integers(0, c, size=n).astype(np.int64)

        def build_g(z0: np.ndarray = z0, y0: np.ndarray = y0) -> Callable[[], Any]:
            import gpucnn

            ce = _F("cross_entropy")
            z = ctx.g(z0, True)
            y = gpucnn.Tensor(gpucnn.backend.to_backend(y0, ctx.backend))

            def step() -> Any:
                _clear(z)
                ce(z, y).backward()
            return step

        def build_t(z0: np.ndarray = z0, y0: np.ndarray = y0) -> Callable[[], Any]:
            z = ctx.t(z0, True)
            y = ctx.torch.from_numpy(y0).to(ctx.tdev)
            ce = ctx.torch.nn.functional.cross_entropy

            def step() -> Any:
                _clear(z)
                ce(z, y).backward()
            return step

        # forward reads logits, backward writes dlogits (plus re-reading): ~3 passes
        cases.append(Case(group="xent", name=f"cross_entropy_fwdbwd[N={n},C={c}]",
                          params={"N": n, "C": c}, build_gpucnn=build_g, build_torch=build_t,
                          bytes=3.0 * 4 * n * c, repeats=reps))
    return cases


# ---------------------------------------------------------------------------- optimizers
def _optim_cases(ctx: Ctx, reps: int) -> list[Case]:
    name = "resnet20" if ctx.quick else "resnet18"
    twin = bm.torch_model(name)
    shapes = [tuple(p.shape) for p in twin.parameters()]
    total = int(sum(int(np.prod(s)) for s in shapes))
    arrays = [(ctx.randn(*s), ctx.randn(*s)) for s in shapes]
    cases = []
    for opt in ("sgd_momentum", "adam"):
        def build_g(opt: str = opt) -> Callable[[], Any]:
            import gpucnn.optim as go

            ps = []
            for w, g in arrays:
                p = ctx.g(w, True)
                p.grad = ctx.g(g)
                ps.append(p)
            o = (go.SGD(ps, lr=0.01, momentum=0.9) if opt == "sgd_momentum"
                 else go.Adam(ps, lr=1e-3))
            return o.step

        def build_t(opt: str = opt) -> Callable[[], Any]:
            torch = ctx.torch
            ps = []
            for w, g in arrays:
                p = ctx.t(w, True)
                p.grad = ctx.t(g)
                ps.append(p)
            o = (torch.optim.SGD(ps, lr=0.01, momentum=0.9) if opt == "sgd_momentum"
                 else torch.optim.Adam(ps, lr=1e-3))
            return o.step

        per = 5 if opt == "sgd_momentum" else 7  # float32 arrays read+written per element
        cases.append(Case(group="optim", name=f"{opt}_step[{name} params]",
                          params={"tensors": len(shapes), "elements": total, "model": name},
                          build_gpucnn=build_g, build_torch=build_t, bytes=4.0 * per * total,
                          flops=(3.0 if opt == "sgd_momentum" else 12.0) * total,
                          repeats=reps))
    return cases


# ---------------------------------------------------------------------------- training step
def _train_cases(ctx: Ctx, reps: int, prefer_library: bool) -> list[Case]:
    dev = ctx.device
    q = ctx.quick
    cfg = [  # (model, batch, repeats)
        ("lenet5", 4 if q else 128, reps),
        ("resnet20", 2 if q else (256 if dev == "cuda" else 128), reps if dev == "cuda" else
         max(1, min(reps, 3))),
        ("resnet18", 1 if q else (256 if dev == "cuda" else 32), reps if dev == "cuda" else
         max(1, min(reps, 2))),
    ]
    cases = []
    for name, batch, r in cfg:
        cases.append(_train_case(ctx, name, batch, r, prefer_library))
    from benchmarks.graph_cases import graph_train_cases  # GPU only: graph, TF32, BF16 steps

    return cases + graph_train_cases(ctx, reps, Case, prefer_library)


def _train_case(ctx: Ctx, name: str, batch: int, reps: int, prefer_library: bool) -> Case:
    shape = bm.INPUT_SHAPES[name]
    x0 = ctx.randn(batch, *shape)
    y0 = ctx.rng.integers(0, 10, size=batch).astype(np.int64)
    ctx.torch.manual_seed(ctx.seed)
    twin_cpu = bm.torch_model(name)
    fwd = bm.forward_flops(twin_cpu, (1, *shape)) * batch
    n_params = int(sum(p.numel() for p in twin_cpu.parameters()))
    case = Case(group="train", name=f"train_step[{name},batch={batch}]",
                params={"model": name, "batch": batch, "input": list(shape),
                        "parameters": n_params, "optimizer": "SGD(lr=0.01, momentum=0.9)",
                        "loss": "cross_entropy"},
                build_gpucnn=lambda: None, build_torch=None, flops=3.0 * fwd, images=batch,
                repeats=reps, extra={"forward_flops": fwd})

    def build_g() -> Callable[[], Any]:
        import gpucnn
        import gpucnn.optim as go

        ce = _F("cross_entropy")
        net, source = bm.gpucnn_model(name, twin_cpu, ctx.backend, prefer_library)
        case.extra["gpucnn_model"] = source
        x = ctx.g(x0)
        y = gpucnn.Tensor(gpucnn.backend.to_backend(y0, ctx.backend))
        opt = go.SGD(list(net.parameters()), lr=0.01, momentum=0.9)

        def step() -> Any:
            opt.zero_grad()
            loss = ce(net(x), y)
            loss.backward()
            opt.step()
            return loss
        return step

    def build_t() -> Callable[[], Any]:
        torch = ctx.torch
        net = bm.torch_model(name)
        net.load_state_dict(twin_cpu.state_dict())
        net = net.to(ctx.tdev).train()
        x, y = ctx.t(x0), torch.from_numpy(y0).to(ctx.tdev)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        ce = torch.nn.functional.cross_entropy

        def step() -> Any:
            opt.zero_grad()
            loss = ce(net(x), y)
            loss.backward()
            opt.step()
            return loss
        return step

    case.build_gpucnn = build_g
    case.build_torch = build_t
    return case


def build_cases(ctx: Ctx, only: set[str] | None, repeats: int | None,
                prefer_library: bool = True) -> list[Case]:
    """Every case of the groups in ``only`` (all when None); ``repeats`` overrides defaults."""
    cpu = ctx.device != "cuda"
    default = {"conv": 3 if cpu else 20, "pool": 5 if cpu else 50, "gemm": 3 if cpu else 20,
               "xent": 10 if cpu else 50, "optim": 3 if cpu else 20, "train": 5 if cpu else 20,
               "loader": 7 if cpu else 5}
    makers = {"conv": _conv_cases, "pool": _pool_cases, "gemm": _gemm_cases,
              "xent": _xent_cases, "optim": _optim_cases}
    out: list[Case] = []
    for group in GROUPS:
        if only and group not in only:
            continue
        r = repeats if repeats is not None else default[group]
        if group == "train":
            out += _train_cases(ctx, r, prefer_library)
        elif group == "loader":  # DataLoader throughput and loader-fed training (loader.py)
            from benchmarks.loader import loader_cases

            out += loader_cases(ctx, r)
        else:
            out += makers[group](ctx, r)
    return out
