// Fused optimizer updates: SGD (momentum, dampening, Nesterov, weight decay), Adam / AdamW
// (optional AMSGrad), RMSprop (optional momentum, centered), Adagrad (learning-rate decay) and
// NAdam (momentum decay, optional decoupled weight decay). PyTorch semantics.
//
// Every kernel updates ONE parameter tensor and its state buffers in place, element-wise:
// thread mapping one thread per element, 1-D grid-stride over n; all arrays are flat,
// C-contiguous and hold n elements of T. State buffers not used by the chosen options are
// never read or written (callers may pass any array there). Hyper-parameters arrive by value
// as T. NumPy twins: gpucnn/backend/numpy_ops/optim.py (sgd_update, adam_update,
// rmsprop_update, adagrad_update, nadam_update).

// No <math.h>: NVRTC has no libc headers; sqrt/rsqrt/fabs are CUDA built-in device functions.

#define GRID_STRIDE(i, n)                                                   \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// sgd_<T>: g = grad + wd*p; if momentum != 0: buf = first_step ? g : momentum*buf +
// (1-dampening)*g, and g = nesterov ? g + momentum*buf : buf; then p -= lr*g.
// Twin: sgd_update.
template <typename T>
__device__ void sgd(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ buf,
                    T lr, T momentum, T dampening, T weight_decay, int nesterov, int first_step,
                    long long n) {
    GRID_STRIDE(i, n) {
        T p = param[i];
        T g = grad[i];
        if (weight_decay != (T)0) g += weight_decay * p;
        if (momentum != (T)0) {
            T b = first_step ? g : momentum * buf[i] + ((T)1 - dampening) * g;
            buf[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        param[i] = p - lr * g;
    }
}

// adam_<T>: Adam (decoupled = 0) or AdamW (decoupled = 1).
//   Adam: g = grad + wd*p.   AdamW: p *= 1 - lr*wd.
//   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g;
//   amsgrad: vmax = max(vmax, v) and v_hat = vmax, else v_hat = v
//   p -= (lr / bc1) * m / (sqrt(v_hat) / sqrt(bc2) + eps)
// bc1 = 1 - beta1^t and bc2 = 1 - beta2^t are computed by the caller (t = step count).
// Twin: adam_update.
template <typename T>
__device__ void adam(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                     T* __restrict__ exp_avg_sq, T* __restrict__ max_exp_avg_sq, T lr, T beta1,
                     T beta2, T eps, T weight_decay, T bc1, T bc2, int decoupled, int amsgrad,
                     long long n) {
    const T step_size = lr / bc1;
    const T bc2_sqrt = sqrt(bc2);
    GRID_STRIDE(i, n) {
        T p = param[i];
        T g = grad[i];
        if (weight_decay != (T)0) {
            if (decoupled) p *= (T)1 - lr * weight_decay;
            else g += weight_decay * p;
        }
        T m = beta1 * exp_avg[i] + ((T)1 - beta1) * g;
        T v = beta2 * exp_avg_sq[i] + ((T)1 - beta2) * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (amsgrad) {
            T vm = max_exp_avg_sq[i];
            vm = v > vm ? v : vm;
            max_exp_avg_sq[i] = vm;
            v = vm;
        }
        T denom = sqrt(v) / bc2_sqrt + eps;
        param[i] = p - step_size * m / denom;
    }
}

// rmsprop_<T>: g = grad + wd*p; sq = alpha*sq + (1-alpha)*g*g;
//   centered: ga = alpha*ga + (1-alpha)*g, avg = sqrt(sq - ga*ga) + eps; else avg = sqrt(sq)+eps
//   momentum > 0: buf = momentum*buf + g/avg, p -= lr*buf;  else p -= lr*g/avg.
// Twin: rmsprop_update.
template <typename T>
__device__ void rmsprop(T* __restrict__ param, const T* __restrict__ grad,
                        T* __restrict__ square_avg, T* __restrict__ grad_avg,
                        T* __restrict__ momentum_buf, T lr, T alpha, T eps, T weight_decay,
                        T momentum, int centered, long long n) {
    GRID_STRIDE(i, n) {
        T p = param[i];
        T g = grad[i];
        if (weight_decay != (T)0) g += weight_decay * p;
        T sq = alpha * square_avg[i] + ((T)1 - alpha) * g * g;
        square_avg[i] = sq;
        T avg;
        if (centered) {
            T ga = alpha * grad_avg[i] + ((T)1 - alpha) * g;
            grad_avg[i] = ga;
            avg = sqrt(sq - ga * ga) + eps;
        } else {
            avg = sqrt(sq) + eps;
        }
        if (momentum > (T)0) {
            T b = momentum * momentum_buf[i] + g / avg;
            momentum_buf[i] = b;
            param[i] = p - lr * b;
        } else {
            param[i] = p - lr * g / avg;
        }
    }
}

// adagrad_<T>: g = grad + wd*p; sum += g*g; p -= clr * (g / (sqrt(sum) + eps)).
// clr = lr / (1 + (step - 1) * lr_decay) is computed by the caller. Twin: adagrad_update.
template <typename T>
__device__ void adagrad(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ sum,
                        T clr, T eps, T weight_decay, long long n) {
    GRID_STRIDE(i, n) {
        T p = param[i];
        T g = grad[i];
        if (weight_decay != (T)0) g += weight_decay * p;
        T s = sum[i] + g * g;
        sum[i] = s;
        param[i] = p - clr * (g / (sqrt(s) + eps));
    }
}

// nadam_<T>: NAdam (decoupled = 0: g = grad + wd*p; decoupled = 1: p *= 1 - lr*wd).
//   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g;  d = sqrt(v / bc2) + eps
//   p -= coef_g * (g / d);  p -= coef_m * (m / d)
// bc2 = 1 - beta2^t, coef_g = lr*(1-mu_t)/(1-prod_{i<=t} mu_i) and
// coef_m = lr*mu_{t+1}/(1-prod_{i<=t+1} mu_i) are computed by the caller. Twin: nadam_update.
template <typename T>
__device__ void nadam(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                      T* __restrict__ exp_avg_sq, T lr, T beta1, T beta2, T eps, T weight_decay,
                      T bc2, T coef_g, T coef_m, int decoupled, long long n) {
    GRID_STRIDE(i, n) {
        T p = param[i];
        T g = grad[i];
        if (weight_decay != (T)0) {
            if (decoupled) p *= (T)1 - lr * weight_decay;
            else g += weight_decay * p;
        }
        T m = beta1 * exp_avg[i] + ((T)1 - beta1) * g;
        T v = beta2 * exp_avg_sq[i] + ((T)1 - beta2) * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        T d = sqrt(v / bc2) + eps;
        p = p - coef_g * (g / d);
        param[i] = p - coef_m * (m / d);
    }
}

#define OPTIM_INSTANTIATE(T, SUF)                                                              \
    extern "C" __global__ void sgd_##SUF(T* param, const T* grad, T* buf, T lr, T momentum,   \
                                         T dampening, T weight_decay, int nesterov,           \
                                         int first_step, long long n) {                        \
        sgd<T>(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step, \
               n);                                                                             \
    }                                                                                          \
    extern "C" __global__ void adam_##SUF(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, \
                                          T* max_exp_avg_sq, T lr, T beta1, T beta2, T eps,   \
                                          T weight_decay, T bc1, T bc2, int decoupled,         \
                                          int amsgrad, long long n) {                          \
        adam<T>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,      \
                weight_decay, bc1, bc2, decoupled, amsgrad, n);                                \
    }                                                                                          \
    extern "C" __global__ void rmsprop_##SUF(T* param, const T* grad, T* square_avg,          \
                                             T* grad_avg, T* momentum_buf, T lr, T alpha,     \
                                             T eps, T weight_decay, T momentum, int centered, \
                                             long long n) {                                    \
        rmsprop<T>(param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps,           \
                   weight_decay, momentum, centered, n);                                       \
    }                                                                                          \
    extern "C" __global__ void adagrad_##SUF(T* param, const T* grad, T* sum, T clr, T eps,   \
                                             T weight_decay, long long n) {                    \
        adagrad<T>(param, grad, sum, clr, eps, weight_decay, n);                               \
    }                                                                                          \
    extern "C" __global__ void nadam_##SUF(T* param, const T* grad, T* exp_avg,               \
                                           T* exp_avg_sq, T lr, T beta1, T beta2, T eps,      \
                                           T weight_decay, T bc2, T coef_g, T coef_m,          \
                                           int decoupled, long long n) {                       \
        nadam<T>(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, bc2,  \
                 coef_g, coef_m, decoupled, n);                                                \
    }

// The *_dev_<T> kernels: the same updates with the hyper-parameters that change from step to
// step read from device memory, `hyper` (a few T values), instead of passed by value: a CUDA
// graph replays its kernels with the arguments they were captured with, so a captured update
// must find the current learning rate and bias corrections in memory, which the host rewrites
// (one copy) before each replay. Layout of `hyper`:
//   sgd_dev, rmsprop_dev: [lr]        adam_dev: [lr, bc1, bc2]        adagrad_dev: [clr]
//   nadam_dev: [lr, bc2, coef_g, coef_m]
// Same thread mapping; twins: the same numpy_ops/optim.py functions with `hyper=` given.
#define OPTIM_DEV_INSTANTIATE(T, SUF)                                                          \
    extern "C" __global__ void sgd_dev_##SUF(T* param, const T* grad, T* buf, const T* hyper, \
                                             T momentum, T dampening, T weight_decay,         \
                                             int nesterov, int first_step, long long n) {     \
        sgd<T>(param, grad, buf, hyper[0], momentum, dampening, weight_decay, nesterov,        \
               first_step, n);                                                                 \
    }                                                                                          \
    extern "C" __global__ void adam_dev_##SUF(T* param, const T* grad, T* exp_avg,            \
                                              T* exp_avg_sq, T* max_exp_avg_sq,               \
                                              const T* hyper, T beta1, T beta2, T eps,        \
                                              T weight_decay, int decoupled, int amsgrad,     \
                                              long long n) {                                   \
        adam<T>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, hyper[0], beta1, beta2, eps, \
                weight_decay, hyper[1], hyper[2], decoupled, amsgrad, n);                      \
    }                                                                                          \
    extern "C" __global__ void rmsprop_dev_##SUF(T* param, const T* grad, T* square_avg,      \
                                                 T* grad_avg, T* momentum_buf,                \
                                                 const T* hyper, T alpha, T eps,              \
                                                 T weight_decay, T momentum, int centered,    \
                                                 long long n) {                                \
        rmsprop<T>(param, grad, square_avg, grad_avg, momentum_buf, hyper[0], alpha, eps,     \
                   weight_decay, momentum, centered, n);                                       \
    }                                                                                          \
    extern "C" __global__ void adagrad_dev_##SUF(T* param, const T* grad, T* sum,             \
                                                 const T* hyper, T eps, T weight_decay,       \
                                                 long long n) {                                \
        adagrad<T>(param, grad, sum, hyper[0], eps, weight_decay, n);                          \
    }                                                                                          \
    extern "C" __global__ void nadam_dev_##SUF(T* param, const T* grad, T* exp_avg,           \
                                               T* exp_avg_sq, const T* hyper, T beta1,        \
                                               T beta2, T eps, T weight_decay, int decoupled, \
                                               long long n) {                                  \
        nadam<T>(param, grad, exp_avg, exp_avg_sq, hyper[0], beta1, beta2, eps, weight_decay, \
                 hyper[1], hyper[2], hyper[3], decoupled, n);                                  \
    }

OPTIM_INSTANTIATE(float, f32)
OPTIM_INSTANTIATE(double, f64)
OPTIM_DEV_INSTANTIATE(float, f32)
OPTIM_DEV_INSTANTIATE(double, f64)
