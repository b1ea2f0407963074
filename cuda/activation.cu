// activation.cu: element-wise activations (forward and backward) and PReLU.
//
// Layout: every array is C-contiguous and treated as flat; n is the element count (64-bit).
// Element-wise kernels use a 1-D grid-stride loop (one thread per element, any grid size is
// correct). NaN propagates forward (a NaN input gives a NaN output) as in PyTorch.
// NumPy twins: gpucnn.backend.numpy_ops.activation (activation_forward, activation_backward,
// prelu_forward, prelu_backward).

#define ACT_MAX_BLOCK 1024

// Overloaded math helpers, so one template body serves float and double.
__device__ __forceinline__ float act_exp(float v) { return expf(v); }
__device__ __forceinline__ double act_exp(double v) { return exp(v); }
__device__ __forceinline__ float act_expm1(float v) { return expm1f(v); }
__device__ __forceinline__ double act_expm1(double v) { return expm1(v); }
__device__ __forceinline__ float act_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double act_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float act_erf(float v) { return erff(v); }
__device__ __forceinline__ double act_erf(double v) { return erf(v); }

// Stable logistic function: never evaluates exp of a large positive number.
template <typename T>
__device__ __forceinline__ T act_sigmoid(T v) {
    if (v >= T(0)) return T(1) / (T(1) + act_exp(-v));
    const T e = act_exp(v);
    return e / (T(1) + e);  // also reached by NaN: exp(NaN) = NaN
}

#define ACT_SQRT1_2 0.70710678118654752440    // 1 / sqrt(2)
#define ACT_INV_SQRT_2PI 0.39894228040143267794  // 1 / sqrt(2 pi)
#define ACT_SQRT_2_OVER_PI 0.79788456080286535588  // sqrt(2 / pi)
#define ACT_GELU_C 0.044715

// ---------------------------------------------------------------------------------------------
// Forward and backward formulas, one functor per activation.
//   fwd(x, p)       -> y
//   bwd(s, g, p)    -> dx, where s is the SAVED array: the input x for every activation except
//                      sigmoid and tanh, which use their output y (cheaper and exact).
//   p: the parameter (negative slope of leaky_relu, alpha of elu; unused elsewhere).
// ---------------------------------------------------------------------------------------------
struct ActRelu {
    template <typename T> __device__ static T fwd(T x, T) { return x <= T(0) ? T(0) : x; }
    template <typename T> __device__ static T bwd(T x, T g, T) { return x <= T(0) ? T(0) : g; }
};

struct ActLeakyRelu {
    template <typename T> __device__ static T fwd(T x, T p) { return x > T(0) ? x : x * p; }
    template <typename T> __device__ static T bwd(T x, T g, T p) { return x > T(0) ? g : g * p; }
};

struct ActElu {
    template <typename T> __device__ static T fwd(T x, T a) {
        return x > T(0) ? x : a * act_expm1(x);
    }
    template <typename T> __device__ static T bwd(T x, T g, T a) {
        return x > T(0) ? g : g * a * act_exp(x);
    }
};

struct ActSigmoid {
    template <typename T> __device__ static T fwd(T x, T) { return act_sigmoid(x); }
    template <typename T> __device__ static T bwd(T y, T g, T) { return g * y * (T(1) - y); }
};

struct ActTanh {
    template <typename T> __device__ static T fwd(T x, T) { return act_tanh(x); }
    template <typename T> __device__ static T bwd(T y, T g, T) { return g * (T(1) - y * y); }
};

// GELU, exact form: x * Phi(x), Phi the standard normal CDF; dPhi = phi(x).
struct ActGelu {
    template <typename T> __device__ static T fwd(T x, T) {
        return T(0.5) * x * (T(1) + act_erf(x * T(ACT_SQRT1_2)));
    }
    template <typename T> __device__ static T bwd(T x, T g, T) {
        const T cdf = T(0.5) * (T(1) + act_erf(x * T(ACT_SQRT1_2)));
        const T pdf = T(ACT_INV_SQRT_2PI) * act_exp(T(-0.5) * x * x);
        return g * (cdf + x * pdf);
    }
};

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
struct ActGeluTanh {
    template <typename T> __device__ static T fwd(T x, T) {
        const T u = T(ACT_SQRT_2_OVER_PI) * (x + T(ACT_GELU_C) * x * x * x);
        return T(0.5) * x * (T(1) + act_tanh(u));
    }
    template <typename T> __device__ static T bwd(T x, T g, T) {
        const T u = T(ACT_SQRT_2_OVER_PI) * (x + T(ACT_GELU_C) * x * x * x);
        const T t = act_tanh(u);
        const T du = T(ACT_SQRT_2_OVER_PI) * (T(1) + T(3.0 * ACT_GELU_C) * x * x);
        return g * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du);
    }
};

// ---------------------------------------------------------------------------------------------
// <act>_fwd_{f32,f64}(const T* x, T* y, T p, long long n)
//   What: y[i] = f(x[i]; p) for i in [0, n).
// <act>_bwd_{f32,f64}(const T* s, const T* g, T* dx, T p, long long n)
//   What: dx[i] = g[i] * f'(...) from the saved array s (x, or y for sigmoid / tanh).
//   Threads: 1-D grid-stride loop, one thread per element; any grid / block size is correct.
//   Acts: relu, leaky_relu (p = negative slope), elu (p = alpha), sigmoid, tanh, gelu (erf
//   form), gelu_tanh (tanh approximation).
//   NumPy twins: activation_forward(x, name, p) / activation_backward(s, g, name, p).
// ---------------------------------------------------------------------------------------------
template <typename Op, typename T>
__device__ void act_fwd_impl(const T* __restrict__ x, T* __restrict__ y, T p, long long n) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = Op::fwd(x[i], p);
}

template <typename Op, typename T>
__device__ void act_bwd_impl(const T* __restrict__ s, const T* __restrict__ g,
                             T* __restrict__ dx, T p, long long n) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dx[i] = Op::bwd(s[i], g[i], p);
}

// Written out one by one (not macro-generated) so every kernel name is greppable.
extern "C" __global__ void relu_fwd_f32(const float* x, float* y, float p,
        long long n) {
    act_fwd_impl<ActRelu, float>(x, y, p, n);
}
extern "C" __global__ void relu_bwd_f32(const float* s, const float* g, float* dx,
        float p, long long n) {
    act_bwd_impl<ActRelu, float>(s, g, dx, p, n);
}
extern "C" __global__ void relu_fwd_f64(const double* x, double* y, double p,
        long long n) {
    act_fwd_impl<ActRelu, double>(x, y, p, n);
}
extern "C" __global__ void relu_bwd_f64(const double* s, const double* g, double* dx,
        double p, long long n) {
    act_bwd_impl<ActRelu, double>(s, g, dx, p, n);
}

extern "C" __global__ void leaky_relu_fwd_f32(const float* x, float* y, float p,
        long long n) {
    act_fwd_impl<ActLeakyRelu, float>(x, y, p, n);
}
extern "C" __global__ void leaky_relu_bwd_f32(const float* s, const float* g, float* dx,
        float p, long long n) {
    act_bwd_impl<ActLeakyRelu, float>(s, g, dx, p, n);
}
extern "C" __global__ void leaky_relu_fwd_f64(const double* x, double* y, double p,
        long long n) {
    act_fwd_impl<ActLeakyRelu, double>(x, y, p, n);
}
extern "C" __global__ void leaky_relu_bwd_f64(const double* s, const double* g, double* dx,
        double p, long long n) {
    act_bwd_impl<ActLeakyRelu, double>(s, g, dx, p, n);
}

extern "C" __global__ void elu_fwd_f32(const float* x, float* y, float p,
        long long n) {
    act_fwd_impl<ActElu, float>(x, y, p, n);
}
extern "C" __global__ void elu_bwd_f32(const float* s, const float* g, float* dx,
        float p, long long n) {
    act_bwd_impl<ActElu, float>(s, g, dx, p, n);
}
extern "C" __global__ void elu_fwd_f64(const double* x, double* y, double p,
        long long n) {
    act_fwd_impl<ActElu, double>(x, y, p, n);
}
extern "C" __global__ void elu_bwd_f64(const double* s, const double* g, double* dx,
        double p, long long n) {
    act_bwd_impl<ActElu, double>(s, g, dx, p, n);
}

extern "C" __global__ void sigmoid_fwd_f32(const float* x, float* y, float p,
        long long n) {
    act_fwd_impl<ActSigmoid, float>(x, y, p, n);
}
extern "C" __global__ void sigmoid_bwd_f32(const float* s, const float* g, float* dx,
        float p, long long n) {
    act_bwd_impl<ActSigmoid, float>(s, g, dx, p, n);
}
extern "C" __global__ void sigmoid_fwd_f64(const double* x, double* y, double p,
        long long n) {
    act_fwd_impl<ActSigmoid, double>(x, y, p, n);
}
extern "C" __global__ void sigmoid_bwd_f64(const double* s, const double* g, double* dx,
        double p, long long n) {
    act_bwd_impl<ActSigmoid, double>(s, g, dx, p, n);
}

extern "C" __global__ void tanh_fwd_f32(const float* x, float* y, float p,
        long long n) {
    act_fwd_impl<ActTanh, float>(x, y, p, n);
}
extern "C" __global__ void tanh_bwd_f32(const float* s, const float* g, float* dx,
        float p, long long n) {
    act_bwd_impl<ActTanh, float>(s, g, dx, p, n);
}
extern "C" __global__ void tanh_fwd_f64(const double* x, double* y, double p,
        long long n) {
    act_fwd_impl<ActTanh, double>(x, y, p, n);
}
extern "C" __global__ void tanh_bwd_f64(const double* s, const double* g, double* dx,
        double p, long long n) {
    act_bwd_impl<ActTanh, double>(s, g, dx, p, n);
}

extern "C" __global__ void gelu_fwd_f32(const float* x, float* y, float p,
        long long n) {
    act_fwd_impl<ActGelu, float>(x, y, p, n);
}
extern "C" __global__ void gelu_bwd_f32(const float* s, const float* g, float* dx,
        float p, long long n) {
    act_bwd_impl<ActGelu, float>(s, g, dx, p, n);
}
extern "C" __global__ void gelu_fwd_f64(const double* x, double* y, double p,
        long long n) {
    act_fwd_impl<ActGelu, double>(x, y, p, n);
}
extern "C" __global__ void gelu_bwd_f64(const double* s, const double* g, double* dx,
        double p, long long n) {
    act_bwd_impl<ActGelu, double>(s, g, dx, p, n);
}

extern "C" __global__ void gelu_tanh_fwd_f32(const float* x, float* y, float p,
        long long n) {
    act_fwd_impl<ActGeluTanh, float>(x, y, p, n);
}
extern "C" __global__ void gelu_tanh_bwd_f32(const float* s, const float* g, float* dx,
        float p, long long n) {
    act_bwd_impl<ActGeluTanh, float>(s, g, dx, p, n);
}
extern "C" __global__ void gelu_tanh_fwd_f64(const double* x, double* y, double p,
        long long n) {
    act_fwd_impl<ActGeluTanh, double>(x, y, p, n);
}
extern "C" __global__ void gelu_tanh_bwd_f64(const double* s, const double* g, double* dx,
        double p, long long n) {
    act_bwd_impl<ActGeluTanh, double>(s, g, dx, p, n);
}

// ---------------------------------------------------------------------------------------------
// prelu_fwd_{f32,f64}(const T* x, const T* w, T* y, long long n, long long C, long long S)
//   What: y[i] = x[i] > 0 ? x[i] : w[c] * x[i], with c = (i / S) % C: x viewed as (N, C, S)
//   (S = product of the dims after the channel axis). A single shared weight is C = 1.
// prelu_bwd_dx_{f32,f64}(const T* x, const T* w, const T* g, T* dx, long long n, long long C,
//                        long long S)
//   What: dx[i] = x[i] > 0 ? g[i] : w[c] * g[i].
//   Threads (both): 1-D grid-stride loop, one thread per element.
//   NumPy twins: prelu_forward(x, w) and the dx part of prelu_backward(x, w, g).
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ void prelu_fwd_impl(const T* __restrict__ x, const T* __restrict__ w,
                               T* __restrict__ y, long long n, long long C, long long S) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T v = x[i];
        y[i] = v > T(0) ? v : w[(i / S) % C] * v;
    }
}

template <typename T>
__device__ void prelu_bwd_dx_impl(const T* __restrict__ x, const T* __restrict__ w,
                                  const T* __restrict__ g, T* __restrict__ dx, long long n,
                                  long long C, long long S) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dx[i] = x[i] > T(0) ? g[i] : w[(i / S) % C] * g[i];
}

// ---------------------------------------------------------------------------------------------
// prelu_bwd_dw_{f32,f64}(const T* x, const T* g, T* dw, long long N, long long C, long long S)
//   What: dw[c] = sum over n, s of (x <= 0 ? x * g : 0) at [n, c, s]; x, g viewed as (N, C, S).
//   Threads: one block per channel, grid-stride over channels (c = blockIdx.x, += gridDim.x).
//   Thread t of the block sums elements e = t, t + blockDim.x, ... of the channel's N*S values
//   (n = e / S, s = e % S) in a fixed order; the block then combines the partial sums with a
//   shared-memory tree reduction (__syncthreads() between levels; any blockDim.x up to 1024,
//   power of two or not). No atomics: deterministic for a given block size.
//   NumPy twin: the dw part of prelu_backward(x, w, g).
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ void prelu_bwd_dw_impl(const T* __restrict__ x, const T* __restrict__ g,
                                  T* __restrict__ dw, T* sdata, long long N, long long C,
                                  long long S) {
    const unsigned int tid = threadIdx.x;
    const unsigned int nt = blockDim.x;
    unsigned int top = 1;  // smallest power of two >= nt
    while (top < nt) top <<= 1;
    const long long count = N * S;
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        T acc = T(0);
        for (long long e = tid; e < count; e += nt) {
            const long long i = ((e / S) * C + c) * S + e % S;
            const T v = x[i];
            if (!(v > T(0))) acc += v * g[i];  // x <= 0 (and NaN, which then propagates)
        }
        sdata[tid] = acc;
        __syncthreads();
        for (unsigned int s = top >> 1; s > 0; s >>= 1) {
            if (tid < s && tid + s < nt) sdata[tid] += sdata[tid + s];
            __syncthreads();
        }
        if (tid == 0) dw[c] = sdata[0];
        __syncthreads();  // sdata is reused by the next channel
    }
}

extern "C" __global__ void prelu_fwd_f32(const float* x, const float* w, float* y, long long n,
                                         long long C, long long S) {
    prelu_fwd_impl<float>(x, w, y, n, C, S);
}
extern "C" __global__ void prelu_fwd_f64(const double* x, const double* w, double* y,
                                         long long n, long long C, long long S) {
    prelu_fwd_impl<double>(x, w, y, n, C, S);
}
extern "C" __global__ void prelu_bwd_dx_f32(const float* x, const float* w, const float* g,
                                            float* dx, long long n, long long C, long long S) {
    prelu_bwd_dx_impl<float>(x, w, g, dx, n, C, S);
}
extern "C" __global__ void prelu_bwd_dx_f64(const double* x, const double* w, const double* g,
                                            double* dx, long long n, long long C, long long S) {
    prelu_bwd_dx_impl<double>(x, w, g, dx, n, C, S);
}
extern "C" __global__ void prelu_bwd_dw_f32(const float* x, const float* g, float* dw,
                                            long long N, long long C, long long S) {
    __shared__ float sdata[ACT_MAX_BLOCK];
    prelu_bwd_dw_impl<float>(x, g, dw, sdata, N, C, S);
}
extern "C" __global__ void prelu_bwd_dw_f64(const double* x, const double* g, double* dw,
                                            long long N, long long C, long long S) {
    __shared__ double sdata[ACT_MAX_BLOCK];
    prelu_bwd_dw_impl<double>(x, g, dw, sdata, N, C, S);
}
