// bias.cu: per-channel bias for NCHW tensors (conv2d), forward and backward.
//
// Layout: y / dy are C-contiguous (N, C, H, W) with HW = H*W; b / db are (C,).
// Indexing is 64-bit (long long) throughout: N*C*HW may pass 2^31.

// ---------------------------------------------------------------------------------------------
// bias_add_nchw_{f32,f64}(const T* b, T* y, long long total, long long C, long long HW)
//   What: y[n, c, h, w] += b[c], IN PLACE on y (y is both input and output).
//   Threads: 1-D grid-stride loop, one thread per element of y (i in [0, total)), so any grid
//   size is correct; c = (i / HW) % C.
//   NumPy twin: gpucnn.backend.numpy_ops.bias.bias_add_nchw.
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ void bias_add_nchw_impl(const T* __restrict__ b, T* __restrict__ y, long long total,
                                   long long C, long long HW) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long c = (i / HW) % C;
        y[i] += b[c];
    }
}

extern "C" __global__ void bias_add_nchw_f32(const float* b, float* y, long long total,
                                             long long C, long long HW) {
    bias_add_nchw_impl<float>(b, y, total, C, HW);
}

extern "C" __global__ void bias_add_nchw_f64(const double* b, double* y, long long total,
                                             long long C, long long HW) {
    bias_add_nchw_impl<double>(b, y, total, C, HW);
}

// ---------------------------------------------------------------------------------------------
// bias_grad_nchw_{f32,f64}(const T* dy, T* db, long long N, long long C, long long HW)
//   What: db[c] = sum over n, h, w of dy[n, c, h, w] (the bias gradient), written (not added).
//   Threads: one block per channel, grid-stride over channels (c = blockIdx.x, += gridDim.x), so
//   any grid size is correct. Inside a block, thread t sums elements e = t, t + blockDim.x, ...
//   of the channel's N*HW values (n = e / HW, s = e % HW) in a fixed order, then the block
//   combines the partial sums with a shared-memory tree reduction (__syncthreads() between
//   levels; works for any blockDim.x <= BIAS_MAX_BLOCK, power of two or not). No atomics: the
//   result is deterministic for a given block size.
//   NumPy twin: gpucnn.backend.numpy_ops.bias.bias_grad_nchw.
// ---------------------------------------------------------------------------------------------
#define BIAS_MAX_BLOCK 1024

template <typename T>
__device__ void bias_grad_nchw_impl(const T* __restrict__ dy, T* __restrict__ db, T* sdata,
                                    long long N, long long C, long long HW) {
    const unsigned int tid = threadIdx.x;
    const unsigned int nthreads = blockDim.x;
    // Smallest power of two >= nthreads, halved: the first tree level.
    unsigned int top = 1;
    while (top < nthreads) top <<= 1;
    const long long count = N * HW;
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        T acc = T(0);
        for (long long e = tid; e < count; e += nthreads) {
            const long long n = e / HW;
            const long long s = e - n * HW;
            acc += dy[(n * C + c) * HW + s];
        }
        sdata[tid] = acc;
        __syncthreads();
        for (unsigned int half = top >> 1; half > 0; half >>= 1) {
            if (tid < half && tid + half < nthreads) sdata[tid] += sdata[tid + half];
            __syncthreads();
        }
        if (tid == 0) db[c] = sdata[0];
        __syncthreads();  // sdata is reused by the next channel of this block
    }
}

extern "C" __global__ void bias_grad_nchw_f32(const float* dy, float* db, long long N,
                                              long long C, long long HW) {
    __shared__ float sdata[BIAS_MAX_BLOCK];
    bias_grad_nchw_impl<float>(dy, db, sdata, N, C, HW);
}

extern "C" __global__ void bias_grad_nchw_f64(const double* dy, double* db, long long N,
                                              long long C, long long HW) {
    __shared__ double sdata[BIAS_MAX_BLOCK];
    bias_grad_nchw_impl<double>(dy, db, sdata, N, C, HW);
}
