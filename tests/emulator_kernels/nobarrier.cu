// No barriers: the emulator's fast path (tests/test_emulator.py).
extern "C" __global__ void fill_ids(int* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) y[i] = i;
}
