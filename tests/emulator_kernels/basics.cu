// Small kernels that exercise the host emulator (tests/test_emulator.py). Not shipped.

// Correct grid-stride vector add.
extern "C" __global__ void vadd(const float* a, const float* b, float* c, int n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x)
        c[i] = a[i] + b[i];
}

// Planted bug: `<=` writes one element past the end.
extern "C" __global__ void vadd_off_by_one(const float* a, const float* b, float* c, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i <= n; i += blockDim.x * gridDim.x)
        c[i] = a[i] + b[i];
}

// Planted bug: the start index forgets blockIdx (right only with one block).
extern "C" __global__ void vadd_no_block_offset(const float* a, const float* b, float* c, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x * gridDim.x) c[i] = a[i] + b[i];
}

// Block sum in shared memory (blockDim.x == 256): out[blockIdx.x] = sum of the block's elements.
extern "C" __global__ void block_sum(const float* x, float* out, int n) {
    __shared__ float s[256];
    const int t = threadIdx.x;
    float v = 0.0f;
    for (int i = blockIdx.x * blockDim.x + t; i < n; i += blockDim.x * gridDim.x) v += x[i];
    s[t] = v;
    __syncthreads();
    for (int step = blockDim.x / 2; step > 0; step >>= 1) {
        if (t < step) s[t] += s[t + step];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// The same reduction without barriers: a race that must give a wrong sum.
extern "C" __global__ void block_sum_racy(const float* x, float* out, int n) {
    __shared__ float s[256];
    const int t = threadIdx.x;
    float v = 0.0f;
    for (int i = blockIdx.x * blockDim.x + t; i < n; i += blockDim.x * gridDim.x) v += x[i];
    s[t] = v;
    for (int step = blockDim.x / 2; step > 0; step >>= 1) {
        if (t < step) s[t] += s[t + step];
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// Warp reductions: out_down[warp] by __shfl_down_sync; every lane's butterfly (xor) total in
// out_xor[thread]; bcast[thread] = value of lane 5 via __shfl_sync.
extern "C" __global__ void warp_ops(const float* x, float* out_down, float* out_xor, float* bcast,
                                    unsigned* ballot, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = i < n ? x[i] : 0.0f;
    float d = v, e = v;
    for (int o = 16; o > 0; o >>= 1) d += __shfl_down_sync(0xffffffffu, d, o);
    for (int o = 1; o < 32; o <<= 1) e += __shfl_xor_sync(0xffffffffu, e, o);
    const float b = __shfl_sync(0xffffffffu, v, 5);
    const unsigned bal = __ballot_sync(0xffffffffu, v > 0.0f);
    if (i < n) {
        out_xor[i] = e;
        bcast[i] = b;
        if ((threadIdx.x & 31) == 0) {
            out_down[i / 32] = d;
            ballot[i / 32] = bal;
        }
    }
}

// Histogram and other atomics.
extern "C" __global__ void atomics(const int* x, int n, unsigned* hist, int nbins, float* fsum,
                                   double* dsum, unsigned long long* usum, int* imax, int* imin,
                                   int* cas_count) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        const int v = x[i];
        atomicAdd(&hist[v % nbins], 1);
        atomicAdd(fsum, (float)v);
        atomicAdd(dsum, (double)v);
        atomicAdd(usum, (unsigned long long)v);
        atomicMax(imax, v);
        atomicMin(imin, v);
        int old = *cas_count, assumed;
        do {
            assumed = old;
            old = atomicCAS(cas_count, assumed, assumed + 1);
        } while (old != assumed);
    }
}

// Dynamic shared memory: reverse each block's chunk of x into y.
extern "C" __global__ void reverse_blocks(const float* x, float* y, int n) {
    extern __shared__ float buf[];
    const int base = blockIdx.x * blockDim.x;
    const int t = threadIdx.x;
    if (base + t < n) buf[t] = x[base + t];
    __syncthreads();
    const int m = min(n - base, (int)blockDim.x);
    if (t < m) y[base + t] = buf[m - 1 - t];
}

// 3-D indices: out[global linear thread] = packed (block x, y, z, thread x, y, z).
extern "C" __global__ void indices3d(int* out) {
    const long long block = ((long long)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const long long g = block * (blockDim.x * blockDim.y * blockDim.z) + thread;
    out[g] = ((((blockIdx.x * 8 + blockIdx.y) * 8 + blockIdx.z) * 8 + threadIdx.x) * 8 +
              threadIdx.y) * 8 + threadIdx.z;
}

// Planted bug: a barrier after an early return.
extern "C" __global__ void divergent_barrier(float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __syncthreads();
    y[i] = 1.0f;
}

// Scalars of every width, copied out: checks pass-by-value widths.
extern "C" __global__ void scalars(long long* out_i, double* out_f, int a, unsigned b,
                                   long long c, unsigned long long d, float e, double f) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        out_i[0] = a;
        out_i[1] = b;
        out_i[2] = c;
        out_i[3] = (long long)d;
        out_f[0] = e;
        out_f[1] = f;
        out_f[2] = __int_as_float(__float_as_int(e)) + max(1, 2) + fmaxf(1.0f, 3.0f);
    }
}

// In-place scale (the same array is input and output).
extern "C" __global__ void scale_inplace(const float* x, float* y, float s, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = s * x[i];
}

// Sub-warp shuffles (width 8) and __syncthreads_count: seg[i] = sum of i's 8-lane segment,
// count[0] = number of positive values in the block.
extern "C" __global__ void segments_and_count(const float* x, float* seg, int* count) {
    const int t = threadIdx.x;
    float v = x[t];
    for (int o = 4; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, 8);
    seg[t] = v;
    const int c = __syncthreads_count(x[t] > 0.0f);
    if (t == 0) count[0] = c;
}

// Planted bug: a full-warp shuffle after half the warp has returned.
extern "C" __global__ void shuffle_after_exit(float* y) {
    if (threadIdx.x >= 16) return;
    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, y[threadIdx.x], 1);
}
