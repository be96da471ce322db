// Host stand-ins for the CUDA built-ins the kernels use, so that the very .cu sources nvcc compiles also build as
// C++17 (with -DGPTOSS_HOST) and run on the CPU: kernel_common.cuh includes this header instead of the CUDA
// headers. Blocks of a launch run one after another; the threads of a block run as fibers on the calling OS thread
// (host/cuda_host.cpp), so __syncthreads and warp shuffles are real rendezvous. See docs/kernels-on-cpu.md.
#ifndef GPTOSS_CUDA_HOST_H
#define GPTOSS_CUDA_HOST_H

#include <math.h>  // not <cmath>: the kernels call fmaf, exp2f, ... unqualified

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------- qualifiers

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Blocks run one at a time and never interleave, so a static local is exactly the running block's shared memory.
#define __shared__ static

// ---------------------------------------------------------------- vector types

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct __align__(8) float2 {
    float x, y;
};

struct __align__(16) float4 {
    float x, y, z, w;
};

struct __align__(16) uint4 {
    unsigned x, y, z, w;
};

inline float2 make_float2(float x, float y) { return {x, y}; }

// Index of the running CUDA thread and shape of the launch, set by the fiber runtime on every switch.
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

// ---------------------------------------------------------------- scalar built-ins

inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

template <typename T>
inline T __ldg(const T* p) {
    return *p;
}

inline float __uint_as_float(unsigned bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

inline unsigned __float_as_uint(float f) {
    unsigned bits;
    std::memcpy(&bits, &f, sizeof bits);
    return bits;
}

// Fibers of a block share one OS thread and switch only inside the runtime, so a plain read-modify-write is atomic.
inline int atomicAdd(int* address, int value) {
    const int old = *address;
    *address = old + value;
    return old;
}

// ---------------------------------------------------------------- 16-bit floats (bit-exact conversions)

struct __half {
    uint16_t bits;
};

struct __align__(4) __half2 {
    __half x, y;
};

struct __nv_bfloat16 {
    uint16_t bits;
};

inline float __half2float(__half h) {
    const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
    const uint32_t exponent = (h.bits >> 10) & 0x1fu;
    const uint32_t mantissa = h.bits & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24 is exact in float
        return __uint_as_float(sign | __float_as_uint(static_cast<float>(mantissa) * 0x1p-24f));
    }
    const uint32_t float_exponent = exponent == 0x1f ? 0xffu : exponent + 112;  // inf/NaN stay inf/NaN
    return __uint_as_float(sign | float_exponent << 23 | mantissa << 13);
}

// Round to nearest even; NaN becomes the canonical 0x7fff, as on the GPU.
inline __half __float2half_rn(float f) {
    const uint32_t bits = __float_as_uint(f);
    const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return {0x7fff};
    if (magnitude >= 0x477ff000u) return {static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520 rounds to inf
    if (magnitude >= 0x38800000u) {                                                // normal: rebias, round 13 bits
        const uint32_t rebiased = magnitude - 0x38000000u;
        return {static_cast<uint16_t>(sign | (rebiased + 0xfffu + ((rebiased >> 13) & 1u)) >> 13)};
    }
    if (magnitude <= 0x33000000u) return {sign};  // at most 2^-25: ties to zero
    // Subnormal: the significand (implicit bit included) shifted to units of 2^-24, rounded.
    const uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - (magnitude >> 23);
    const uint32_t rest = significand & ((1u << shift) - 1u);
    const uint32_t half_unit = 1u << (shift - 1);
    uint32_t value = significand >> shift;
    if (rest > half_unit || (rest == half_unit && (value & 1u))) ++value;
    return {static_cast<uint16_t>(sign | value)};
}

inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }

inline float __bfloat162float(__nv_bfloat16 b) { return __uint_as_float(static_cast<uint32_t>(b.bits) << 16); }

// Round to nearest even; NaN becomes the canonical 0x7fff, as on the GPU.
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const uint32_t bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return {0x7fff};
    return {static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16)};
}

// ---------------------------------------------------------------- runtime API

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorLaunchFailure = 719,
};

enum cudaMemcpyKind { cudaMemcpyDeviceToDevice = 3 };

typedef struct CUstream_st* cudaStream_t;

// Returns and clears the error of the last failed launch on this OS thread.
cudaError_t cudaGetLastError();

// Launches run to completion before they return, so every stream operation is synchronous.
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
}

// ---------------------------------------------------------------- synchronization (fiber rendezvous)

namespace gptoss {
namespace host {

void sync_threads();
float shuffle_xor(unsigned mask, float value, int lane_mask);

// Runs thread_body(closure) once per CUDA thread of the grid; a failed launch is reported by cudaGetLastError().
void run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, void (*thread_body)(void*), void* closure);

// The host form of kernel<<<grid, block, smem, stream>>>(args...). Calling it copies the arguments once; each CUDA
// thread then calls the kernel (through `call`) with them, which copies them into its by-value parameters.
template <typename Call>
struct Launch {
    dim3 grid, block;
    size_t dynamic_shared_bytes;
    Call call;

    template <typename... Args>
    void operator()(Args&&... args) {
        using Closure = std::pair<Call, std::tuple<std::decay_t<Args>...>>;
        Closure closure{call, {std::forward<Args>(args)...}};
        run_grid(grid, block, dynamic_shared_bytes, &run_thread<Closure>, &closure);
    }

    template <typename Closure>
    static void run_thread(void* closure) {
        Closure& c = *static_cast<Closure*>(closure);
        std::apply(c.first, c.second);
    }
};

template <typename Call>
Launch<Call> launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, cudaStream_t, Call call) {
    return {grid, block, dynamic_shared_bytes, call};
}

}  // namespace host
}  // namespace gptoss

inline void __syncthreads() { gptoss::host::sync_threads(); }

inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask) {
    return gptoss::host::shuffle_xor(mask, value, lane_mask);
}

// Host form of GPTOSS_LAUNCH (kernel_common.cuh). The lambda names the kernel, so that template arguments are still
// deduced from the call's arguments; its [&] (it captures nothing) keeps GCC from calling a constexpr local that is
// only used as a template argument there "set but not used".
#define GPTOSS_LAUNCH(grid, block, smem, stream, ...) \
    ::gptoss::host::launch(grid, block, smem, stream, [&](auto&... gptoss_args_) { __VA_ARGS__(gptoss_args_...); })

#endif  // GPTOSS_CUDA_HOST_H
