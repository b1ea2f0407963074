// im2col.cu: im2col and col2im for 2-D convolution (NCHW), float32 and float64.
//
// Geometry shared by all kernels (sizes passed as int32, counts as int64):
//   x     (N, C, H, W)                      C-contiguous image batch
//   cols  (N, C*kh*kw, oh*ow)               C-contiguous column buffer
//   cols[n, (c*kh + i)*kw + j, y*ow + x] = x[n, c, y*sh - ph + i*dh, x*sw - pw + j*dw]
//   (zero where that pixel lies outside the image). ph/pw are the top/left padding; the caller
//   chooses oh/ow, which expresses any bottom/right padding.
//
// "Batch-in-columns" variants (suffix _cn) write/read the same entries as one 2-D matrix, so
// the convolution GEMMs are plain 2-D products (cuBLAS honours the TF32 compute type only for
// 2-D GEMMs, not for batched ones):
//   cols2 (C*kh*kw, N*oh*ow)                C-contiguous
//   cols2[(c*kh + i)*kw + j, n*oh*ow + y*ow + x] = cols[n, (c*kh + i)*kw + j, y*ow + x]
#include "common.cuh"

// The kh*kw window of input plane `src` whose top-left tap is (y0, x0), written to `dst`,
// `dst + step`, ... in (i, j) order; taps outside [0, H) x [0, W) are zeros (the padding).
template <typename T>
__device__ __forceinline__ void copy_window(const T* __restrict__ src, T* __restrict__ dst,
                                            index_t step, int y0, int x0, int H, int W, int kh,
                                            int kw, int dh, int dw) {
    for (int i = 0; i < kh; ++i) {
        const int yy = y0 + i * dh;
        const bool row_in = yy >= 0 && yy < H;
        for (int j = 0; j < kw; ++j) {
            const int xx = x0 + j * dw;
            *dst = (row_in && xx >= 0 && xx < W) ? src[(index_t)yy * W + xx] : T(0);
            dst += step;
        }
    }
}

// Sum, in (i, j) order, of the column entries taken from input pixel (py, px): tap (i, j) of
// output position (oy, ox) is src[(i*kw + j)*row_step + oy*ow + ox], kept when
// (py + ph - i*dh) / sh and (px + pw - j*dw) / sw are whole and inside [0, oh) x [0, ow).
template <typename T>
__device__ __forceinline__ T sum_window(const T* __restrict__ src, index_t row_step, int py,
                                        int px, int kh, int kw, int sh, int sw, int ph, int pw,
                                        int dh, int dw, int oh, int ow) {
    T acc = T(0);
    for (int i = 0; i < kh; ++i) {
        const int ty = py + ph - i * dh;
        if (ty < 0) break;  // ty only decreases with i
        if (ty % sh != 0) continue;
        const int oy = ty / sh;
        if (oy >= oh) continue;
        for (int j = 0; j < kw; ++j) {
            const int tx = px + pw - j * dw;
            if (tx < 0) break;
            if (tx % sw != 0) continue;
            const int ox = tx / sw;
            if (ox >= ow) continue;
            acc += src[(index_t)(i * kw + j) * row_step + (index_t)oy * ow + ox];
        }
    }
    return acc;
}

// ---------------------------------------------------------------------------------------------
// im2col_{f32,f64}(x, cols, total, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
// Computes: the column buffer above from x.
// Threads:  one per output position (n, c, y, x): total = N*C*oh*ow, grid-stride loop. Each
//           thread writes its kh*kw column entries (stride oh*ow apart; consecutive threads write
//           consecutive addresses, so stores coalesce).
// NumPy twin: gpucnn/backend/numpy_ops/im2col.py::im2col (a strided view of the padded input).
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void im2col_body(const T* __restrict__ x, T* __restrict__ cols,
                                            index_t total, int C, int H, int W, int kh, int kw,
                                            int sh, int sw, int ph, int pw, int dh, int dw,
                                            int oh, int ow) {
    (void)C;
    const index_t L = (index_t)oh * ow;
    GRID_STRIDE_LOOP(idx, total) {
        const int ox = (int)(idx % ow);
        const index_t t = idx / ow;
        const int oy = (int)(t % oh);
        const index_t nc = t / oh;  // n*C + c
        const T* __restrict__ src = x + nc * H * W;
        T* __restrict__ dst = cols + nc * kh * kw * L + (index_t)oy * ow + ox;
        copy_window(src, dst, L, oy * sh - ph, ox * sw - pw, H, W, kh, kw, dh, dw);
    }
}

// ---------------------------------------------------------------------------------------------
// col2im_{f32,f64}(cols, x, total, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
// Computes: the adjoint of im2col: x[n, c, py, px] = sum of every cols entry taken from that
//           pixel (gradient of im2col).
// Threads:  a GATHER, one thread per image pixel (n, c, py, px): total = N*C*H*W, grid-stride
//           loop. Each thread visits the kh*kw kernel offsets (i, j), keeps those whose output
//           position (py + ph - i*dh) / sh, (px + pw - j*dw) / sw is whole and inside
//           [0, oh) x [0, ow), and sums in (i, j) order. No atomics: results are deterministic.
// NumPy twin: gpucnn/backend/numpy_ops/im2col.py::col2im (strided-slice adds per (i, j)).
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void col2im_body(const T* __restrict__ cols, T* __restrict__ x,
                                            index_t total, int C, int H, int W, int kh, int kw,
                                            int sh, int sw, int ph, int pw, int dh, int dw,
                                            int oh, int ow) {
    (void)C;
    const index_t L = (index_t)oh * ow;
    GRID_STRIDE_LOOP(idx, total) {
        const int px = (int)(idx % W);
        const index_t t = idx / W;
        const int py = (int)(t % H);
        const index_t nc = t / H;  // n*C + c
        const T* __restrict__ src = cols + nc * kh * kw * L;
        x[idx] = sum_window(src, L, py, px, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
    }
}

// ---------------------------------------------------------------------------------------------
// im2col_cn_{f32,f64}(x, cols2, total, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
// Computes: the batch-in-columns buffer cols2 (C*kh*kw, N*oh*ow) above from x. N is implied:
//           total = C*N*oh*ow, so a row of cols2 has total / C entries.
// Threads:  one per (c, n, y, x) in that order (idx = c*N*oh*ow + n*oh*ow + y*ow + x),
//           grid-stride loop. Each thread writes its kh*kw entries of column n*oh*ow + y*ow + x
//           (rows N*oh*ow apart); consecutive threads write consecutive addresses of a row, so
//           stores coalesce across samples too.
// NumPy twin: gpucnn/backend/numpy_ops/im2col.py::im2col_cn (im2col, then the batch moved into
//           the columns).
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void im2col_cn_body(const T* __restrict__ x, T* __restrict__ cols,
                                               index_t total, int C, int H, int W, int kh,
                                               int kw, int sh, int sw, int ph, int pw, int dh,
                                               int dw, int oh, int ow) {
    const index_t L = (index_t)oh * ow;
    const index_t NL = total / C;  // columns of cols2: N*oh*ow
    GRID_STRIDE_LOOP(idx, total) {
        const index_t col = idx % NL;  // n*L + oy*ow + ox
        const index_t c = idx / NL;
        const index_t n = col / L;
        const index_t l = col - n * L;
        const int oy = (int)(l / ow);
        const int ox = (int)(l - (index_t)oy * ow);
        const T* __restrict__ src = x + (n * C + c) * H * W;
        T* __restrict__ dst = cols + c * kh * kw * NL + col;
        copy_window(src, dst, NL, oy * sh - ph, ox * sw - pw, H, W, kh, kw, dh, dw);
    }
}

// ---------------------------------------------------------------------------------------------
// col2im_cn_{f32,f64}(cols2, x, total, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
// Computes: the adjoint of im2col_cn: x[n, c, py, px] = sum of every cols2 entry taken from
//           that pixel. N is implied: total = N*C*H*W.
// Threads:  a GATHER, one thread per image pixel (n, c, py, px): total = N*C*H*W, grid-stride
//           loop, the kernel offsets visited and kept exactly as in col2im (sum in (i, j) order),
//           reading row (c*kh + i)*kw + j, column n*oh*ow + oy*ow + ox of cols2. No atomics:
//           results are deterministic (and equal col2im's for the same entries).
// NumPy twin: gpucnn/backend/numpy_ops/im2col.py::col2im_cn (the batch moved back out of the
//           columns, then col2im).
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void col2im_cn_body(const T* __restrict__ cols, T* __restrict__ x,
                                               index_t total, int C, int H, int W, int kh,
                                               int kw, int sh, int sw, int ph, int pw, int dh,
                                               int dw, int oh, int ow) {
    const index_t L = (index_t)oh * ow;
    const index_t HW = (index_t)H * W;
    const index_t NL = total / ((index_t)C * HW) * L;  // columns of cols2: N*oh*ow
    GRID_STRIDE_LOOP(idx, total) {
        const int px = (int)(idx % W);
        const index_t t = idx / W;
        const int py = (int)(t % H);
        const index_t nc = t / H;  // n*C + c
        const index_t n = nc / C;
        const index_t c = nc - n * C;
        const T* __restrict__ src = cols + c * kh * kw * NL + n * L;
        x[idx] = sum_window(src, NL, py, px, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
    }
}

#define GPUCNN_IM2COL_KERNELS(SUFFIX, T)                                                        \
    extern "C" __global__ void im2col_##SUFFIX(const T* __restrict__ x, T* __restrict__ cols,    \
                                               index_t total, int C, int H, int W, int kh,       \
                                               int kw, int sh, int sw, int ph, int pw, int dh,   \
                                               int dw, int oh, int ow) {                         \
        im2col_body<T>(x, cols, total, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);         \
    }                                                                                            \
    extern "C" __global__ void col2im_##SUFFIX(const T* __restrict__ cols, T* __restrict__ x,    \
                                               index_t total, int C, int H, int W, int kh,       \
                                               int kw, int sh, int sw, int ph, int pw, int dh,   \
                                               int dw, int oh, int ow) {                         \
        col2im_body<T>(cols, x, total, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);         \
    }                                                                                            \
    extern "C" __global__ void im2col_cn_##SUFFIX(const T* __restrict__ x, T* __restrict__ cols, \
                                                  index_t total, int C, int H, int W, int kh,    \
                                                  int kw, int sh, int sw, int ph, int pw,        \
                                                  int dh, int dw, int oh, int ow) {              \
        im2col_cn_body<T>(x, cols, total, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);      \
    }                                                                                            \
    extern "C" __global__ void col2im_cn_##SUFFIX(const T* __restrict__ cols, T* __restrict__ x, \
                                                  index_t total, int C, int H, int W, int kh,    \
                                                  int kw, int sh, int sw, int ph, int pw,        \
                                                  int dh, int dw, int oh, int ow) {              \
        col2im_cn_body<T>(cols, x, total, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);      \
    }

GPUCNN_IM2COL_KERNELS(f32, float)
GPUCNN_IM2COL_KERNELS(f64, double)
