// pool2d.cu -- 2-D pooling kernels, forward and backward: max (with argmax), average and
// adaptive (average / max). PyTorch semantics, NCHW layout, C-contiguous arrays.
//
// Conventions shared by every kernel here:
//   * one work item per output element (forward) or per input element (backward), covered by a
//     grid-stride loop over a 64-bit flat index, so any grid / block size gives the same result;
//   * `nc` = N*C planes; planes are independent, a flat index decomposes as ((p*H + h)*W + w);
//   * argmax is int64 (long long): the flat index h*W + w inside the input plane, as PyTorch's
//     `return_indices`;
//   * backward passes are gathers (one thread per input pixel looping over the windows that
//     contain it), so they are deterministic and need no atomics;
//   * extern "C" names carry the dtype: <name>_f32 / <name>_f64.
// NumPy twins: gpucnn/backend/numpy_ops/pool.py (functions of the same names, without suffix).

#include "common.cuh"

// -inf from its bit pattern: NVRTC has neither <math.h> (INFINITY) nor GCC's __builtin_inf.
template <typename T>
__device__ __forceinline__ T pool_neg_inf();
template <>
__device__ __forceinline__ float pool_neg_inf<float>() { return __int_as_float(0xff800000); }
template <>
__device__ __forceinline__ double pool_neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000LL);
}

template <typename T>
__device__ __forceinline__ bool pool_isnan(T v) { return v != v; }

// Smallest non-negative position start + k*step (k >= 0); start may be negative.
__device__ __forceinline__ int pool_first_inside(int start, int step) {
    if (start >= 0) return start;
    return start + ((-start + step - 1) / step) * step;
}

// Max of plane xp (width w) over rows h0, h0+dh, ... < he and columns w0, w0+dw, ... < we,
// with its flat index ih*w + iw: the first maximum in row-major order wins ties, and a NaN wins
// over everything (the last NaN seen), as PyTorch. An empty window gives -inf and index
// h0*w + w0. Shared by max and adaptive max pooling so both follow one rule.
template <typename T>
__device__ __forceinline__ void pool_window_max(const T* xp, int w, int h0, int he, int dh,
                                                int w0, int we, int dw, T* best_out,
                                                index_t* arg_out) {
    T best = pool_neg_inf<T>();
    index_t arg = (index_t)h0 * w + w0;
    for (int ih = h0; ih < he; ih += dh) {
        for (int iw = w0; iw < we; iw += dw) {
            const T v = xp[(index_t)ih * w + iw];
            if (v > best || pool_isnan(v)) {
                best = v;
                arg = (index_t)ih * w + iw;
            }
        }
    }
    *best_out = best;
    *arg_out = arg;
}

// --------------------------------------------------------------------------------------------
// maxpool2d_fwd: y[p, oy, ox] = max over the dilated window of x[p]; argmax = h*W + w of the
// winner. Window rows oy*sh - ph + i*dh (i < kh), columns ox*sw - pw + j*dw (j < kw); padded
// positions are skipped (as -inf). Scan is row-major; a strictly greater value or any NaN takes
// over (so the first maximum wins, and NaN, the last one seen, is the maximum: PyTorch's rule).
// Thread mapping: one thread per output element (p, oy, ox). Twin: maxpool2d_forward.
// --------------------------------------------------------------------------------------------
template <typename T>
__device__ void maxpool2d_fwd_impl(const T* __restrict__ x, T* __restrict__ y,
                                   long long* __restrict__ argmax, index_t nc, int h, int w,
                                   int oh, int ow, int kh, int kw, int sh, int sw, int ph, int pw,
                                   int dh, int dw) {
    const index_t total = nc * oh * ow;
    GRID_STRIDE_LOOP(idx, total) {
        const int ox = (int)(idx % ow);
        const int oy = (int)((idx / ow) % oh);
        const index_t p = idx / ((index_t)ow * oh);
        const int hs = oy * sh - ph;
        const int ws = ox * sw - pw;
        const int he = min(hs + (kh - 1) * dh + 1, h);
        const int we = min(ws + (kw - 1) * dw + 1, w);
        const int h0 = pool_first_inside(hs, dh);
        const int w0 = pool_first_inside(ws, dw);
        T best;
        index_t arg;
        pool_window_max(x + p * h * w, w, h0, he, dh, w0, we, dw, &best, &arg);
        y[idx] = best;
        argmax[idx] = arg;
    }
}

// --------------------------------------------------------------------------------------------
// maxpool2d_bwd: dx[p, ih, iw] = sum of dy[p, oy, ox] over the windows (oy, ox) that contain
// (ih, iw) and whose argmax is ih*W + iw. Gather: one thread per input element; it loops over
// the kernel offsets (i, j) in row-major order, i.e. over the candidate windows, so the sum
// order is fixed. Twin: maxpool2d_backward.
// --------------------------------------------------------------------------------------------
template <typename T>
__device__ void maxpool2d_bwd_impl(const T* __restrict__ dy, const long long* __restrict__ argmax,
                                   T* __restrict__ dx, index_t nc, int h, int w, int oh,
                                   int ow, int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                                   int dw) {
    const index_t total = nc * h * w;
    GRID_STRIDE_LOOP(idx, total) {
        const int iw = (int)(idx % w);
        const int ih = (int)((idx / w) % h);
        const index_t p = idx / ((index_t)w * h);
        const index_t me = (index_t)ih * w + iw;
        const index_t base = p * oh * ow;
        T acc = T(0);
        for (int i = 0; i < kh; ++i) {
            const int ty = ih + ph - i * dh;
            if (ty < 0 || ty % sh != 0) continue;
            const int oy = ty / sh;
            if (oy >= oh) continue;
            for (int j = 0; j < kw; ++j) {
                const int tx = iw + pw - j * dw;
                if (tx < 0 || tx % sw != 0) continue;
                const int ox = tx / sw;
                if (ox >= ow) continue;
                const index_t o = base + (index_t)oy * ow + ox;
                if (argmax[o] == me) acc += dy[o];
            }
        }
        dx[idx] = acc;
    }
}

// Average-pooling divisor of window (oy, ox), PyTorch's rule: the window is clipped to the
// padded input [-ph, H+ph) for count_include_pad, to the input [0, H) otherwise;
// divisor_override > 0 replaces both.
__device__ __forceinline__ int avgpool_divisor(int hs, int ws, int h, int w, int kh, int kw,
                                               int ph, int pw, int count_include_pad,
                                               int divisor_override) {
    if (divisor_override > 0) return divisor_override;
    if (count_include_pad) return (min(hs + kh, h + ph) - hs) * (min(ws + kw, w + pw) - ws);
    return (min(hs + kh, h) - max(hs, 0)) * (min(ws + kw, w) - max(ws, 0));
}

// --------------------------------------------------------------------------------------------
// avgpool2d_fwd: y[p, oy, ox] = (sum of x[p] over the window inside the input) / divisor.
// Window rows oy*sh - ph .. +kh-1, columns ox*sw - pw .. +kw-1 (no dilation, as PyTorch).
// Empty windows (cannot occur for validated arguments) give 0. Thread mapping: one thread per
// output element; row-major sum. Twin: avgpool2d_forward.
// --------------------------------------------------------------------------------------------
template <typename T>
__device__ void avgpool2d_fwd_impl(const T* __restrict__ x, T* __restrict__ y, index_t nc,
                                   int h, int w, int oh, int ow, int kh, int kw, int sh, int sw,
                                   int ph, int pw, int count_include_pad, int divisor_override) {
    const index_t total = nc * oh * ow;
    GRID_STRIDE_LOOP(idx, total) {
        const int ox = (int)(idx % ow);
        const int oy = (int)((idx / ow) % oh);
        const index_t p = idx / ((index_t)ow * oh);
        const int hs = oy * sh - ph;
        const int ws = ox * sw - pw;
        const int h0 = max(hs, 0), h1 = min(hs + kh, h);
        const int w0 = max(ws, 0), w1 = min(ws + kw, w);
        const T* xp = x + p * h * w;
        T acc = T(0);
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) acc += xp[(index_t)ih * w + iw];
        const int div =
            avgpool_divisor(hs, ws, h, w, kh, kw, ph, pw, count_include_pad, divisor_override);
        y[idx] = (h0 < h1 && w0 < w1) ? acc / (T)div : T(0);
    }
}

// --------------------------------------------------------------------------------------------
// avgpool2d_bwd: dx[p, ih, iw] = sum over windows (oy, ox) containing (ih, iw) of
// dy[p, oy, ox] / divisor(oy, ox). Gather: one thread per input element, looping over kernel
// offsets (i, j) row-major. Twin: avgpool2d_backward.
// --------------------------------------------------------------------------------------------
template <typename T>
__device__ void avgpool2d_bwd_impl(const T* __restrict__ dy, T* __restrict__ dx, index_t nc,
                                   int h, int w, int oh, int ow, int kh, int kw, int sh, int sw,
                                   int ph, int pw, int count_include_pad, int divisor_override) {
    const index_t total = nc * h * w;
    GRID_STRIDE_LOOP(idx, total) {
        const int iw = (int)(idx % w);
        const int ih = (int)((idx / w) % h);
        const index_t p = idx / ((index_t)w * h);
        const T* g = dy + p * oh * ow;
        T acc = T(0);
        for (int i = 0; i < kh; ++i) {
            const int ty = ih + ph - i;
            if (ty < 0 || ty % sh != 0) continue;
            const int oy = ty / sh;
            if (oy >= oh) continue;
            for (int j = 0; j < kw; ++j) {
                const int tx = iw + pw - j;
                if (tx < 0 || tx % sw != 0) continue;
                const int ox = tx / sw;
                if (ox >= ow) continue;
                const int div = avgpool_divisor(oy * sh - ph, ox * sw - pw, h, w, kh, kw, ph, pw,
                                                count_include_pad, divisor_override);
                acc += g[(index_t)oy * ow + ox] / (T)div;
            }
        }
        dx[idx] = acc;
    }
}

// Adaptive bins (PyTorch): bin i of an axis of length n split into m covers
// [floor(i*n/m), ceil((i+1)*n/m)).
__device__ __forceinline__ int adaptive_start(int i, int n, int m) {
    return (int)(((index_t)i * n) / m);
}
__device__ __forceinline__ int adaptive_end(int i, int n, int m) {
    return (int)(((index_t)(i + 1) * n + m - 1) / m);
}

// --------------------------------------------------------------------------------------------
// adaptive_avgpool2d_fwd: y[p, oy, ox] = mean of x[p] over bin rows x bin columns.
// Thread mapping: one thread per output element; row-major sum. Twin: adaptive_avgpool2d_forward.
// --------------------------------------------------------------------------------------------
template <typename T>
__device__ void adaptive_avgpool2d_fwd_impl(const T* __restrict__ x, T* __restrict__ y,
                                            index_t nc, int h, int w, int oh, int ow) {
    const index_t total = nc * oh * ow;
    GRID_STRIDE_LOOP(idx, total) {
        const int ox = (int)(idx % ow);
        const int oy = (int)((idx / ow) % oh);
        const index_t p = idx / ((index_t)ow * oh);
        const int h0 = adaptive_start(oy, h, oh), h1 = adaptive_end(oy, h, oh);
        const int w0 = adaptive_start(ox, w, ow), w1 = adaptive_end(ox, w, ow);
        const T* xp = x + p * h * w;
        T acc = T(0);
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) acc += xp[(index_t)ih * w + iw];
        y[idx] = acc / (T)((h1 - h0) * (w1 - w0));
    }
}

// --------------------------------------------------------------------------------------------
// adaptive_avgpool2d_bwd: dx[p, ih, iw] = sum over bins (oy, ox) containing (ih, iw) of
// dy[p, oy, ox] / bin size. The bins containing row ih are exactly
// oy in [floor(ih*oh/H), ceil((ih+1)*oh/H)). Gather, one thread per input element.
// Twin: adaptive_avgpool2d_backward.
// --------------------------------------------------------------------------------------------
template <typename T>
__device__ void adaptive_avgpool2d_bwd_impl(const T* __restrict__ dy, T* __restrict__ dx,
                                            index_t nc, int h, int w, int oh, int ow) {
    const index_t total = nc * h * w;
    GRID_STRIDE_LOOP(idx, total) {
        const int iw = (int)(idx % w);
        const int ih = (int)((idx / w) % h);
        const index_t p = idx / ((index_t)w * h);
        const T* g = dy + p * oh * ow;
        const int oy0 = adaptive_start(ih, oh, h), oy1 = adaptive_end(ih, oh, h);
        const int ox0 = adaptive_start(iw, ow, w), ox1 = adaptive_end(iw, ow, w);
        T acc = T(0);
        for (int oy = oy0; oy < oy1; ++oy) {
            const int bh = adaptive_end(oy, h, oh) - adaptive_start(oy, h, oh);
            for (int ox = ox0; ox < ox1; ++ox) {
                const int bw = adaptive_end(ox, w, ow) - adaptive_start(ox, w, ow);
                acc += g[(index_t)oy * ow + ox] / (T)(bh * bw);
            }
        }
        dx[idx] = acc;
    }
}

// --------------------------------------------------------------------------------------------
// adaptive_maxpool2d_fwd: y[p, oy, ox] = max of x[p] over the bin, argmax = h*W + w (first
// maximum in row-major order; NaN, the last one seen, wins). One thread per output element.
// Twin: adaptive_maxpool2d_forward.
// --------------------------------------------------------------------------------------------
template <typename T>
__device__ void adaptive_maxpool2d_fwd_impl(const T* __restrict__ x, T* __restrict__ y,
                                            long long* __restrict__ argmax, index_t nc, int h,
                                            int w, int oh, int ow) {
    const index_t total = nc * oh * ow;
    GRID_STRIDE_LOOP(idx, total) {
        const int ox = (int)(idx % ow);
        const int oy = (int)((idx / ow) % oh);
        const index_t p = idx / ((index_t)ow * oh);
        const int h0 = adaptive_start(oy, h, oh), h1 = adaptive_end(oy, h, oh);
        const int w0 = adaptive_start(ox, w, ow), w1 = adaptive_end(ox, w, ow);
        T best;
        index_t arg;
        pool_window_max(x + p * h * w, w, h0, h1, 1, w0, w1, 1, &best, &arg);
        y[idx] = best;
        argmax[idx] = arg;
    }
}

// --------------------------------------------------------------------------------------------
// adaptive_maxpool2d_bwd: dx[p, ih, iw] = sum of dy over the bins containing (ih, iw) whose
// argmax is ih*W + iw. Gather, one thread per input element. Twin: adaptive_maxpool2d_backward.
// --------------------------------------------------------------------------------------------
template <typename T>
__device__ void adaptive_maxpool2d_bwd_impl(const T* __restrict__ dy,
                                            const long long* __restrict__ argmax,
                                            T* __restrict__ dx, index_t nc, int h, int w,
                                            int oh, int ow) {
    const index_t total = nc * h * w;
    GRID_STRIDE_LOOP(idx, total) {
        const int iw = (int)(idx % w);
        const int ih = (int)((idx / w) % h);
        const index_t p = idx / ((index_t)w * h);
        const index_t me = (index_t)ih * w + iw;
        const index_t base = p * oh * ow;
        const int oy0 = adaptive_start(ih, oh, h), oy1 = adaptive_end(ih, oh, h);
        const int ox0 = adaptive_start(iw, ow, w), ox1 = adaptive_end(iw, ow, w);
        T acc = T(0);
        for (int oy = oy0; oy < oy1; ++oy) {
            for (int ox = ox0; ox < ox1; ++ox) {
                const index_t o = base + (index_t)oy * ow + ox;
                if (argmax[o] == me) acc += dy[o];
            }
        }
        dx[idx] = acc;
    }
}

// ------------------------------------------------------------------------ extern "C" entries
#define POOL2D_KERNELS(T, SFX)                                                                  \
    extern "C" __global__ void maxpool2d_fwd_##SFX(                                             \
        const T* x, T* y, long long* argmax, index_t nc, int h, int w, int oh, int ow, int kh, \
        int kw, int sh, int sw, int ph, int pw, int dh, int dw) {                                \
        maxpool2d_fwd_impl<T>(x, y, argmax, nc, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw);  \
    }                                                                                           \
    extern "C" __global__ void maxpool2d_bwd_##SFX(                                             \
        const T* dy, const long long* argmax, T* dx, index_t nc, int h, int w, int oh, int ow, \
        int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw) {                        \
        maxpool2d_bwd_impl<T>(dy, argmax, dx, nc, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw);\
    }                                                                                           \
    extern "C" __global__ void avgpool2d_fwd_##SFX(                                             \
        const T* x, T* y, index_t nc, int h, int w, int oh, int ow, int kh, int kw, int sh,   \
        int sw, int ph, int pw, int count_include_pad, int divisor_override) {                  \
        avgpool2d_fwd_impl<T>(x, y, nc, h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_include_pad,\
                              divisor_override);                                                \
    }                                                                                           \
    extern "C" __global__ void avgpool2d_bwd_##SFX(                                             \
        const T* dy, T* dx, index_t nc, int h, int w, int oh, int ow, int kh, int kw, int sh, \
        int sw, int ph, int pw, int count_include_pad, int divisor_override) {                  \
        avgpool2d_bwd_impl<T>(dy, dx, nc, h, w, oh, ow, kh, kw, sh, sw, ph, pw,                 \
                              count_include_pad, divisor_override);                             \
    }                                                                                           \
    extern "C" __global__ void adaptive_avgpool2d_fwd_##SFX(const T* x, T* y, index_t nc,     \
                                                            int h, int w, int oh, int ow) {     \
        adaptive_avgpool2d_fwd_impl<T>(x, y, nc, h, w, oh, ow);                                 \
    }                                                                                           \
    extern "C" __global__ void adaptive_avgpool2d_bwd_##SFX(const T* dy, T* dx, index_t nc,   \
                                                            int h, int w, int oh, int ow) {     \
        adaptive_avgpool2d_bwd_impl<T>(dy, dx, nc, h, w, oh, ow);                               \
    }                                                                                           \
    extern "C" __global__ void adaptive_maxpool2d_fwd_##SFX(                                    \
        const T* x, T* y, long long* argmax, index_t nc, int h, int w, int oh, int ow) {      \
        adaptive_maxpool2d_fwd_impl<T>(x, y, argmax, nc, h, w, oh, ow);                         \
    }                                                                                           \
    extern "C" __global__ void adaptive_maxpool2d_bwd_##SFX(                                    \
        const T* dy, const long long* argmax, T* dx, index_t nc, int h, int w, int oh,        \
        int ow) {                                                                               \
        adaptive_maxpool2d_bwd_impl<T>(dy, argmax, dx, nc, h, w, oh, ow);                       \
    }

POOL2D_KERNELS(float, f32)
POOL2D_KERNELS(double, f64)
