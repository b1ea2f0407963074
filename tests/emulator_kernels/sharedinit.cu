// A block reduction with a planted bug: the tree starts at a power of two above the block
// size, so threads read shared slots that nobody wrote. On a GPU those hold garbage; the
// emulator poisons static shared memory (NaN) so the bug shows instead of reading zeros.
extern "C" __global__ void sum_reads_unwritten(const float* x, float* out, int n) {
    __shared__ float buf[256];
    unsigned t = threadIdx.x;
    buf[t] = (t < (unsigned)n) ? x[t] : 0.0f;
    __syncthreads();
    for (unsigned s = 128; s > 0; s >>= 1) {  // bug: assumes blockDim.x == 256
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}

extern "C" __global__ void sum_correct(const float* x, float* out, int n) {
    __shared__ float buf[256];
    unsigned t = threadIdx.x;
    buf[t] = (t < (unsigned)n) ? x[t] : 0.0f;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}
