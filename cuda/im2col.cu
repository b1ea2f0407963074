// im2col.cu: im2col and col2im for 2-D convolution (NCHW), float32 and float64.
//
// Geometry shared by both kernels (sizes passed as int32, counts as int64):
//   x     (N, C, H, W)                      C-contiguous image batch
//   cols  (N, C*kh*kw, oh*ow)               C-contiguous column buffer
//   cols[n, (c*kh + i)*kw + j, y*ow + x] = x[n, c, y*sh - ph + i*dh, x*sw - pw + j*dw]
//   (zero where that pixel lies outside the image). ph/pw are the top/left padding; the caller
//   chooses oh/ow, which expresses any bottom/right padding.
#include "common.cuh"

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
        const int y0 = oy * sh - ph;
        const int x0 = ox * sw - pw;
        for (int i = 0; i < kh; ++i) {
            const int yy = y0 + i * dh;
            const bool row_in = yy >= 0 && yy < H;
            for (int j = 0; j < kw; ++j) {
                const int xx = x0 + j * dw;
                *dst = (row_in && xx >= 0 && xx < W) ? src[(index_t)yy * W + xx] : T(0);
                dst += L;
            }
        }
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
                acc += src[(index_t)(i * kw + j) * L + (index_t)oy * ow + ox];
            }
        }
        x[idx] = acc;
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
    }

GPUCNN_IM2COL_KERNELS(f32, float)
GPUCNN_IM2COL_KERNELS(f64, double)
