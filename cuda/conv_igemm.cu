// conv_igemm.cu: implicit-GEMM 2-D convolution (NCHW), forward, backward-data and
// backward-weight, float32 and float64, plain FP32/FP64 SIMT (no tensor cores; those are
// cuda/conv_igemm_tc.cu, sharing the index math of cuda/conv_igemm.cuh). The forward fuses
// bias + an activation (cuda/epilogue.cuh) into its store.
//
// The implicit-GEMM view (CUTLASS, media/docs/cpp/implicit_gemm_convolution.md): each pass is,
// per group g, one GEMM  D (M x Ncols) = A (M x K) @ B (K x Ncols)  whose operands are never
// built in memory: an element of A or B is computed from its (row, column) index and read
// straight from the tensor (zero where it falls into padding or past a tail). With
//   x  (N, C, H, W), w (O, Cg, KH, KW), y / dy (N, O, P, Q), Cg = C/G, Og = O/G, KHW = KH*KW
//   window: input row of output row p and tap i is  p*SH - PT + i*DH  (columns: q, j, SW, PL, DW)
//
//   pass              M     Ncols (columns, "col")   K (reduction, "k")     A[m, k]          B[k, col]
//   forward    y      Og    N*P*Q    (n, p, q)       Cg*KHW  (c, i, j)      w[g*Og+m, c,i,j] x[n, g*Cg+c, tap]
//   bwd data   dx     Cg    N*H*W    (n, iy, ix)     Og*KHW  (o, i, j)      w[g*Og+o, m,i,j] dy[n, g*Og+o, p, q]
//   bwd weight dw     Og    Cg*KHW   (c, i, j)       N*P*Q   (n, p, q)      dy[n, g*Og+m, p,q] x[n, g*Cg+c, tap]
//
// Backward-data is a GATHER: dx[n, c, iy, ix] sums the taps (o, i, j) whose output position
// p = (iy + PT - i*DH) / SH, q = (ix + PL - j*DW) / SW is whole and inside [0, P) x [0, Q)
// (the others read as zero), so every dx element is written once, without atomics.
// Backward-weight reduces over all N*P*Q positions; `splits` > 1 cuts that reduction into
// `splits` contiguous K ranges whose partial sums go to a workspace (splits, O, Cg*KHW), added
// in a fixed order by conv_igemm_splitk_sum_*: deterministic, no atomics.
//
// Tiling (compile-time defines, defaults below; the launcher passes others as -D flags):
//   a block computes a BM x BN tile of D. Per step it stages a K-slice: As[BK][BM] (A^T) and
//   Bs[BK][BN] in shared memory, synchronises, and every thread accumulates its TM x TN
//   register micro-tile from the slice. Thread (ty, tx) of the (BM/TM) x (BN/TN) thread grid
//   owns rows ty + i*(BM/TM) and columns tx + j*(BN/TN) of the tile (strided, so a warp reads
//   consecutive shared-memory words of Bs and writes consecutive output columns).
//   Tails: staged elements with m >= M, col >= Ncols or k outside this split's K range are
//   zeros, so they add nothing; stores are guarded by m < M and col < Ncols.
//   Grid: a 1-D grid-stride loop over every (group, split, row tile, column tile), column tile
//   fastest, so ANY grid size is correct (the launcher may cap it; the tests sweep caps).
// 64-bit indices (index_t) for every column, reduction index and tensor offset.
// NumPy twin: gpucnn/backend/numpy_ops/conv_igemm.py (the im2col + GEMM reference,
// gpucnn/backend/numpy_ops/conv/reference.py).
#include "common.cuh"
#include "conv_igemm.cuh"

#ifndef IGEMM_BM
#define IGEMM_BM 64  // tile rows (M: output channels of the group, or input channels)
#endif
#ifndef IGEMM_BN
#define IGEMM_BN 64  // tile columns (Ncols)
#endif
#ifndef IGEMM_BK
#define IGEMM_BK 8  // reduction depth staged in shared memory per step
#endif
#ifndef IGEMM_TM
#define IGEMM_TM 4  // micro-tile rows per thread
#endif
#ifndef IGEMM_TN
#define IGEMM_TN 4  // micro-tile columns per thread
#endif

// Threads per block: one per micro-tile. The launcher computes the same number.
#define IGEMM_THREADS ((IGEMM_BM / IGEMM_TM) * (IGEMM_BN / IGEMM_TN))

static_assert(IGEMM_BM % IGEMM_TM == 0 && IGEMM_BN % IGEMM_TN == 0,
              "the micro-tile must divide the block tile");
static_assert(IGEMM_THREADS >= 1 && IGEMM_THREADS <= 1024, "1 to 1024 threads per block");
// Each thread stages B elements of ONE tile column (its per-column index math is done once
// per tile): the threads cover whole columns, and all BK rows of the slice.
static_assert(IGEMM_THREADS % IGEMM_BN == 0, "IGEMM_BN must divide the thread count");
static_assert((IGEMM_BK * IGEMM_BN) % IGEMM_THREADS == 0,
              "the thread count must divide IGEMM_BK * IGEMM_BN");

// ConvShape, make_shape, IGEMM_SHAPE_PARAMS / IGEMM_SHAPE_ARGS and the three Problem structs
// (FwdProblem, DataProblem, WeightProblem): cuda/conv_igemm.cuh, shared with
// cuda/conv_igemm_tc.cu.
// ---------------------------------------------------------------------------------------------
// The tile driver: every (group, split, row tile, column tile) of problem `pb`, grid-stride.
// As / Bs: the block's shared staging buffers (declared by the kernel).
// ---------------------------------------------------------------------------------------------
template <typename T, typename Problem>
__device__ __forceinline__ void igemm_tiles(const Problem& pb, int groups, int splits,
                                            T (*As)[IGEMM_BM], T (*Bs)[IGEMM_BN]) {
    constexpr int BM = IGEMM_BM, BN = IGEMM_BN, BK = IGEMM_BK, TM = IGEMM_TM, TN = IGEMM_TN;
    constexpr int NT = IGEMM_THREADS;
    constexpr int ROW_THREADS = BM / TM, COL_THREADS = BN / TN;  // thread grid
    constexpr int B_STEP = NT / BN;               // slice rows staged by the block per pass
    constexpr int B_LOADS = BK * BN / NT;         // B elements staged per thread
    const int tid = (int)threadIdx.x;
    const int tx = tid % COL_THREADS, ty = tid / COL_THREADS;
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

        // The column this thread stages B for: its index math, once per tile.
        const index_t my_col = c0 + b_col;
        const bool col_in = my_col < ncols;
        const typename Problem::Col cl = pb.col(g, col_in ? my_col : 0);

        T acc[TM][TN];
        for (int i = 0; i < TM; ++i)
            for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

        for (index_t k0 = k_begin; k0 < k_end; k0 += BK) {
            // Stage A^T: As[kk][mm] = A[m0 + mm, k0 + kk]; consecutive threads take
            // consecutive k (A rows are contiguous along k for the forward weight).
            for (int e = tid; e < BM * BK; e += NT) {
                const int kk = e % BK, mm = e / BK;
                const index_t k = k0 + kk;
                As[kk][mm] = (m0 + mm < M && k < k_end) ? pb.a(g, m0 + mm, k) : T(0);
            }
            // Stage B: Bs[kk][b_col] = B[k0 + kk, my_col] for this thread's rows kk.
            for (int l = 0; l < B_LOADS; ++l) {
                const int kk = b_row + l * B_STEP;
                const index_t k = k0 + kk;
                Bs[kk][b_col] = (col_in && k < k_end) ? pb.b(g, cl, k) : T(0);
            }
            __syncthreads();
            // Accumulate the micro-tile: rows ty + i*ROW_THREADS, columns tx + j*COL_THREADS.
            for (int kk = 0; kk < BK; ++kk) {
                T a_frag[TM], b_frag[TN];
                for (int i = 0; i < TM; ++i) a_frag[i] = As[kk][ty + i * ROW_THREADS];
                for (int j = 0; j < TN; ++j) b_frag[j] = Bs[kk][tx + j * COL_THREADS];
                for (int i = 0; i < TM; ++i)
                    for (int j = 0; j < TN; ++j) acc[i][j] += a_frag[i] * b_frag[j];
            }
            __syncthreads();  // the next slice overwrites As / Bs
        }

        // Epilogue: the in-range part of the micro-tile.
        for (int i = 0; i < TM; ++i) {
            const int m = m0 + ty + i * ROW_THREADS;
            if (m >= M) continue;
            for (int j = 0; j < TN; ++j) {
                const index_t c = c0 + tx + j * COL_THREADS;
                if (c < ncols) pb.store(g, split, m, c, acc[i][j]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// conv_igemm_fwd_{f32,f64}(x, w, bias, y, pre, has_bias, act, slope, has_pre, N, C, H, W, O,
//                          G, KH, KW, SH, SW, PT, PL, DH, DW, P, Q)
// Computes: y (N, O, P, Q) = act(conv(x, w) (+ bias[o] when has_bias != 0)), act the code of
//           epilogue.cuh (0 none, 1 ReLU, 2 LeakyReLU with `slope` (of type T), 3 GELU erf,
//           4 GELU tanh); with has_pre != 0 also pre (N, O, P, Q) = the value before act.
//           bias / pre must still be valid pointers (e.g. w / y) when their flag is 0.
// Threads:  IGEMM_THREADS per block, 1-D grid-stride over the G * ceil(Og/BM) * ceil(NPQ/BN)
//           tiles (see the driver). NumPy twin: numpy_ops/conv_igemm.py::conv2d_igemm_forward.
//
// conv_igemm_bwd_data_{f32,f64}(dy, w, dx, N, C, ..., Q)
// Computes: dx (N, C, H, W), the gather above. Tiles over G * ceil(Cg/BM) * ceil(NHW/BN).
// NumPy twin: numpy_ops/conv_igemm.py::conv2d_igemm_backward_data.
//
// conv_igemm_bwd_weight_{f32,f64}(dy, x, out, splits, N, C, ..., Q)
// Computes: dw (O, Cg, KH, KW) (splits == 1) or the partial sums (splits, O, Cg, KH, KW) of
//           `splits` contiguous ranges of the N*P*Q reduction. Tiles over
//           G * splits * ceil(Og/BM) * ceil(Cg*KHW/BN).
// NumPy twin: numpy_ops/conv_igemm.py::conv2d_igemm_backward_weight.
//
// conv_igemm_splitk_sum_{f32,f64}(part, dw, total, splits)
// Computes: dw[e] = part[0*total + e] + part[1*total + e] + ... (in split order: deterministic).
// Threads:  one per element, grid-stride over total = O*Cg*KH*KW.
// ---------------------------------------------------------------------------------------------
#define GPUCNN_IGEMM_KERNELS(SUFFIX, T)                                                         \
    extern "C" __global__ void conv_igemm_fwd_##SUFFIX(                                         \
        const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,          \
        T* __restrict__ y, T* __restrict__ pre, int has_bias, int act, T slope, int has_pre,   \
        IGEMM_SHAPE_PARAMS) {                                                                   \
        __shared__ T As[IGEMM_BK][IGEMM_BM];                                                    \
        __shared__ T Bs[IGEMM_BK][IGEMM_BN];                                                    \
        FwdProblem<T> pb{make_shape(IGEMM_SHAPE_ARGS), x, w, bias, y, pre, has_bias, act,       \
                         slope, has_pre};                                                       \
        igemm_tiles<T>(pb, G, 1, As, Bs);                                                       \
    }                                                                                           \
    extern "C" __global__ void conv_igemm_bwd_data_##SUFFIX(                                    \
        const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,                 \
        IGEMM_SHAPE_PARAMS) {                                                                   \
        __shared__ T As[IGEMM_BK][IGEMM_BM];                                                    \
        __shared__ T Bs[IGEMM_BK][IGEMM_BN];                                                    \
        DataProblem<T> pb{make_shape(IGEMM_SHAPE_ARGS), dy, w, dx};                             \
        igemm_tiles<T>(pb, G, 1, As, Bs);                                                       \
    }                                                                                           \
    extern "C" __global__ void conv_igemm_bwd_weight_##SUFFIX(                                  \
        const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ out, int splits,    \
        IGEMM_SHAPE_PARAMS) {                                                                   \
        __shared__ T As[IGEMM_BK][IGEMM_BM];                                                    \
        __shared__ T Bs[IGEMM_BK][IGEMM_BN];                                                    \
        WeightProblem<T> pb{make_shape(IGEMM_SHAPE_ARGS), dy, x, out};                          \
        igemm_tiles<T>(pb, G, splits, As, Bs);                                                  \
    }                                                                                           \
    extern "C" __global__ void conv_igemm_splitk_sum_##SUFFIX(                                  \
        const T* __restrict__ part, T* __restrict__ dw, index_t total, int splits) {            \
        GRID_STRIDE_LOOP(e, total) {                                                            \
            T acc = part[e];                                                                    \
            for (int s = 1; s < splits; ++s) acc += part[(index_t)s * total + e];               \
            dw[e] = acc;                                                                        \
        }                                                                                       \
    }

GPUCNN_IGEMM_KERNELS(f32, float)
GPUCNN_IGEMM_KERNELS(f64, double)
