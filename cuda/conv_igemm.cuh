// conv_igemm.cuh: the index math of the implicit-GEMM convolution, shared by the FP32/FP64
// SIMT kernels (cuda/conv_igemm.cu) and the tensor-core ones (cuda/conv_igemm_tc.cu).
//
// ConvShape / make_shape and the IGEMM_SHAPE_PARAMS / IGEMM_SHAPE_ARGS macros (the kernels'
// trailing int32 sizes), and the three passes as "Problem" structs (see the header of
// conv_igemm.cu for the three GEMMs). Each Problem is templated on In, the element type of the
// tensors its A / B operands are read from (float, double, or unsigned short bit patterns of
// binary16 / bfloat16), and Out, the type of the accumulator and of what it stores (In for the
// SIMT kernels, float for the tensor-core ones). The forward's store runs the fused epilogue:
// bias, then the activation of epilogue.cuh, optionally writing the pre-activation too.
#pragma once

#include "common.cuh"
#include "epilogue.cuh"

// Sizes of one convolution, as the kernels receive them (all int32), plus derived ones.
struct ConvShape {
    int N, C, H, W;      // input
    int O, G, Cg, Og;    // output channels, groups, channels per group (in, out)
    int KH, KW, KHW;     // kernel
    int SH, SW, PT, PL;  // stride, top/left padding (bottom/right are implied by P, Q)
    int DH, DW, P, Q;    // dilation, output size
    index_t HW, PQ;      // plane sizes
};

#define IGEMM_SHAPE_PARAMS                                                                  \
    int N, int C, int H, int W, int O, int G, int KH, int KW, int SH, int SW, int PT, int PL, \
        int DH, int DW, int P, int Q
#define IGEMM_SHAPE_ARGS N, C, H, W, O, G, KH, KW, SH, SW, PT, PL, DH, DW, P, Q

__device__ __forceinline__ ConvShape make_shape(IGEMM_SHAPE_PARAMS) {
    ConvShape s;
    s.N = N; s.C = C; s.H = H; s.W = W;
    s.O = O; s.G = G; s.Cg = C / G; s.Og = O / G;
    s.KH = KH; s.KW = KW; s.KHW = KH * KW;
    s.SH = SH; s.SW = SW; s.PT = PT; s.PL = PL;
    s.DH = DH; s.DW = DW; s.P = P; s.Q = Q;
    s.HW = (index_t)H * W;
    s.PQ = (index_t)P * Q;
    return s;
}

// ---------------------------------------------------------------------------------------------
// The three passes as "problems" of the tile driver below. Each one says:
//   M(), cols(), K()            the GEMM sizes of one group
//   a(g, m, k)                  an element of A (m < M, k < K: the driver checks)
//   col(g, c) -> Col            what a B element of column c needs, worked out once per tile
//   b(g, col, k)                an element of B (zero in the padding)
//   store(g, split, m, c, v)    write D[m, c] (the driver checks m < M, c < cols)
// a() and b() return In (zero: In(0), also the bit pattern of +0 in binary16 / bfloat16);
// store() takes the Out accumulator. The part of the index math that depends on k only is
// kinfo(k) -> KInfo, so a driver can work it out once per K-slice row for all rows / columns
// (the tensor-core driver keeps a table of them in shared memory):
//   a(g, m, k) == a_at(g, m, kinfo(k))      b(g, col, k) == b_at(g, col, kinfo(k))
// ---------------------------------------------------------------------------------------------

// Forward: y[n, g*Og + m, p, q] = sum over (c, i, j) of w[g*Og + m, c, i, j] * x[n, g*Cg + c,
// p*SH - PT + i*DH, q*SW - PL + j*DW], plus bias[g*Og + m] when has_bias, then the
// activation `act` (epilogue.cuh; slope: LeakyReLU's). With has_pre, pre (same layout as y)
// receives the value before the activation (conv + bias).
template <typename In, typename Out = In>
struct FwdProblem {
    ConvShape s;
    const In* __restrict__ x;
    const In* __restrict__ w;
    const Out* __restrict__ bias;
    Out* __restrict__ y;
    Out* __restrict__ pre;
    int has_bias;
    int act;
    Out slope;
    int has_pre;

    __device__ int M() const { return s.Og; }
    __device__ index_t cols() const { return (index_t)s.N * s.PQ; }
    __device__ index_t K() const { return (index_t)s.Cg * s.KHW; }

    // k = (c*KH + i)*KW + j: channel c of the group, tap (i, j).
    struct KInfo {
        index_t k;    // the A column (w is row-major along k)
        index_t off;  // c*H*W + i*DH*W + j*DW: offset of the tap from the window's origin
        int dy, dx;   // i*DH, j*DW
    };
    __device__ KInfo kinfo(index_t k) const {
        const int c = (int)(k / s.KHW);
        const int r = (int)(k - (index_t)c * s.KHW);
        const int i = r / s.KW, j = r - (r / s.KW) * s.KW;
        KInfo ki;
        ki.k = k;
        ki.dy = i * s.DH;
        ki.dx = j * s.DW;
        ki.off = (index_t)c * s.HW + (index_t)ki.dy * s.W + ki.dx;
        return ki;
    }

    // w (O, Cg*KHW) row-major: row g*Og + m, column k.
    __device__ In a_at(int g, int m, const KInfo& ki) const {
        return w[((index_t)g * s.Og + m) * K() + ki.k];
    }
    __device__ In a(int g, int m, index_t k) const { return a_at(g, m, kinfo(k)); }

    struct Col {
        index_t origin;  // offset of x[n, g*Cg, y0, x0] (may lie outside the plane: padding)
        int y0, x0;      // input row/column of tap (0, 0): p*SH - PT, q*SW - PL
    };
    __device__ Col col(int g, index_t c) const {
        const index_t n = c / s.PQ;
        const int pq = (int)(c - n * s.PQ);
        const int p = pq / s.Q, q = pq - (pq / s.Q) * s.Q;
        Col r;
        r.y0 = p * s.SH - s.PT;
        r.x0 = q * s.SW - s.PL;
        r.origin = (n * s.C + (index_t)g * s.Cg) * s.HW + (index_t)r.y0 * s.W + r.x0;
        return r;
    }
    __device__ In b_at(int g, const Col& cl, const KInfo& ki) const {
        (void)g;
        const int iy = cl.y0 + ki.dy, ix = cl.x0 + ki.dx;
        if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) return In(0);  // padding
        return x[cl.origin + ki.off];
    }
    __device__ In b(int g, const Col& cl, index_t k) const { return b_at(g, cl, kinfo(k)); }
    __device__ void store(int g, int split, int m, index_t c, Out v) const {
        (void)split;
        const int o = g * s.Og + m;
        const index_t n = c / s.PQ;
        const index_t pq = c - n * s.PQ;
        const index_t i = (n * s.O + o) * s.PQ + pq;
        if (has_bias) v += bias[o];
        if (has_pre) pre[i] = v;
        y[i] = gpucnn_epilogue_act<Out>(v, act, slope);
    }
};

// Backward data: dx[n, g*Cg + m, iy, ix] = sum over (o, i, j) of w[g*Og + o, m, i, j] *
// dy[n, g*Og + o, p, q] for p = (iy + PT - i*DH) / SH, q = (ix + PL - j*DW) / SW whole and in
// range (a gather: the taps of other (i, j) touch no output of this pixel).
template <typename In, typename Out = In>
struct DataProblem {
    ConvShape s;
    const In* __restrict__ dy;
    const In* __restrict__ w;
    Out* __restrict__ dx;

    __device__ int M() const { return s.Cg; }
    __device__ index_t cols() const { return (index_t)s.N * s.HW; }
    __device__ index_t K() const { return (index_t)s.Og * s.KHW; }

    // k = o*KHW + r (r = i*KW + j): output channel o of the group, tap (i, j).
    struct KInfo {
        index_t a_off;  // o*Cg*KHW + r: w[g*Og + o, m, r] is w[(g*Og*Cg + m)*KHW + a_off]
        index_t b_off;  // o*P*Q: the dy plane of o, from dy[n, g*Og, 0, 0]
        int ti, tj;     // i*DH, j*DW
    };
    __device__ KInfo kinfo(index_t k) const {
        const int o = (int)(k / s.KHW);
        const int r = (int)(k - (index_t)o * s.KHW);
        const int i = r / s.KW, j = r - (r / s.KW) * s.KW;
        KInfo ki;
        ki.a_off = (index_t)o * s.Cg * s.KHW + r;
        ki.b_off = (index_t)o * s.PQ;
        ki.ti = i * s.DH;
        ki.tj = j * s.DW;
        return ki;
    }

    __device__ In a_at(int g, int m, const KInfo& ki) const {
        return w[((index_t)g * s.Og * s.Cg + m) * s.KHW + ki.a_off];
    }
    __device__ In a(int g, int m, index_t k) const { return a_at(g, m, kinfo(k)); }

    struct Col {
        index_t base;  // offset of dy[n, g*Og, 0, 0]
        int ty0, tx0;  // iy + PT, ix + PL: tap (i, j) reaches output row (ty0 - i*DH) / SH
    };
    __device__ Col col(int g, index_t c) const {
        const index_t n = c / s.HW;
        const int yx = (int)(c - n * s.HW);
        const int iy = yx / s.W, ix = yx - (yx / s.W) * s.W;
        Col r;
        r.base = (n * s.O + (index_t)g * s.Og) * s.PQ;
        r.ty0 = iy + s.PT;
        r.tx0 = ix + s.PL;
        return r;
    }
    __device__ In b_at(int g, const Col& cl, const KInfo& ki) const {
        (void)g;
        const int ty = cl.ty0 - ki.ti, tx = cl.tx0 - ki.tj;
        if (ty < 0 || tx < 0) return In(0);
        int p = ty, q = tx;
        if (s.SH != 1 || s.SW != 1) {  // strided: only whole output positions contribute
            if (ty % s.SH != 0 || tx % s.SW != 0) return In(0);
            p = ty / s.SH;
            q = tx / s.SW;
        }
        if (p >= s.P || q >= s.Q) return In(0);
        return dy[cl.base + ki.b_off + (index_t)p * s.Q + q];
    }
    __device__ In b(int g, const Col& cl, index_t k) const { return b_at(g, cl, kinfo(k)); }
    __device__ void store(int g, int split, int m, index_t c, Out v) const {
        (void)split;
        const index_t n = c / s.HW;
        const index_t yx = c - n * s.HW;
        dx[(n * s.C + (index_t)g * s.Cg + m) * s.HW + yx] = v;
    }
};

// Backward weight: dw[g*Og + m, c, i, j] = sum over (n, p, q) of dy[n, g*Og + m, p, q] *
// x[n, g*Cg + c, p*SH - PT + i*DH, q*SW - PL + j*DW]. With splits > 1, split s writes its
// partial sum to out + s*O*Cg*KHW (the workspace), else straight into dw.
template <typename In, typename Out = In>
struct WeightProblem {
    ConvShape s;
    const In* __restrict__ dy;
    const In* __restrict__ x;
    Out* __restrict__ out;

    __device__ int M() const { return s.Og; }
    __device__ index_t cols() const { return (index_t)s.Cg * s.KHW; }
    __device__ index_t K() const { return (index_t)s.N * s.PQ; }

    // k = n*P*Q + p*Q + q: sample n, output position (p, q).
    struct KInfo {
        index_t a_off;  // n*O*P*Q + p*Q + q: dy[n, g*Og + m, p, q] is dy[(g*Og + m)*PQ + a_off]
        index_t b_off;  // n*C*H*W: the sample's offset in x
        int py, qx;     // p*SH, q*SW
    };
    __device__ KInfo kinfo(index_t k) const {
        const index_t n = k / s.PQ;
        const int pq = (int)(k - n * s.PQ);
        const int p = pq / s.Q, q = pq - (pq / s.Q) * s.Q;
        KInfo ki;
        ki.a_off = n * s.O * s.PQ + pq;
        ki.b_off = n * s.C * s.HW;
        ki.py = p * s.SH;
        ki.qx = q * s.SW;
        return ki;
    }

    __device__ In a_at(int g, int m, const KInfo& ki) const {
        return dy[((index_t)g * s.Og + m) * s.PQ + ki.a_off];
    }
    __device__ In a(int g, int m, index_t k) const { return a_at(g, m, kinfo(k)); }

    struct Col {
        index_t chan;  // offset of x[0, g*Cg + c, 0, 0]
        int iy0, ix0;  // input row/column of output (0, 0) at this tap: i*DH - PT, j*DW - PL
    };
    __device__ Col col(int g, index_t c) const {
        const int ch = (int)(c / s.KHW);
        const int r = (int)(c - (index_t)ch * s.KHW);
        const int i = r / s.KW, j = r - (r / s.KW) * s.KW;
        Col cl;
        cl.chan = ((index_t)g * s.Cg + ch) * s.HW;
        cl.iy0 = i * s.DH - s.PT;
        cl.ix0 = j * s.DW - s.PL;
        return cl;
    }
    __device__ In b_at(int g, const Col& cl, const KInfo& ki) const {
        (void)g;
        const int iy = cl.iy0 + ki.py, ix = cl.ix0 + ki.qx;
        if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) return In(0);  // padding
        return x[ki.b_off + cl.chan + (index_t)iy * s.W + ix];
    }
    __device__ In b(int g, const Col& cl, index_t k) const { return b_at(g, cl, kinfo(k)); }
    __device__ void store(int g, int split, int m, index_t c, Out v) const {
        const index_t per_split = (index_t)s.O * cols();
        out[split * per_split + ((index_t)g * s.Og + m) * cols() + c] = v;
    }
};

// ---------------------------------------------------------------------------------------------
// The tile space of a tile driver (conv_igemm.cu's SIMT one, conv_igemm_tc.cu's tensor-core
// one): every (group, split, row tile, column tile) of a problem with M rows, `ncols` columns
// and a K-long reduction, tiled BM x BN with BK-deep slices; each of `splits` splits gets a
// whole number of slices. Tile t decodes with column tiles fastest.
// ---------------------------------------------------------------------------------------------
struct IgemmTiles {
    index_t row_tiles, col_tiles, k_per_split, K, count;
    int splits;

    __device__ IgemmTiles(int M, index_t ncols, index_t K_, int groups, int splits_, int BM,
                          int BN, int BK) {
        row_tiles = (M + BM - 1) / BM;
        col_tiles = (ncols + BN - 1) / BN;
        K = K_;
        splits = splits_;
        const index_t slices = (K + BK - 1) / BK;
        k_per_split = (slices + splits - 1) / splits * BK;
        count = (index_t)groups * splits * row_tiles * col_tiles;
    }

    struct Tile {
        int g, split, rt;        // group, split, row tile
        index_t ct;              // column tile
        index_t k_begin, k_end;  // this split's reduction range
    };

    __device__ Tile at(index_t t) const {
        Tile r;
        r.ct = t % col_tiles;
        const index_t rest = t / col_tiles;
        r.rt = (int)(rest % row_tiles);
        const int gs = (int)(rest / row_tiles);  // g*splits + split
        r.split = gs % splits;
        r.g = gs / splits;
        r.k_begin = (index_t)r.split * k_per_split;
        r.k_end = r.k_begin + k_per_split < K ? r.k_begin + k_per_split : K;
        return r;
    }
};
