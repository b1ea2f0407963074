"""Our GEMM kernels (cuda/gemm.cu) and the tensor-core steps they build on (cuda/mma.cuh).

Three layers:

- The MMA steps, one warp under the host emulator: the test builds every lane's fragment
  registers from its own reading of the PTX ISA layouts ("Matrix Fragments for mma.m16n8k8 /
  m16n8k16"), and maps the D registers back the same way; the result must equal NumPy on the
  same rounded inputs. This is the test of the fragment index math (the emulated MMA gathers
  other lanes' registers by those layouts). The fragment loads must build the same registers.
- The GEMM kernels against the NumPy twin and against a sequential float32 reference: under
  the emulator each output is a float32 sum over k in ascending order (products of
  tf32/fp16/bf16 values are exact in float32), so the kernels equal that reference BIT FOR BIT;
  against the twin (float64 accumulation) they agree within ``K * 2**-24 * (|A| @ |B|)``.
- Against the float32 product of the UNROUNDED inputs, within the input rounding:
  elementwise ``|err| <= (2u + K * 2**-24) * (|A| @ |B|) + K * 2**-24``, with ``u = 2**-11``
  for TF32 and FP16, ``2**-8`` for BF16, ``0`` for FP32 (the tolerances the tensor-core GEMMs
  promise; a real GPU adds in another order, inside the same bound).

Shapes cover every tail (M, N, K below, at and above a tile), four transposes, alpha/beta,
bias and ReLU, capped grids (the tile-stride loop) and several tile shapes (compile-time
defines). The NVRTC build of cuda/gemm.cu is tests/test_nvrtc.py's; the probe file's is here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpucnn.backend.precision import (
    bf16_bits,
    bf16_bits_to_float32,
    round_bf16,
    round_fp16,
    round_tf32,
)

try:  # optional: bfloat16 operands are uint16 bit patterns without it
    import ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    ml_dtypes = None
PROBES = Path(__file__).resolve().parent / "emulator_kernels" / "mma_unit.cu"
CUDA_DIR = Path(__file__).resolve().parent.parent / "cuda"

PREC_DTYPE = {"fp32": np.float32, "tf32": np.float32, "fp16": np.float16, "bf16": np.uint16}
UNIT_ROUND = {"fp32": 0.0, "tf32": 2.0**-11, "fp16": 2.0**-11, "bf16": 2.0**-8}

# Tile shapes (compile-time defines). SIMT: BM x BN x BK, thread patch TM x TN.
SIMT_TILES = {
    "simt64": {"GEMM_BM": 64, "GEMM_BN": 64, "GEMM_BK": 8, "GEMM_TM": 4, "GEMM_TN": 4},
    "simt32x16": {"GEMM_BM": 32, "GEMM_BN": 16, "GEMM_BK": 4, "GEMM_TM": 2, "GEMM_TN": 4},
}
TC_TILES = {
    "tc2x2w32": {"GEMM_TC_WARPS_M": 2, "GEMM_TC_WARPS_N": 2, "GEMM_TC_WM": 32,
                 "GEMM_TC_WN": 32, "GEMM_TC_BK": 32},
    "tc1x2w16": {"GEMM_TC_WARPS_M": 1, "GEMM_TC_WARPS_N": 2, "GEMM_TC_WM": 16,
                 "GEMM_TC_WN": 16, "GEMM_TC_BK": 16},
    "tc2x1w32x8": {"GEMM_TC_WARPS_M": 2, "GEMM_TC_WARPS_N": 1, "GEMM_TC_WM": 32,
                   "GEMM_TC_WN": 8, "GEMM_TC_BK": 16},
}  # fmt: skip
# (M, N, K): one partial tile; several tiles with tails everywhere; exact tiles; tiny; K = 0.
SHAPES = [(37, 45, 29), (70, 90, 50), (64, 64, 32), (1, 1, 1), (5, 3, 0)]


# ------------------------------------------------------------------ helpers


def _lanes() -> tuple[np.ndarray, np.ndarray]:
    lane = np.arange(32)
    return lane >> 2, lane & 3


def _f32_bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def _h_bits(x: np.ndarray, kind: str) -> np.ndarray:
    """float32 values (already representable) as 16-bit patterns of ``kind``."""
    if kind == "f16":
        return np.asarray(x, dtype=np.float32).astype(np.float16).view(np.uint16).astype(np.uint32)
    return bf16_bits(x).astype(np.uint32)


def _c_regs(c: np.ndarray) -> np.ndarray:
    """(32, 4) accumulator registers of a 16x8 C: c_i at (g + 8*(i>>1), 2t + (i&1))."""
    g, t = _lanes()
    return np.stack([c[g + 8 * (i >> 1), 2 * t + (i & 1)] for i in range(4)], axis=1)


def _from_c_regs(d: np.ndarray) -> np.ndarray:
    g, t = _lanes()
    out = np.full((16, 8), np.nan, dtype=np.float32)
    for i in range(4):
        out[g + 8 * (i >> 1), 2 * t + (i & 1)] = d[:, i]
    return out


def _tf32_regs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PTX m16n8k8 .tf32: a0 (g,t) a1 (g+8,t) a2 (g,t+4) a3 (g+8,t+4); b0 (t,g) b1 (t+4,g)."""
    g, t = _lanes()
    ab, bb = _f32_bits(a), _f32_bits(b)
    ra = np.stack([ab[g, t], ab[g + 8, t], ab[g, t + 4], ab[g + 8, t + 4]], axis=1)
    rb = np.stack([bb[t, g], bb[t + 4, g]], axis=1)
    return ra.astype(np.uint32), rb.astype(np.uint32)


def _h_regs(a: np.ndarray, b: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """PTX m16n8k16 .f16/.bf16: A regs (g|g+8, 2t|2t+8 + {0,1}), B regs (2t|2t+8 + {0,1}, g);
    the lower-index element in the low half."""
    g, t = _lanes()
    ah, bh = _h_bits(a, kind), _h_bits(b, kind)

    def pack(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return (lo | (hi << 16)).astype(np.uint32)

    ra = np.stack(
        [
            pack(ah[g, 2 * t], ah[g, 2 * t + 1]),
            pack(ah[g + 8, 2 * t], ah[g + 8, 2 * t + 1]),
            pack(ah[g, 2 * t + 8], ah[g, 2 * t + 9]),
            pack(ah[g + 8, 2 * t + 8], ah[g + 8, 2 * t + 9]),
        ],
        axis=1,
    )
    rb = np.stack([pack(bh[2 * t, g], bh[2 * t + 1, g]), pack(bh[2 * t + 8, g], bh[2 * t + 9, g])],
                  axis=1)  # fmt: skip
    return ra, rb


def _sequential(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    """``c + sum over k of a[:, k] * b[k, :]``, float32, k ascending (what the emulator does)."""
    acc = np.zeros((a.shape[0], b.shape[1]), np.float32) if c is None else c.astype(np.float32)
    a, b = a.astype(np.float32), b.astype(np.float32)
    for k in range(a.shape[1]):
        acc = acc + a[:, k : k + 1] * b[k : k + 1, :]
    return acc


def _epilogue(acc: np.ndarray, alpha: float, beta: float, c: np.ndarray | None,
              bias: np.ndarray | None, relu: bool) -> np.ndarray:  # fmt: skip
    v = np.float32(alpha) * acc
    if beta != 0:
        v = v + np.float32(beta) * c
    if bias is not None:
        v = v + bias
    if relu:
        v = np.where(v > 0, v, np.float32(0))
    return v.astype(np.float32)


def _rounded(x32: np.ndarray, prec: str) -> np.ndarray:
    return {"fp32": lambda v: v, "tf32": round_tf32, "fp16": round_fp16, "bf16": round_bf16}[
        prec
    ](x32)


@pytest.fixture(scope="module")
def probes(emulator):  # noqa: ANN001, ANN201
    return emulator.EmulatedModule(PROBES)


@pytest.fixture
def tiles(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """``tiles(simt=None, tc=None)``: compile the launcher's kernels with these tile defines."""
    from gpucnn.backend.cuda_ops import gemm as cg

    def use(simt: str | None = None, tc: str | None = None) -> None:
        if simt:
            monkeypatch.setattr(cg, "SIMT_TILE", SIMT_TILES[simt])
        if tc:
            monkeypatch.setattr(cg, "TC_TILE", TC_TILES[tc])

    return use


# ------------------------------------------------------------------ number formats


def test_conversions_match_numpy_rounding(probes) -> None:  # noqa: ANN001
    r = np.random.default_rng(0)
    special = np.array(
        [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 6.1e-5, 6.0e-5, 3e-8,
         2.9802322e-08, 5.96e-8, 1e-30, np.inf, -np.inf, 3.4e38, -3.4e38, 1.0 + 2.0**-11,
         1.0 + 3 * 2.0**-11, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 1.0 + 2.0**-11 + 2.0**-12],
        dtype=np.float32,
    )  # fmt: skip
    x = np.concatenate(
        [special, -special, r.standard_normal(300).astype(np.float32),
         (r.standard_normal(300) * 1e-5).astype(np.float32),
         r.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32).view(np.float32)]
    )  # fmt: skip
    x = x[~np.isnan(x)]
    n = x.size
    f16, bf16 = np.zeros(n, np.uint16), np.zeros(n, np.uint16)
    tf32 = np.zeros(n, np.uint32)
    f16b, bf16b = np.zeros(n, np.float32), np.zeros(n, np.float32)
    conv = probes.get_function("probe_convert")
    conv((3,), (64,), (x, f16, bf16, tf32, f16b, bf16b, np.int64(n)))
    with np.errstate(over="ignore"):
        want16 = x.astype(np.float16)
    np.testing.assert_array_equal(f16, want16.view(np.uint16))
    if ml_dtypes is not None:
        np.testing.assert_array_equal(bf16, x.astype(ml_dtypes.bfloat16).view(np.uint16))
    np.testing.assert_array_equal(bf16, bf16_bits(x))
    np.testing.assert_array_equal(tf32, round_tf32(x).view(np.uint32))
    np.testing.assert_array_equal(f16b, want16.astype(np.float32))
    np.testing.assert_array_equal(bf16b, round_bf16(x))
    # tf32 ties go away from zero (cvt.rna), unlike bf16 / fp16 (nearest even)
    tie = np.array([1.0 + 2.0**-11, -(1.0 + 2.0**-11)], np.float32)
    assert list(round_tf32(tie)) == [1.0 + 2.0**-10, -(1.0 + 2.0**-10)]


def test_nan_conversions_stay_nan(probes) -> None:  # noqa: ANN001
    x = np.array([np.nan, -np.nan], np.float32)
    f16, bf16 = np.zeros(2, np.uint16), np.zeros(2, np.uint16)
    tf32, f16b, bf16b = np.zeros(2, np.uint32), np.zeros(2, np.float32), np.zeros(2, np.float32)
    conv = probes.get_function("probe_convert")
    conv((1,), (32,), (x, f16, bf16, tf32, f16b, bf16b, np.int64(2)))
    assert np.isnan(f16b).all() and np.isnan(bf16b).all()
    assert np.isnan(tf32.view(np.float32)).all() and np.isnan(round_bf16(x)).all()


# ------------------------------------------------------------------ the MMA steps, one warp


@pytest.mark.parametrize("seed", [0, 1])
def test_mma_tf32_m16n8k8_fragment_layout(probes, seed: int) -> None:  # noqa: ANN001
    r = np.random.default_rng(seed)
    a = r.standard_normal((16, 8)).astype(np.float32)  # NOT rounded: the MMA reads 19 bits
    b = r.standard_normal((8, 8)).astype(np.float32)
    c = r.standard_normal((16, 8)).astype(np.float32)
    ra, rb = _tf32_regs(a, b)
    d = np.zeros((32, 4), np.float32)
    probes.get_function("probe_mma_tf32")((1,), (32,), (ra, rb, _c_regs(c), d))
    got = _from_c_regs(d)
    trunc = lambda v: (_f32_bits(v) & np.uint32(0xFFFFE000)).view(np.float32)  # noqa: E731
    at, bt = trunc(a), trunc(b)
    np.testing.assert_array_equal(got, _sequential(at, bt, c))
    np.testing.assert_allclose(got, at.astype(np.float64) @ bt + c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["f16", "bf16"])
@pytest.mark.parametrize("seed", [0, 1])
def test_mma_16bit_m16n8k16_fragment_layout(probes, kind: str, seed: int) -> None:  # noqa: ANN001
    r = np.random.default_rng(seed)
    rnd = round_fp16 if kind == "f16" else round_bf16
    a = rnd(r.standard_normal((16, 16)).astype(np.float32))
    b = rnd(r.standard_normal((16, 8)).astype(np.float32))
    c = r.standard_normal((16, 8)).astype(np.float32)
    ra, rb = _h_regs(a, b, kind)
    d = np.zeros((32, 4), np.float32)
    probes.get_function(f"probe_mma_{kind}")((1,), (32,), (ra, rb, _c_regs(c), d))
    got = _from_c_regs(d)
    np.testing.assert_array_equal(got, _sequential(a, b, c))
    np.testing.assert_allclose(got, a.astype(np.float64) @ b + c, rtol=1e-5, atol=1e-5)


def test_mma_layout_is_not_symmetric_by_accident(probes) -> None:  # noqa: ANN001
    """A one-hot A and B: exactly one output element is nonzero, at the ISA's position."""
    for (i, k, j) in [(0, 0, 0), (9, 5, 7), (15, 3, 2), (4, 6, 1)]:
        a, b = np.zeros((16, 8), np.float32), np.zeros((8, 8), np.float32)
        a[i, k], b[k, j] = 2.0, 3.0
        ra, rb = _tf32_regs(a, b)
        d = np.zeros((32, 4), np.float32)
        probes.get_function("probe_mma_tf32")((1,), (32,), (ra, rb, np.zeros((32, 4), np.float32),
                                                            d))  # fmt: skip
        want = np.zeros((16, 8), np.float32)
        want[i, j] = 6.0
        np.testing.assert_array_equal(_from_c_regs(d), want)


def test_fragment_loads_build_the_isa_registers(probes) -> None:  # noqa: ANN001
    r = np.random.default_rng(3)
    a32 = r.standard_normal((16, 8)).astype(np.float32)
    b32 = r.standard_normal((8, 8)).astype(np.float32)  # (k, n)
    a16 = round_fp16(r.standard_normal((16, 16)).astype(np.float32))
    b16 = round_fp16(r.standard_normal((16, 8)).astype(np.float32))  # (k, n)
    out = np.zeros((32, 12), np.uint32)
    probes.get_function("probe_mma_loads")(
        (1,), (32,),
        (a32, np.ascontiguousarray(b32.T), a16.astype(np.float16).view(np.uint16),
         np.ascontiguousarray(b16.T).astype(np.float16).view(np.uint16), out),
    )  # fmt: skip
    ra, rb = _tf32_regs(a32, b32)
    ha, hb = _h_regs(a16, b16, "f16")
    np.testing.assert_array_equal(out[:, 0:4], ra)
    np.testing.assert_array_equal(out[:, 4:6], rb)
    np.testing.assert_array_equal(out[:, 6:10], ha)
    np.testing.assert_array_equal(out[:, 10:12], hb)


def test_probe_file_compiles_with_nvrtc() -> None:
    """The probes (and so every helper of mma.cuh, PTX bodies included) build for sm_80/sm_90."""
    from gpucnn.testing.nvrtc import NvrtcUnavailable, compile_with_nvrtc, nvrtc_version

    try:
        nvrtc_version()
    except NvrtcUnavailable as exc:
        pytest.skip(str(exc))
    for arch in ("sm_75", "sm_80", "sm_90"):  # sm_75: the portable shuffle bodies
        res = compile_with_nvrtc(PROBES.read_text(), PROBES.name,
                                 ("--std=c++14", f"-I{CUDA_DIR}"), arch)  # fmt: skip
        assert res.ok and not res.log.strip(), f"{arch}:\n{res.log}"


def test_gemm_compiles_for_pre_sm80_with_the_portable_bodies() -> None:
    """Below sm_80 mma.cuh falls back to the shuffle bodies: the backend probe compiles every
    family on the device it finds, so gemm.cu must build there too."""
    from gpucnn.backend.kernels import module_options, module_source
    from gpucnn.testing.nvrtc import NvrtcUnavailable, compile_with_nvrtc, nvrtc_version

    try:
        nvrtc_version()
    except NvrtcUnavailable as exc:
        pytest.skip(str(exc))
    src = CUDA_DIR / "gemm.cu"
    res = compile_with_nvrtc(module_source(src), src.name, module_options(src), "sm_75")
    assert res.ok and not res.log.strip(), res.log


# ------------------------------------------------------------------ the GEMM kernels


def _inputs(prec: str, m: int, n: int, k: int, ta: bool, tb: bool, seed: int = 0):  # noqa: ANN202
    """float32 originals (M, K) and (K, N), and the stored kernel inputs (transposed if asked)."""
    r = np.random.default_rng(seed)
    a32 = r.standard_normal((m, k)).astype(np.float32)
    b32 = r.standard_normal((k, n)).astype(np.float32)
    return a32, b32, _to_input(a32.T if ta else a32, prec), _to_input(b32.T if tb else b32, prec)


def _to_input(x32: np.ndarray, prec: str) -> np.ndarray:
    """A kernel operand of ``prec`` (bf16: uint16 bit patterns) holding ``x32`` rounded."""
    x32 = np.ascontiguousarray(x32)
    return bf16_bits(x32) if prec == "bf16" else x32.astype(PREC_DTYPE[prec])


def _check(emulate, prec: str, shape: tuple, ta: bool = False, tb: bool = False,  # noqa: ANN001
           alpha: float = 1.0, beta: float = 0.0, bias: bool = False, relu: bool = False,
           grid_cap: int | None = None, seed: int = 0) -> None:  # fmt: skip
    from gpucnn.backend.cuda_ops import gemm as cg
    from gpucnn.backend.numpy_ops import gemm as ng

    m, n, k = shape
    a32, b32, a, b = _inputs(prec, m, n, k, ta, tb, seed)
    r = np.random.default_rng(seed + 100)
    c = r.standard_normal((m, n)).astype(np.float32) if beta != 0 else None
    bv = r.standard_normal(n).astype(np.float32) if bias else None
    kw = dict(alpha=alpha, beta=beta, trans_a=ta, trans_b=tb, precision=prec, bias=bv, relu=relu)
    with emulate(grid_cap=grid_cap):
        got = cg.gemm(a, b, None if c is None else c.copy(), **kw)
    want = ng.gemm(a, b, None if c is None else c.copy(), **kw)
    what = f"{prec} {shape} ta={ta} tb={tb} alpha={alpha} beta={beta} bias={bias} relu={relu}"
    assert got.dtype == np.float32 and got.shape == (m, n), what
    # 1. bit for bit: the emulator sums over k in ascending order in float32
    ar, br = _rounded(a32, prec), _rounded(b32, prec)
    exact = _epilogue(_sequential(ar, br), alpha, beta, c, bv, relu)
    np.testing.assert_array_equal(got, exact, err_msg=what)
    # 2. against the twin (float64 accumulation): K float32 roundings of the running sum
    scale = np.abs(alpha) * (np.abs(ar).astype(np.float64) @ np.abs(br))
    if beta:
        scale = scale + np.abs(beta * c)
    bound = (k + 2) * 2.0**-24 * scale + 1e-30
    assert np.all(np.abs(got.astype(np.float64) - want) <= bound), what
    # 3. against the float32 product of the unrounded inputs: the precision's promise
    ref = np.float64(alpha) * (a32.astype(np.float64) @ b32.astype(np.float64))
    if beta:
        ref = ref + beta * c.astype(np.float64)
    if bias:
        ref = ref + bv
    if relu:
        ref = np.maximum(ref, 0.0)
    u = UNIT_ROUND[prec]
    mag = np.abs(alpha) * (np.abs(a32).astype(np.float64) @ np.abs(b32))
    tol = (2 * u + u * u + (k + 2) * 2.0**-24) * mag + (k + 2) * 2.0**-24 * (
        np.abs(ref) + (np.abs(beta * c) if beta else 0) + (np.abs(bv) if bias else 0)
    ) + 1e-6  # fmt: skip
    assert np.all(np.abs(got - ref) <= tol), f"{what}: max err {np.abs(got - ref).max()}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("prec", ["fp32", "tf32", "fp16", "bf16"])
def test_gemm_every_tail(emulate, prec: str, shape: tuple) -> None:  # noqa: ANN001
    _check(emulate, prec, shape)


@pytest.mark.parametrize("ta,tb", [(False, True), (True, False), (True, True)])
@pytest.mark.parametrize("prec", ["fp32", "tf32", "fp16", "bf16"])
def test_gemm_transposes(emulate, prec: str, ta: bool, tb: bool) -> None:  # noqa: ANN001
    _check(emulate, prec, (37, 45, 29), ta, tb, seed=1)


@pytest.mark.parametrize("prec", ["fp32", "tf32", "fp16", "bf16"])
def test_gemm_alpha_beta_bias_relu(emulate, prec: str) -> None:  # noqa: ANN001
    _check(emulate, prec, (37, 45, 29), alpha=0.5, beta=-1.5, seed=2)
    _check(emulate, prec, (37, 45, 29), bias=True, relu=True, seed=3)
    _check(emulate, prec, (20, 11, 9), True, True, alpha=2.0, beta=0.25, bias=True, relu=True)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("prec", ["fp32", "tf32", "fp16", "bf16"])
def test_gemm_fused_activations(emulate, prec: str, act: str) -> None:  # noqa: ANN001
    """Epilogue bits 1..: act(alpha * acc + beta * C + bias) (cuda/epilogue.cuh) equals the
    unfused route (the same GEMM, then the activation twin in float32) and the twin."""
    from gpucnn.backend.cuda_ops import gemm as cg
    from gpucnn.backend.numpy_ops import gemm as ng
    from gpucnn.backend.numpy_ops.activation import activation_forward

    m, n, k = 37, 45, 29
    a32, b32, a, b = _inputs(prec, m, n, k, False, True, 5)
    r = np.random.default_rng(7)
    c, bv = r.standard_normal((m, n)).astype(np.float32), r.standard_normal(n).astype(np.float32)
    kw = dict(alpha=0.5, beta=0.25, trans_b=True, precision=prec, bias=bv)
    with emulate(grid_cap=2):
        plain = cg.gemm(a, b, c.copy(), **kw)
        got = cg.gemm(a, b, c.copy(), activation=act, slope=0.2, **kw)
    want = ng.gemm(a, b, c.copy(), activation=act, slope=0.2, **kw)
    unfused = activation_forward(plain, act, 0.2)
    np.testing.assert_allclose(got, unfused, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))
    if act == "relu":  # the same kernel as relu=True
        np.testing.assert_array_equal(got, np.where(plain > 0, plain, np.float32(0)))


def test_gemm_activation_errors() -> None:
    from gpucnn.backend.cuda_ops import gemm as cg
    from gpucnn.backend.numpy_ops import gemm as ng

    f32 = np.ones((3, 4), np.float32)
    for m in (cg, ng):
        with pytest.raises(ValueError, match="gemm: unknown activation 'elu'"):
            m.gemm(f32, f32.T, activation="elu")
        with pytest.raises(ValueError, match="two activations"):
            m.gemm(f32, f32.T, relu=True, activation="gelu")


@pytest.mark.parametrize("grid_cap", [1, 2, 3])
@pytest.mark.parametrize("prec", ["fp32", "tf32", "bf16"])
def test_gemm_capped_grids(emulate, tiles, prec: str, grid_cap: int) -> None:  # noqa: ANN001
    """Fewer blocks than tiles: each block loops over tiles (several per block)."""
    tiles(simt="simt32x16", tc="tc1x2w16")
    _check(emulate, prec, (70, 90, 50), grid_cap=grid_cap)


@pytest.mark.parametrize("tile", ["simt32x16"])
@pytest.mark.parametrize("shape", [(37, 45, 29), (70, 90, 50), (32, 16, 4)],
                         ids=lambda s: "x".join(map(str, s)))  # fmt: skip
def test_gemm_simt_other_tiles(emulate, tiles, tile: str, shape: tuple) -> None:  # noqa: ANN001
    tiles(simt=tile)
    _check(emulate, "fp32", shape, True, False, alpha=1.5, beta=0.5)


@pytest.mark.parametrize("tile", ["tc1x2w16", "tc2x1w32x8"])
@pytest.mark.parametrize("prec", ["tf32", "fp16", "bf16"])
def test_gemm_tensor_core_other_tiles(emulate, tiles, tile: str, prec: str) -> None:  # noqa: ANN001
    tiles(tc=tile)
    _check(emulate, prec, (37, 45, 29))
    _check(emulate, prec, (70, 20, 40), False, True, beta=1.0, seed=4)


def test_gemm_writes_c_in_place_and_skips_it_when_beta_is_zero(emulate) -> None:  # noqa: ANN001
    from gpucnn.backend.cuda_ops import gemm as cg

    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    c = np.full((3, 5), np.nan, np.float32)  # never read with beta == 0
    with emulate():
        out = cg.gemm(a, b, c)
    assert out is c and np.array_equal(c, np.full((3, 5), 4.0, np.float32))


@pytest.mark.parametrize("ops", ["numpy_ops", "cuda_ops"])
def test_gemm_bad_input_is_a_clear_error(emulate, ops: str) -> None:  # noqa: ANN001
    import importlib

    m = importlib.import_module(f"gpucnn.backend.{ops}.gemm")
    f32 = np.ones((3, 4), np.float32)
    with emulate():
        with pytest.raises(TypeError, match=r"^gemm: no GEMM kernel for dtype float64.*bfloat16"):
            m.gemm(f32.astype(np.float64), f32.T.astype(np.float64))
        with pytest.raises(TypeError, match=r"^gemm: precision 'tf32' takes float32"):
            m.gemm(f32.astype(np.float16), f32.T.astype(np.float16), precision="tf32")
        with pytest.raises(TypeError, match="same dtype"):
            m.gemm(f32, f32.T.astype(np.float16))
        with pytest.raises(ValueError, match="unknown precision 'int8'"):
            m.gemm(f32, f32.T, precision="int8")
        with pytest.raises(ValueError, match="inner sizes differ"):
            m.gemm(f32, f32)
        with pytest.raises(ValueError, match="needs c"):
            m.gemm(f32, f32.T, beta=1.0)
        with pytest.raises(ValueError, match="bias must have shape"):
            m.gemm(f32, f32.T, bias=np.ones(4, np.float32))


def test_gemm_is_a_primitive_of_every_backend(backend) -> None:  # noqa: ANN001
    """``be.gemm`` on the backend's own arrays: the simulated device in --simulate-cuda, and on a
    real GPU the mma.sync PTX itself, whose results are only right if our fragment layouts are
    the hardware's (within the precision's bound: tensor cores add in their own order)."""
    from gpucnn import backend as B

    r = np.random.default_rng(5)
    for m, n, k in ((19, 7, 13), (100, 70, 40)):
        a, b = r.standard_normal((m, k)).astype(np.float32), r.standard_normal((k, n)).astype(
            np.float32
        )
        for prec in ("fp32", "tf32", "fp16", "bf16"):
            xa = B.to_backend(_to_input(a, prec), backend.name)
            xb = B.to_backend(_to_input(b.T, prec), backend.name)
            got = B.to_numpy(backend.gemm(xa, xb, trans_b=True, precision=prec))
            u = UNIT_ROUND[prec]
            mag = np.abs(a).astype(np.float64) @ np.abs(b)
            err = np.abs(got - a.astype(np.float64) @ b)
            assert np.all(err <= (2 * u + u * u + (k + 2) * 2.0**-24) * mag + 1e-6), (
                f"{prec} ({m}, {n}, {k}) on {backend.name}: max err {err.max()}"
            )


@pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes (bfloat16 arrays) is not installed")
def test_gemm_takes_ml_dtypes_bfloat16(emulate) -> None:  # noqa: ANN001
    """``ml_dtypes.bfloat16`` operands pick ``bf16`` and equal the bit-pattern path."""
    from gpucnn.backend.cuda_ops import gemm as cg
    from gpucnn.backend.numpy_ops import gemm as ng

    r = np.random.default_rng(7)
    a32, b32 = r.standard_normal((21, 17)).astype(np.float32), r.standard_normal((17, 9)).astype(
        np.float32
    )
    a, b = a32.astype(ml_dtypes.bfloat16), b32.astype(ml_dtypes.bfloat16)
    with emulate():
        got = cg.gemm(a, b)
        bits = cg.gemm(bf16_bits(a32), bf16_bits(b32), precision="bf16")
    np.testing.assert_array_equal(got, bits)
    np.testing.assert_array_equal(ng.gemm(a, b), ng.gemm(bf16_bits(a32), bf16_bits(b32),
                                                         precision="bf16"))  # fmt: skip
    np.testing.assert_array_equal(bf16_bits_to_float32(bf16_bits(a32)), a.astype(np.float32))
    with pytest.raises(TypeError, match="uint16"):
        ng.gemm(bf16_bits(a32), bf16_bits(b32))  # bit patterns need precision="bf16"
