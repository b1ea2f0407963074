// mma_unit.cu: one-warp probes of cuda/mma.cuh for tests/test_gemm_kernels.py.
//
// The MMA probes take each lane's fragment registers as the test built them from the PTX ISA
// layouts (a[lane * 4 + j], b[lane * 2 + j], c[lane * 4 + i]) and return each lane's D
// registers, so the test checks the emulated MMA's fragment layout against its own reading of
// the ISA. The load probe returns the registers mma.cuh's fragment loads build from a tile.
#include "mma.cuh"

#define MMA_PROBE(NAME, STEP)                                                                \
    extern "C" __global__ void NAME(const unsigned* a, const unsigned* b, const float* c,      \
                                    float* d) {                                              \
        const int lane = gpucnn_lane_id();                                                   \
        unsigned ra[4], rb[2];                                                               \
        float rc[4], rd[4];                                                                  \
        for (int j = 0; j < 4; ++j) ra[j] = a[lane * 4 + j];                                 \
        for (int j = 0; j < 2; ++j) rb[j] = b[lane * 2 + j];                                 \
        for (int i = 0; i < 4; ++i) rc[i] = c[lane * 4 + i];                                 \
        STEP(rd, ra, rb, rc);                                                                \
        for (int i = 0; i < 4; ++i) d[lane * 4 + i] = rd[i];                                 \
    }
MMA_PROBE(probe_mma_tf32, mma_m16n8k8_tf32)
MMA_PROBE(probe_mma_f16, mma_m16n8k16_f16)
MMA_PROBE(probe_mma_bf16, mma_m16n8k16_bf16)

// A32 (16 x 8, row-major), B32 (8 x 8 stored [n][k]), A16 (16 x 16), B16 (8 x 16 stored [n][k]):
// per lane 12 registers out: tf32 a[4], tf32 b[2], 16-bit a[4], 16-bit b[2].
extern "C" __global__ void probe_mma_loads(const float* A32, const float* B32,
                                           const unsigned short* A16, const unsigned short* B16,
                                           unsigned* out) {
    const int lane = gpucnn_lane_id();
    unsigned r[12];
    mma_load_a_tf32(r, A32, 8, 0, 0);
    mma_load_b_tf32(r + 4, B32, 8, 0, 0);
    mma_load_a_16(r + 6, A16, 16, 0, 0);
    mma_load_b_16(r + 10, B16, 16, 0, 0);
    for (int i = 0; i < 12; ++i) out[lane * 12 + i] = r[i];
}

// Conversions, one thread per element (grid-stride).
extern "C" __global__ void probe_convert(const float* x, unsigned short* f16, unsigned short* bf16,
                                         unsigned* tf32, float* f16_back, float* bf16_back,
                                         long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        f16[i] = gpucnn_float_to_f16(x[i]);
        bf16[i] = gpucnn_float_to_bf16(x[i]);
        tf32[i] = gpucnn_float_to_tf32(x[i]);
        f16_back[i] = gpucnn_f16_to_float(f16[i]);
        bf16_back[i] = gpucnn_bf16_to_float(bf16[i]);
    }
}
