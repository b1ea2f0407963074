// Batch normalisation: per-channel statistics, normalise + affine forward, and backward.
//
// Layout: x is C-contiguous (N, C, S) where S = H*W for 4-D inputs and S = 1 for (N, C)
// inputs; element (n, c, s) is x[(n*C + c)*S + s]. Per-channel vectors (mean, var, weight,
// bias, sums) have C entries. The reductions accumulate in double whatever T is, and every
// reduction runs in a fixed order for a given block size, so results are deterministic
// (no atomics). NumPy twins: gpucnn/backend/numpy_ops/norm.py.

// No <math.h>: NVRTC has no libc headers; sqrt/rsqrt/fabs are CUDA built-in device functions.

#define BN_MAX_BLOCK 1024  // shared scratch size: launches use at most 1024 threads per block

// Sum of the block's `buf[0..blockDim.x)` into buf[0]: a shared-memory tree reduction that
// works for any blockDim.x (not only powers of two). All threads of the block must call it.
__device__ __forceinline__ void bn_block_sum(double* buf) {
    unsigned int tid = threadIdx.x;
    unsigned int n = blockDim.x;
    unsigned int half = 1;
    while (half < n) half <<= 1;  // next power of two >= n
    for (half >>= 1; half > 0; half >>= 1) {
        if (tid < half && tid + half < n) buf[tid] += buf[tid + half];
        __syncthreads();
    }
}

// bn_stats_<T>: mean[c] = sum x[n,c,s] / M and biased var[c] = sum (x - mean[c])^2 / M,
// M = N*S, two passes over the channel (accurate for large means).
// Thread mapping: one block per channel (grid-stride over channels: c = blockIdx.x,
// blockIdx.x + gridDim.x, ...); the block's threads stride over the channel's M elements.
// Twin: batchnorm_stats.
template <typename T>
__device__ void bn_stats(const T* __restrict__ x, T* __restrict__ mean, T* __restrict__ var,
                         long long N, long long C, long long S) {
    __shared__ double buf[BN_MAX_BLOCK];
    const long long M = N * S;
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        double acc = 0.0;
        for (long long j = threadIdx.x; j < M; j += blockDim.x) {
            long long n = j / S, s = j - n * S;
            acc += (double)x[(n * C + c) * S + s];
        }
        buf[threadIdx.x] = acc;
        __syncthreads();
        bn_block_sum(buf);
        const double mu = buf[0] / (double)M;
        __syncthreads();  // everyone has read buf[0] before it is overwritten
        acc = 0.0;
        for (long long j = threadIdx.x; j < M; j += blockDim.x) {
            long long n = j / S, s = j - n * S;
            double d = (double)x[(n * C + c) * S + s] - mu;
            acc += d * d;
        }
        buf[threadIdx.x] = acc;
        __syncthreads();
        bn_block_sum(buf);
        if (threadIdx.x == 0) {
            mean[c] = (T)mu;
            var[c] = (T)(buf[0] / (double)M);
        }
        __syncthreads();  // buf is reused by the next channel
    }
}

// bn_fwd_<T>: y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c].
// Thread mapping: one thread per element of x (1-D grid-stride over N*C*S).
// Twin: batchnorm_forward.
template <typename T>
__device__ void bn_fwd(const T* __restrict__ x, const T* __restrict__ mean,
                       const T* __restrict__ var, const T* __restrict__ weight,
                       const T* __restrict__ bias, T* __restrict__ y, T eps, long long N,
                       long long C, long long S) {
    const long long total = N * C * S;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        long long c = (i / S) % C;
        T invstd = (T)1 / sqrt(var[c] + eps);
        y[i] = (x[i] - mean[c]) * invstd * weight[c] + bias[c];
    }
}

// bn_bwd_reduce_<T>: sum_dy[c] = sum dy[n,c,s]; sum_dy_xhat[c] = sum dy * xhat with
// xhat = (x - mean[c]) / sqrt(var[c] + eps). These are also dbias and dweight.
// Thread mapping: one block per channel (grid-stride over channels), threads stride over
// the channel's N*S elements, double accumulation, shared-memory tree reduction.
// Twin: the reductions inside batchnorm_backward.
template <typename T>
__device__ void bn_bwd_reduce(const T* __restrict__ dy, const T* __restrict__ x,
                              const T* __restrict__ mean, const T* __restrict__ var,
                              T* __restrict__ sum_dy, T* __restrict__ sum_dy_xhat, T eps,
                              long long N, long long C, long long S) {
    __shared__ double buf[BN_MAX_BLOCK];
    const long long M = N * S;
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        const double mu = (double)mean[c];
        const double invstd = 1.0 / sqrt((double)var[c] + (double)eps);
        double a = 0.0, b = 0.0;
        for (long long j = threadIdx.x; j < M; j += blockDim.x) {
            long long n = j / S, s = j - n * S;
            long long k = (n * C + c) * S + s;
            double g = (double)dy[k];
            a += g;
            b += g * ((double)x[k] - mu);
        }
        buf[threadIdx.x] = a;
        __syncthreads();
        bn_block_sum(buf);
        double total_a = buf[0];
        __syncthreads();
        buf[threadIdx.x] = b;
        __syncthreads();
        bn_block_sum(buf);
        if (threadIdx.x == 0) {
            sum_dy[c] = (T)total_a;
            sum_dy_xhat[c] = (T)(buf[0] * invstd);
        }
        __syncthreads();
    }
}

// bn_bwd_dx_<T>: the input gradient.
//   training: dx = weight[c] * invstd[c] * (dy - sum_dy[c]/M - xhat * sum_dy_xhat[c]/M)
//   eval (running statistics are constants): dx = weight[c] * invstd[c] * dy
// Thread mapping: one thread per element (1-D grid-stride over N*C*S).
// Twin: the dx part of batchnorm_backward.
template <typename T>
__device__ void bn_bwd_dx(const T* __restrict__ dy, const T* __restrict__ x,
                          const T* __restrict__ mean, const T* __restrict__ var,
                          const T* __restrict__ weight, const T* __restrict__ sum_dy,
                          const T* __restrict__ sum_dy_xhat, T* __restrict__ dx, T eps,
                          int training, long long N, long long C, long long S) {
    const long long total = N * C * S;
    const double inv_m = 1.0 / (double)(N * S);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        long long c = (i / S) % C;
        double invstd = 1.0 / sqrt((double)var[c] + (double)eps);
        double g = (double)dy[i];
        if (training) {
            double xhat = ((double)x[i] - (double)mean[c]) * invstd;
            g = g - (double)sum_dy[c] * inv_m - xhat * (double)sum_dy_xhat[c] * inv_m;
        }
        dx[i] = (T)((double)weight[c] * invstd * g);
    }
}

#define BN_INSTANTIATE(T, SUF)                                                                \
    extern "C" __global__ void bn_stats_##SUF(const T* x, T* mean, T* var, long long N,      \
                                              long long C, long long S) {                    \
        bn_stats<T>(x, mean, var, N, C, S);                                                   \
    }                                                                                         \
    extern "C" __global__ void bn_fwd_##SUF(const T* x, const T* mean, const T* var,         \
                                            const T* weight, const T* bias, T* y, T eps,     \
                                            long long N, long long C, long long S) {         \
        bn_fwd<T>(x, mean, var, weight, bias, y, eps, N, C, S);                               \
    }                                                                                         \
    extern "C" __global__ void bn_bwd_reduce_##SUF(const T* dy, const T* x, const T* mean,   \
                                                   const T* var, T* sum_dy, T* sum_dy_xhat,  \
                                                   T eps, long long N, long long C,           \
                                                   long long S) {                             \
        bn_bwd_reduce<T>(dy, x, mean, var, sum_dy, sum_dy_xhat, eps, N, C, S);                \
    }                                                                                         \
    extern "C" __global__ void bn_bwd_dx_##SUF(                                               \
        const T* dy, const T* x, const T* mean, const T* var, const T* weight,               \
        const T* sum_dy, const T* sum_dy_xhat, T* dx, T eps, int training, long long N,      \
        long long C, long long S) {                                                           \
        bn_bwd_dx<T>(dy, x, mean, var, weight, sum_dy, sum_dy_xhat, dx, eps, training, N, C, \
                     S);                                                                      \
    }

BN_INSTANTIATE(float, f32)
BN_INSTANTIATE(double, f64)
