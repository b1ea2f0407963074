// epilogue.cuh: the activation of fused GEMM / convolution epilogues.
//
// Included by cuda/conv_igemm.cuh (the forward passes of conv_igemm.cu and conv_igemm_tc.cu)
// and cuda/gemm.cu (gemm_store). No standard headers (NVRTC, nvcc -ptx and the host emulator
// all build it). The formulas are those of cuda/activation.cu (ActRelu, ActLeakyRelu, ActGelu,
// ActGeluTanh), so a fused epilogue equals the conv followed by the separate activation kernel
// within float rounding of the same operations.
//
// Act codes (kernel argument `int act`):
//   GPUCNN_ACT_NONE       0  v
//   GPUCNN_ACT_RELU       1  v <= 0 ? 0 : v
//   GPUCNN_ACT_LEAKY_RELU 2  v > 0 ? v : v * slope
//   GPUCNN_ACT_GELU       3  0.5 v (1 + erf(v / sqrt(2)))                 (torch's default GELU)
//   GPUCNN_ACT_GELU_TANH  4  0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))) (approximate='tanh')
// NumPy twin: gpucnn/backend/numpy_ops/activation.py::activation_forward.
#pragma once

#define GPUCNN_ACT_NONE 0
#define GPUCNN_ACT_RELU 1
#define GPUCNN_ACT_LEAKY_RELU 2
#define GPUCNN_ACT_GELU 3
#define GPUCNN_ACT_GELU_TANH 4

__device__ __forceinline__ float gpucnn_epi_erf(float v) { return erff(v); }
__device__ __forceinline__ double gpucnn_epi_erf(double v) { return erf(v); }
__device__ __forceinline__ float gpucnn_epi_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double gpucnn_epi_tanh(double v) { return tanh(v); }

// act(v) for act code `act` (unknown codes: identity). `slope`: LeakyReLU's negative slope.
template <typename T>
__device__ __forceinline__ T gpucnn_epilogue_act(T v, int act, T slope) {
    switch (act) {
        case GPUCNN_ACT_RELU:
            return v <= T(0) ? T(0) : v;
        case GPUCNN_ACT_LEAKY_RELU:
            return v > T(0) ? v : v * slope;
        case GPUCNN_ACT_GELU:
            return T(0.5) * v * (T(1) + gpucnn_epi_erf(v * T(0.70710678118654752440)));
        case GPUCNN_ACT_GELU_TANH: {
            const T u = T(0.79788456080286535588) * (v + T(0.044715) * v * v * v);
            return T(0.5) * v * (T(1) + gpucnn_epi_tanh(u));
        }
        default:
            return v;
    }
}
