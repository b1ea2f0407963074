// random.cu: counter-based uniform random numbers (Philox4x32-10), identical on every backend.
//
// A stream is (seed, offset): word w of the stream is word (w % 4) of Philox4x32-10 applied to
// the counter (w / 4 as a 64-bit value in c0, c1; c2 = c3 = 0) under the key (seed_lo, seed_hi).
// Because any word can be computed from its index alone, the state that gpucnn.random saves
// is just (seed, offset), training resumes exactly on either backend, and the NumPy twin
// (gpucnn/backend/numpy_ops/random.py) produces bit-identical numbers.
#include "common.cuh"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// Philox4x32 with 10 rounds: the 4 output words for one 128-bit counter.
__device__ __forceinline__ void philox4x32_10(unsigned long long block, unsigned k0, unsigned k1,
                                              unsigned out[4]) {
    unsigned c0 = (unsigned)block, c1 = (unsigned)(block >> 32), c2 = 0u, c3 = 0u;
    for (int r = 0; r < 10; ++r) {
        unsigned long long p0 = (unsigned long long)PHILOX_M0 * c0;
        unsigned long long p1 = (unsigned long long)PHILOX_M1 * c2;
        unsigned hi0 = (unsigned)(p0 >> 32), lo0 = (unsigned)p0;
        unsigned hi1 = (unsigned)(p1 >> 32), lo1 = (unsigned)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

// philox_uniform_f32: out[e] = (word(offset + e) >> 8) * 2^-24, in [0, 1).
//   thread mapping: one thread per element, grid-stride loop; offset must be a multiple of 4.
//   NumPy twin: numpy_ops.random.random_uniform(n, float32, seed, offset).
extern "C" __global__ void philox_uniform_f32(float* __restrict__ out, index_t n, unsigned k0,
                                              unsigned k1, unsigned long long offset) {
    GRID_STRIDE_LOOP(e, n) {
        unsigned long long w = offset + (unsigned long long)e;
        unsigned words[4];
        philox4x32_10(w >> 2, k0, k1, words);
        out[e] = (float)(words[w & 3u] >> 8) * (1.0f / 16777216.0f);
    }
}

// philox_uniform_f64: out[e] from the word pair (offset + 2e, offset + 2e + 1), 53 random bits:
//   ((a >> 5) * 2^26 + (b >> 6)) * 2^-53, in [0, 1). One thread per element, grid-stride.
//   NumPy twin: numpy_ops.random.random_uniform(n, float64, seed, offset).
extern "C" __global__ void philox_uniform_f64(double* __restrict__ out, index_t n, unsigned k0,
                                              unsigned k1, unsigned long long offset) {
    GRID_STRIDE_LOOP(e, n) {
        unsigned long long w = offset + 2ull * (unsigned long long)e;
        unsigned words[4];
        philox4x32_10(w >> 2, k0, k1, words);
        unsigned a = words[w & 3u] >> 5, b = words[(w & 3u) + 1u] >> 6;
        out[e] = ((double)a * 67108864.0 + (double)b) * (1.0 / 9007199254740992.0);
    }
}
