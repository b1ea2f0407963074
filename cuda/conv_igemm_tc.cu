// conv_igemm_tc.cu: implicit-GEMM 2-D convolution (NCHW) on tensor cores (mma.sync): forward
// (fused bias + activation epilogue), backward-data and backward-weight (split-K), with TF32,
// FP16 or BF16 operands, FP32 accumulation and FP32 output.
//
// The three GEMMs and their index math are those of cuda/conv_igemm.cu (the FP32/FP64 SIMT
// kernels; see its header): the Problem structs of cuda/conv_igemm.cuh, instantiated with
// In = float (tf32: float32 tensors, rounded to TF32 by gpucnn_float_to_tf32 as they are
// staged in shared memory) or In = unsigned short (raw binary16 / bfloat16 bit patterns, staged
// as they are), and Out = float. Only the tile driver differs:
//
// Tiling (compile-time defines, defaults below; the launcher passes others as -D flags):
//   a block of CONV_TC_WARPS_M x CONV_TC_WARPS_N warps computes a BM x BN tile of D
//   (BM = WARPS_M * WM, BN = WARPS_N * WN); each warp owns a WM x WN patch of (WM/16) x (WN/8)
//   MMA tiles (m16n8k8 for tf32, m16n8k16 for the 16-bit kinds). Per step the block stages a
//   CONV_TC_BK-deep K-slice in shared memory as As[m][k] and Bs[n][k] (k contiguous, rows
//   padded by 4 floats / 8 halves: what mma.cuh's fragment loads read, conflict-free), then
//   every warp runs BK/8 (tf32) or BK/16 (16-bit) MMA steps in ascending k. Software
//   pipelined: each thread loads the NEXT slice's elements from global memory into registers
//   before the MMA steps of this one, and stores them to shared memory after the barrier.
//   Staging: the k-only index math of the slice (Problem::kinfo, BK entries) is worked out
//   once per slice into a shared table; A elements go to consecutive threads along k (the
//   forward weight's rows are contiguous in k); each thread stages the B elements of ONE tile
//   column (tid % BN), whose per-column index math (Problem::col) it does once per tile, so a
//   staged B element costs a bounds check and a load.
//   Tails: staged elements with m >= M, col >= Ncols or k outside this split's K range are
//   zeros, so they add nothing; stores are guarded by m < M and col < Ncols.
//   Grid: a 1-D grid-stride loop over every (group, split, row tile, column tile), column tile
//   fastest, so ANY grid size is correct (the launcher may cap it; the tests sweep caps).
// Under the host emulator (and before sm_80) the MMA steps are mma.cuh's portable bodies, which
// sum in k order in float32: each output is then a plain ascending-k float32 sum of the rounded
// products (exact in float32), i.e. the NumPy twin's result within float32 summation error.
// NumPy twin: gpucnn/backend/numpy_ops/conv_igemm.py (precision="tf32" / "fp16" / "bf16").
#include "common.cuh"
#include "conv_igemm.cuh"
#include "mma.cuh"

#ifndef CONV_TC_WARPS_M
#define CONV_TC_WARPS_M 2  // warps along M (rows of D)
#endif
#ifndef CONV_TC_WARPS_N
#define CONV_TC_WARPS_N 2  // warps along the columns of D
#endif
#ifndef CONV_TC_WM
#define CONV_TC_WM 32  // rows of D per warp (a multiple of 16)
#endif
#ifndef CONV_TC_WN
#define CONV_TC_WN 32  // columns of D per warp (a multiple of 8)
#endif
#ifndef CONV_TC_BK
#define CONV_TC_BK 32  // reduction depth staged per step (a multiple of 16)
#endif

#define CONV_TC_BM (CONV_TC_WARPS_M * CONV_TC_WM)
#define CONV_TC_BN (CONV_TC_WARPS_N * CONV_TC_WN)
// Threads per block: 32 per warp. The launcher computes the same number.
#define CONV_TC_THREADS (32 * CONV_TC_WARPS_M * CONV_TC_WARPS_N)
#define CONV_TC_MT (CONV_TC_WM / 16)  // MMA tiles per warp along M
#define CONV_TC_NT (CONV_TC_WN / 8)   // MMA tiles per warp along the columns

static_assert(CONV_TC_WM % 16 == 0 && CONV_TC_WN % 8 == 0 && CONV_TC_BK % 16 == 0,
              "CONV_TC_WM % 16, CONV_TC_WN % 8 and CONV_TC_BK % 16 must be 0");
static_assert(CONV_TC_THREADS <= 1024, "at most 1024 threads per block");
static_assert(CONV_TC_THREADS % CONV_TC_BN == 0, "CONV_TC_BN must divide the thread count");
static_assert((CONV_TC_BK * CONV_TC_BN) % CONV_TC_THREADS == 0,
              "the thread count must divide CONV_TC_BK * CONV_TC_BN");
static_assert((CONV_TC_BK * CONV_TC_BM) % CONV_TC_THREADS == 0,
              "the thread count must divide CONV_TC_BK * CONV_TC_BM");

// Operand kinds: the traits MmaTf32 / MmaF16 / MmaBf16 of mma.cuh (shared with gemm.cu).

// Load (into registers, staged: TF32-rounded or 16-bit bits) this thread's A and B elements of
// the K-slice at k0, whose kinfo table is kt: A element e = tid + l*NT is (mm, kk) = (e / BK,
// e % BK); B elements are rows b_row + l*(NT/BN) of column my_col. Zero outside M, the columns
// and [k0, k_end).
template <class P, typename Problem>
__device__ __forceinline__ void igemm_tc_load(const Problem& pb, int g, int m0, int M,
                                              const typename Problem::Col& cl, bool col_in,
                                              index_t k0, index_t k_end,
                                              const typename Problem::KInfo* kt, int tid,
                                              int b_row, typename P::smem_t* ra,
                                              typename P::smem_t* rb) {
    constexpr int BN = CONV_TC_BN, BK = CONV_TC_BK, NT = CONV_TC_THREADS;
    const typename P::smem_t zero = typename P::smem_t(0);
    for (int l = 0; l < CONV_TC_BM * BK / NT; ++l) {
        const int e = tid + l * NT;
        const int kk = e % BK, mm = e / BK;
        ra[l] = (m0 + mm < M && k0 + kk < k_end) ? P::stage(pb.a_at(g, m0 + mm, kt[kk])) : zero;
    }
    for (int l = 0; l < BK * BN / NT; ++l) {
        const int kk = b_row + l * (NT / BN);
        rb[l] = (col_in && k0 + kk < k_end) ? P::stage(pb.b_at(g, cl, kt[kk])) : zero;
    }
}

// ---------------------------------------------------------------------------------------------
// The tensor-core tile driver: every (group, split, row tile, column tile) of problem `pb`,
// grid-stride. As: [BM][BK + PAD] ([m][k]), Bs: [BN][BK + PAD] ([n][k]), kt: [2][BK] (the
// Problem::kinfo of two consecutive slices, alternating), all shared, declared by the kernel.
// ---------------------------------------------------------------------------------------------
template <class P, typename Problem>
__device__ __forceinline__ void igemm_tc_tiles(const Problem& pb, int groups, int splits,
                                               typename P::smem_t* As, typename P::smem_t* Bs,
                                               typename Problem::KInfo* kt) {
    constexpr int BM = CONV_TC_BM, BN = CONV_TC_BN, BK = CONV_TC_BK, NT = CONV_TC_THREADS;
    constexpr int LD = BK + P::PAD;
    constexpr int B_STEP = NT / BN;        // slice rows staged by the block per pass
    constexpr int B_LOADS = BK * BN / NT;  // B elements staged per thread
    constexpr int A_LOADS = BM * BK / NT;  // A elements staged per thread
    const int tid = (int)threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp / CONV_TC_WARPS_N, wn = warp % CONV_TC_WARPS_N;
    const int b_col = tid % BN, b_row = tid / BN;  // this thread's staging column / first row

    const int M = pb.M();
    const index_t ncols = pb.cols();
    const IgemmTiles space(M, ncols, pb.K(), groups, splits, BM, BN, BK);

    for (index_t t = blockIdx.x; t < space.count; t += gridDim.x) {
        const IgemmTiles::Tile tl = space.at(t);
        const int g = tl.g, split = tl.split;
        const int m0 = tl.rt * BM;
        const index_t c0 = tl.ct * BN;
        const index_t k_begin = tl.k_begin, k_end = tl.k_end;

        const index_t my_col = c0 + b_col;
        const bool col_in = my_col < ncols;
        const typename Problem::Col cl = pb.col(g, col_in ? my_col : 0);

        float acc[CONV_TC_MT][CONV_TC_NT][4];
        for (int i = 0; i < CONV_TC_MT; ++i)
            for (int j = 0; j < CONV_TC_NT; ++j)
                for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

        // Registers of the slice in flight; the first one loaded before the loop.
        typename P::smem_t ra[A_LOADS], rb[B_LOADS];
        if (k_begin < k_end) {  // (uniform over the block: the barrier is reached by all)
            for (int e = tid; e < BK; e += NT) kt[e] = pb.kinfo(k_begin + e);
            __syncthreads();
            igemm_tc_load<P>(pb, g, m0, M, cl, col_in, k_begin, k_end, kt, tid, b_row, ra, rb);
        }
        int buf = 0;  // kt half of the slice in the registers
        for (index_t k0 = k_begin; k0 < k_end; k0 += BK) {
            const index_t k1 = k0 + BK;  // the next slice
            // Store the registers: As[mm][kk] = A[m0 + mm, k0 + kk], Bs[b_col][kk] = B[k0 +
            // kk, my_col]; and the next slice's k-only index math into the other kt half.
            for (int l = 0; l < A_LOADS; ++l) {
                const int e = tid + l * NT;
                As[(e / BK) * LD + e % BK] = ra[l];
            }
            for (int l = 0; l < B_LOADS; ++l) Bs[b_col * LD + b_row + l * B_STEP] = rb[l];
            typename Problem::KInfo* kn = kt + (buf ^ 1) * BK;
            if (k1 < k_end)
                for (int e = tid; e < BK; e += NT) kn[e] = pb.kinfo(k1 + e);
            __syncthreads();
            // The next slice's global loads, in flight during this slice's MMA steps.
            if (k1 < k_end)
                igemm_tc_load<P>(pb, g, m0, M, cl, col_in, k1, k_end, kn, tid, b_row, ra, rb);
            for (int kk = 0; kk < BK; kk += P::KSTEP) {
                unsigned af[CONV_TC_MT][4], bf[CONV_TC_NT][2];
                for (int i = 0; i < CONV_TC_MT; ++i)
                    P::load_a(af[i], As, LD, wm * CONV_TC_WM + i * 16, kk);
                for (int j = 0; j < CONV_TC_NT; ++j)
                    P::load_b(bf[j], Bs, LD, wn * CONV_TC_WN + j * 8, kk);
                for (int i = 0; i < CONV_TC_MT; ++i)
                    for (int j = 0; j < CONV_TC_NT; ++j) P::mma(acc[i][j], af[i], bf[j]);
            }
            __syncthreads();  // the next iteration overwrites As and Bs
            buf ^= 1;
        }

        // Epilogue: the in-range accumulators of this lane (mma.cuh's C layout).
        for (int i = 0; i < CONV_TC_MT; ++i)
            for (int j = 0; j < CONV_TC_NT; ++j)
                for (int r = 0; r < 4; ++r) {
                    const int m = m0 + wm * CONV_TC_WM + i * 16 + mma_c_row(lane, r);
                    const index_t c = c0 + wn * CONV_TC_WN + j * 8 + mma_c_col(lane, r);
                    if (m < M && c < ncols) pb.store(g, split, m, c, acc[i][j][r]);
                }
    }
}

// ---------------------------------------------------------------------------------------------
// conv_igemm_tc_fwd_{tf32,f16,bf16}(x, w, bias, y, pre, has_bias, act, slope, has_pre,
//                                   N, C, H, W, O, G, KH, KW, SH, SW, PT, PL, DH, DW, P, Q)
// Computes: y (N, O, P, Q, float32) = act(conv(x, w) (+ bias[o] when has_bias != 0)), act the
//           code of epilogue.cuh (0 none, 1 ReLU, 2 LeakyReLU with slope, 3 GELU erf, 4 GELU
//           tanh); with has_pre != 0 also pre (N, O, P, Q) = the value before act. x, w: float32
//           (tf32) or 16-bit bit patterns; bias float32. bias / pre must be valid pointers even
//           when their flag is 0.
// Threads:  CONV_TC_THREADS per block, 1-D grid-stride over G * ceil(Og/BM) * ceil(NPQ/BN).
// NumPy twin: numpy_ops/conv_igemm.py::conv2d_igemm_forward(precision=...).
//
// conv_igemm_tc_bwd_data_{tf32,f16,bf16}(dy, w, dx, N, C, ..., Q)
// Computes: dx (N, C, H, W, float32), the gather of conv_igemm.cu. Tiles over
//           G * ceil(Cg/BM) * ceil(NHW/BN).
// NumPy twin: numpy_ops/conv_igemm.py::conv2d_igemm_backward_data(precision=...).
//
// conv_igemm_tc_bwd_weight_{tf32,f16,bf16}(dy, x, out, splits, N, C, ..., Q)
// Computes: dw (O, Cg, KH, KW, float32) (splits == 1) or the float32 partial sums
//           (splits, O, Cg, KH, KW) of `splits` contiguous ranges of the N*P*Q reduction, added
//           in split order by conv_igemm.cu's conv_igemm_splitk_sum_f32. Tiles over
//           G * splits * ceil(Og/BM) * ceil(Cg*KHW/BN).
// NumPy twin: numpy_ops/conv_igemm.py::conv2d_igemm_backward_weight(precision=...).
// ---------------------------------------------------------------------------------------------
#define GPUCNN_IGEMM_TC_KERNELS(SUFFIX, POLICY)                                                 \
    extern "C" __global__ void conv_igemm_tc_fwd_##SUFFIX(                                      \
        const POLICY::in_t* __restrict__ x, const POLICY::in_t* __restrict__ w,                \
        const float* __restrict__ bias, float* __restrict__ y, float* __restrict__ pre,        \
        int has_bias, int act, float slope, int has_pre, IGEMM_SHAPE_PARAMS) {                 \
        __shared__ __align__(16) POLICY::smem_t As[CONV_TC_BM * (CONV_TC_BK + POLICY::PAD)];    \
        __shared__ __align__(16) POLICY::smem_t Bs[CONV_TC_BN * (CONV_TC_BK + POLICY::PAD)];    \
        typedef FwdProblem<POLICY::in_t, float> Pb;                                             \
        __shared__ Pb::KInfo kt[2 * CONV_TC_BK];                                                \
        Pb pb{make_shape(IGEMM_SHAPE_ARGS), x, w, bias, y, pre, has_bias, act, slope, has_pre}; \
        igemm_tc_tiles<POLICY>(pb, G, 1, As, Bs, kt);                                           \
    }                                                                                           \
    extern "C" __global__ void conv_igemm_tc_bwd_data_##SUFFIX(                                 \
        const POLICY::in_t* __restrict__ dy, const POLICY::in_t* __restrict__ w,               \
        float* __restrict__ dx, IGEMM_SHAPE_PARAMS) {                                           \
        __shared__ __align__(16) POLICY::smem_t As[CONV_TC_BM * (CONV_TC_BK + POLICY::PAD)];    \
        __shared__ __align__(16) POLICY::smem_t Bs[CONV_TC_BN * (CONV_TC_BK + POLICY::PAD)];    \
        typedef DataProblem<POLICY::in_t, float> Pb;                                            \
        __shared__ Pb::KInfo kt[2 * CONV_TC_BK];                                                \
        Pb pb{make_shape(IGEMM_SHAPE_ARGS), dy, w, dx};                                         \
        igemm_tc_tiles<POLICY>(pb, G, 1, As, Bs, kt);                                           \
    }                                                                                           \
    extern "C" __global__ void conv_igemm_tc_bwd_weight_##SUFFIX(                               \
        const POLICY::in_t* __restrict__ dy, const POLICY::in_t* __restrict__ x,               \
        float* __restrict__ out, int splits, IGEMM_SHAPE_PARAMS) {                              \
        __shared__ __align__(16) POLICY::smem_t As[CONV_TC_BM * (CONV_TC_BK + POLICY::PAD)];    \
        __shared__ __align__(16) POLICY::smem_t Bs[CONV_TC_BN * (CONV_TC_BK + POLICY::PAD)];    \
        typedef WeightProblem<POLICY::in_t, float> Pb;                                          \
        __shared__ Pb::KInfo kt[2 * CONV_TC_BK];                                                \
        Pb pb{make_shape(IGEMM_SHAPE_ARGS), dy, x, out};                                        \
        igemm_tc_tiles<POLICY>(pb, G, splits, As, Bs, kt);                                      \
    }

GPUCNN_IGEMM_TC_KERNELS(tf32, MmaTf32)
GPUCNN_IGEMM_TC_KERNELS(f16, MmaF16)
GPUCNN_IGEMM_TC_KERNELS(bf16, MmaBf16)
