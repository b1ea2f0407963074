// common.cuh: shared helpers for gpucnn kernels (grid-stride loops, 64-bit indexing).
//
// Included by every cuda/*.cu with `#include "common.cuh"`; compiled by NVRTC (CuPy RawModule),
// nvcc (the -ptx check) and the host emulator (gpucnn/testing/emulator.py), so it uses no
// standard headers.
#pragma once

// Signed 64-bit index: element counts of activations and im2col buffers can pass 2^31.
typedef long long index_t;

// Threads per block of 1-D launches (the launcher may choose another; kernels must not assume).
#define GPUCNN_DEFAULT_BLOCK 256

// Global linear id of this thread in a 1-D launch, as a 64-bit index.
__device__ __forceinline__ index_t global_thread_id() {
    return (index_t)blockIdx.x * blockDim.x + threadIdx.x;
}

// Total threads of a 1-D launch (the grid-stride step), as a 64-bit index.
__device__ __forceinline__ index_t grid_stride() { return (index_t)blockDim.x * gridDim.x; }

// Loop `i` over [0, n) with a grid-stride loop: correct for any grid size, 64-bit safe.
#define GRID_STRIDE_LOOP(i, n)                                                      \
    for (index_t i = global_thread_id(), i##_step_ = grid_stride(); i < (index_t)(n); \
         i += i##_step_)

// Ceiling division for positive integers.
__device__ __forceinline__ index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// Split a row-major linear index over (d0, d1, d2, d3) into its coordinates; d0 is implied.
__device__ __forceinline__ void unravel4(index_t idx, int d1, int d2, int d3, index_t* i0, int* i1,
                                         int* i2, int* i3) {
    *i3 = (int)(idx % d3);
    idx /= d3;
    *i2 = (int)(idx % d2);
    idx /= d2;
    *i1 = (int)(idx % d1);
    *i0 = idx / d1;
}
