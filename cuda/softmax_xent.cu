// softmax_xent.cu: row-wise softmax / log-softmax (forward and backward) and the fused
// softmax-cross-entropy loss with integer targets (forward and backward).
//
// Layout: the input is C-contiguous and viewed as (outer, L, inner); a "row" is the L values
// x[o, :, i] reduced over (the softmax axis), rows = outer * inner, row r = o * inner + i,
// element j of row r at (o * L + j) * inner + i. inner = 1 is the usual last-axis softmax;
// cross-entropy on (N, C, d1, ...) logits uses outer = N, L = C, inner = d1 * ...
// All indexing is 64-bit (long long). Reductions are max-subtracted (numerically stable) and
// propagate NaN: a NaN anywhere in a row makes the whole row NaN.
// NumPy twins: gpucnn.backend.numpy_ops.softmax_xent.

#define SX_MAX_BLOCK 1024

__device__ __forceinline__ float sx_exp(float v) { return expf(v); }
__device__ __forceinline__ double sx_exp(double v) { return exp(v); }
__device__ __forceinline__ float sx_log(float v) { return logf(v); }
__device__ __forceinline__ double sx_log(double v) { return log(v); }

// max that propagates NaN from either side (fmax would drop it).
template <typename T>
__device__ __forceinline__ T sx_max(T a, T b) {
    return (a != a || a > b) ? a : b;
}

// Block-wide reductions over blockDim.x threads through shared memory `buf` (>= blockDim.x
// entries): a tree with __syncthreads() between levels, correct for any block size (power of
// two or not). Every thread of the block must call them (they contain barriers); every thread
// gets the result. The trailing barrier lets the caller reuse `buf` straight away.
template <typename T>
__device__ T sx_block_sum(T v, T* buf) {
    const unsigned int tid = threadIdx.x;
    const unsigned int nt = blockDim.x;
    unsigned int top = 1;
    while (top < nt) top <<= 1;
    buf[tid] = v;
    __syncthreads();
    for (unsigned int s = top >> 1; s > 0; s >>= 1) {
        if (tid < s && tid + s < nt) buf[tid] += buf[tid + s];
        __syncthreads();
    }
    const T r = buf[0];
    __syncthreads();
    return r;
}

template <typename T>
__device__ T sx_block_max(T v, T* buf) {
    const unsigned int tid = threadIdx.x;
    const unsigned int nt = blockDim.x;
    unsigned int top = 1;
    while (top < nt) top <<= 1;
    buf[tid] = v;
    __syncthreads();
    for (unsigned int s = top >> 1; s > 0; s >>= 1) {
        if (tid < s && tid + s < nt) buf[tid] = sx_max(buf[tid], buf[tid + s]);
        __syncthreads();
    }
    const T r = buf[0];
    __syncthreads();
    return r;
}

// Row max m and sum(exp(x - m)) of the row at `base` (stride `inner`, length L), computed by
// the whole block. Threads with no element start from the row's first value (neutral for max).
template <typename T>
__device__ void sx_row_stats(const T* __restrict__ x, long long base, long long L,
                             long long inner, T* buf, T* row_max, T* row_sum) {
    T m = x[base];
    for (long long j = threadIdx.x; j < L; j += blockDim.x) m = sx_max(m, x[base + j * inner]);
    m = sx_block_max(m, buf);
    T s = T(0);
    for (long long j = threadIdx.x; j < L; j += blockDim.x) s += sx_exp(x[base + j * inner] - m);
    *row_sum = sx_block_sum(s, buf);
    *row_max = m;
}

// ---------------------------------------------------------------------------------------------
// softmax_fwd_{f32,f64}(const T* x, T* y, long long rows, long long L, long long inner)
// log_softmax_fwd_{f32,f64}(same arguments)
//   What: y = exp(x - max) / sum(exp(x - max)) over each row (log form: x - max - log(sum)).
//   Threads: one block per row, grid-stride over rows (row = blockIdx.x, += gridDim.x); the
//   block's threads stride over the row's L elements (any L: shorter or longer than the
//   block), then a shared-memory max reduction and a sum reduction.
//   NumPy twins: softmax_forward(x, axis) / log_softmax_forward(x, axis).
// ---------------------------------------------------------------------------------------------
template <typename T, bool LOG>
__device__ void softmax_fwd_impl(const T* __restrict__ x, T* __restrict__ y, T* buf,
                                 long long rows, long long L, long long inner) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = (r / inner) * L * inner + r % inner;
        T m, s;
        sx_row_stats(x, base, L, inner, buf, &m, &s);
        if (LOG) {
            const T lse = m + sx_log(s);
            for (long long j = threadIdx.x; j < L; j += blockDim.x)
                y[base + j * inner] = x[base + j * inner] - lse;
        } else {
            const T inv = T(1) / s;
            for (long long j = threadIdx.x; j < L; j += blockDim.x)
                y[base + j * inner] = sx_exp(x[base + j * inner] - m) * inv;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// softmax_bwd_{f32,f64}(const T* y, const T* g, T* dx, long long rows, long long L,
//                       long long inner)
//   What: dx = y * (g - sum(g * y)) per row, y the softmax output.
// log_softmax_bwd_{f32,f64}(same arguments)
//   What: dx = g - exp(y) * sum(g) per row, y the log-softmax output.
//   Threads: one block per row (grid-stride over rows), one shared-memory sum reduction.
//   NumPy twins: softmax_backward(y, g, axis) / log_softmax_backward(y, g, axis).
// ---------------------------------------------------------------------------------------------
template <typename T, bool LOG>
__device__ void softmax_bwd_impl(const T* __restrict__ y, const T* __restrict__ g,
                                 T* __restrict__ dx, T* buf, long long rows, long long L,
                                 long long inner) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = (r / inner) * L * inner + r % inner;
        T acc = T(0);
        for (long long j = threadIdx.x; j < L; j += blockDim.x) {
            const long long k = base + j * inner;
            acc += LOG ? g[k] : g[k] * y[k];
        }
        const T d = sx_block_sum(acc, buf);
        for (long long j = threadIdx.x; j < L; j += blockDim.x) {
            const long long k = base + j * inner;
            dx[k] = LOG ? g[k] - sx_exp(y[k]) * d : y[k] * (g[k] - d);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// softmax_xent_fwd_{f32,f64}(const T* x, const long long* target, const T* w, T* loss,
//     T* wrow, T* logp, long long* err, long long rows, long long C, long long inner,
//     long long ignore_index, T eps)
//   What: per row r with target t = target[r] (x viewed as (N, C, inner), rows = N * inner):
//     logp[r, :] = log_softmax(x[r, :])                      (saved for the backward pass)
//     loss[r] = -(1 - eps) * w[t] * logp[r, t] - (eps / C) * sum_c w[c] * logp[r, c]
//     wrow[r] = w[t]                      (the row's share of the 'mean' normaliser)
//   and loss[r] = wrow[r] = 0 where t == ignore_index (logp is still written). w is the class
//   weight (pass ones for none); eps the label smoothing. This is PyTorch's cross_entropy with
//   class-index targets: 'mean' = sum(loss) / sum(wrow). A target outside [0, C) that is not
//   ignore_index gives loss NaN and wrow 0 (never an out-of-bounds read) and is recorded in
//   err, the device-side range check read later by the host (no sync here):
//     err[0] = min(err[0], t)  (atomicMin: the smallest bad target, whatever the order)
//     err[1] += 1              (atomicAdd: how many bad targets)
//   err accumulates across launches until the host reads and resets it ([INT64_MAX, 0]).
//   Threads: one block per row (grid-stride over rows): max and sum reductions, then (only
//   when eps != 0) a third reduction for the smoothing term. Thread 0 writes loss and wrow.
//   NumPy twin: softmax_xent_forward(logits, target, weight, ignore_index, label_smoothing,
//   err).
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ void softmax_xent_fwd_impl(const T* __restrict__ x, const long long* __restrict__ target,
                                      const T* __restrict__ w, T* __restrict__ loss,
                                      T* __restrict__ wrow, T* __restrict__ logp,
                                      long long* __restrict__ err, T* buf,
                                      long long rows, long long C, long long inner,
                                      long long ignore_index, T eps) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = (r / inner) * C * inner + r % inner;
        T m, s;
        sx_row_stats(x, base, C, inner, buf, &m, &s);
        const T lse = m + sx_log(s);
        T acc = T(0);
        for (long long j = threadIdx.x; j < C; j += blockDim.x) {
            const T lp = x[base + j * inner] - lse;
            logp[base + j * inner] = lp;
            acc += w[j] * lp;
        }
        if (eps != T(0)) acc = sx_block_sum(acc, buf);  // eps is uniform: no divergent barrier
        if (threadIdx.x == 0) {
            const long long t = target[r];
            if (t == ignore_index) {
                loss[r] = T(0);
                wrow[r] = T(0);
            } else if (t < 0 || t >= C) {
                loss[r] = sx_log(T(-1));  // NaN (log of a negative number)
                wrow[r] = T(0);
                atomicMin(err, t);
                atomicAdd(reinterpret_cast<unsigned long long*>(err + 1), 1ULL);
            } else {
                const T wt = w[t];
                const T lpt = x[base + t * inner] - lse;  // same value as logp[r, t]
                T l = -(T(1) - eps) * wt * lpt;
                if (eps != T(0)) l -= eps / T(C) * acc;
                loss[r] = l;
                wrow[r] = wt;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// softmax_xent_bwd_{f32,f64}(const T* logp, const long long* target, const T* w,
//     const T* grow, T* dx, long long n, long long C, long long inner,
//     long long ignore_index, T eps)
//   What: the gradient of loss[r] (above) times grow[r] (the upstream gradient of the row,
//   already divided by the 'mean' normaliser), with p = exp(logp), t = target[r], W = sum(w):
//     dx[r, c] = grow[r] * (p[r, c] * ((1 - eps) w[t] + (eps / C) W)
//                           - (1 - eps) w[t] [c == t] - (eps / C) w[c])
//   and 0 on rows whose target is ignore_index. n = rows * C elements.
//   Threads: 1-D grid-stride loop, one thread per element (no per-row reduction is needed).
//   Each block first computes W with a shared-memory sum over the C weights (only when
//   eps != 0). Element i: c = (i / inner) % C, row = (i / (C * inner)) * inner + i % inner.
//   NumPy twin: softmax_xent_backward(logp, target, weight, grow, ignore_index,
//   label_smoothing).
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ void softmax_xent_bwd_impl(const T* __restrict__ logp,
                                      const long long* __restrict__ target,
                                      const T* __restrict__ w, const T* __restrict__ grow,
                                      T* __restrict__ dx, T* buf, long long n, long long C,
                                      long long inner, long long ignore_index, T eps) {
    T W = T(0);
    if (eps != T(0)) {
        T acc = T(0);
        for (long long j = threadIdx.x; j < C; j += blockDim.x) acc += w[j];
        W = sx_block_sum(acc, buf);
    }
    const T keep = T(1) - eps;
    const T spread = eps / T(C);
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long c = (i / inner) % C;
        const long long r = (i / (C * inner)) * inner + i % inner;
        const long long t = target[r];
        if (t == ignore_index || t < 0 || t >= C) {
            dx[i] = T(0);
            continue;
        }
        const T wt = w[t];
        T d = sx_exp(logp[i]) * (keep * wt + spread * W) - spread * w[c];
        if (c == t) d -= keep * wt;
        dx[i] = grow[r] * d;
    }
}

// ---------------------------------------------------------------- extern "C" wrappers
extern "C" __global__ void softmax_fwd_f32(const float* x, float* y, long long rows, long long L,
                                           long long inner) {
    __shared__ float buf[SX_MAX_BLOCK];
    softmax_fwd_impl<float, false>(x, y, buf, rows, L, inner);
}
extern "C" __global__ void softmax_fwd_f64(const double* x, double* y, long long rows,
                                           long long L, long long inner) {
    __shared__ double buf[SX_MAX_BLOCK];
    softmax_fwd_impl<double, false>(x, y, buf, rows, L, inner);
}
extern "C" __global__ void log_softmax_fwd_f32(const float* x, float* y, long long rows,
                                               long long L, long long inner) {
    __shared__ float buf[SX_MAX_BLOCK];
    softmax_fwd_impl<float, true>(x, y, buf, rows, L, inner);
}
extern "C" __global__ void log_softmax_fwd_f64(const double* x, double* y, long long rows,
                                               long long L, long long inner) {
    __shared__ double buf[SX_MAX_BLOCK];
    softmax_fwd_impl<double, true>(x, y, buf, rows, L, inner);
}
extern "C" __global__ void softmax_bwd_f32(const float* y, const float* g, float* dx,
                                           long long rows, long long L, long long inner) {
    __shared__ float buf[SX_MAX_BLOCK];
    softmax_bwd_impl<float, false>(y, g, dx, buf, rows, L, inner);
}
extern "C" __global__ void softmax_bwd_f64(const double* y, const double* g, double* dx,
                                           long long rows, long long L, long long inner) {
    __shared__ double buf[SX_MAX_BLOCK];
    softmax_bwd_impl<double, false>(y, g, dx, buf, rows, L, inner);
}
extern "C" __global__ void log_softmax_bwd_f32(const float* y, const float* g, float* dx,
                                               long long rows, long long L, long long inner) {
    __shared__ float buf[SX_MAX_BLOCK];
    softmax_bwd_impl<float, true>(y, g, dx, buf, rows, L, inner);
}
extern "C" __global__ void log_softmax_bwd_f64(const double* y, const double* g, double* dx,
                                               long long rows, long long L, long long inner) {
    __shared__ double buf[SX_MAX_BLOCK];
    softmax_bwd_impl<double, true>(y, g, dx, buf, rows, L, inner);
}
extern "C" __global__ void softmax_xent_fwd_f32(const float* x, const long long* target,
                                                const float* w, float* loss, float* wrow,
                                                float* logp, long long* err, long long rows,
                                                long long C, long long inner,
                                                long long ignore_index, float eps) {
    __shared__ float buf[SX_MAX_BLOCK];
    softmax_xent_fwd_impl<float>(x, target, w, loss, wrow, logp, err, buf, rows, C, inner,
                                 ignore_index, eps);
}
extern "C" __global__ void softmax_xent_fwd_f64(const double* x, const long long* target,
                                                const double* w, double* loss, double* wrow,
                                                double* logp, long long* err, long long rows,
                                                long long C, long long inner,
                                                long long ignore_index, double eps) {
    __shared__ double buf[SX_MAX_BLOCK];
    softmax_xent_fwd_impl<double>(x, target, w, loss, wrow, logp, err, buf, rows, C, inner,
                                  ignore_index, eps);
}
extern "C" __global__ void softmax_xent_bwd_f32(const float* logp, const long long* target,
                                                const float* w, const float* grow, float* dx,
                                                long long n, long long C, long long inner,
                                                long long ignore_index, float eps) {
    __shared__ float buf[SX_MAX_BLOCK];
    softmax_xent_bwd_impl<float>(logp, target, w, grow, dx, buf, n, C, inner, ignore_index,
                                 eps);
}
extern "C" __global__ void softmax_xent_bwd_f64(const double* logp, const long long* target,
                                                const double* w, const double* grow,
                                                double* dx, long long n, long long C,
                                                long long inner, long long ignore_index,
                                                double eps) {
    __shared__ double buf[SX_MAX_BLOCK];
    softmax_xent_bwd_impl<double>(logp, target, w, grow, dx, buf, n, C, inner, ignore_index,
                                  eps);
}
