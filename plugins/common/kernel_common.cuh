// Helpers shared by the gptoss kernels: error handling, dtype dispatch, vector loads and warp reductions.
#ifndef GPTOSS_KERNEL_COMMON_CUH
#define GPTOSS_KERNEL_COMMON_CUH

#ifdef GPTOSS_HOST
#include "host/cuda_host.h"  // the host build: the same kernels on CPU threads (docs/kernels-on-cpu.md)
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// kernel<<<grid, block, smem, stream>>>(args) is written GPTOSS_LAUNCH(grid, block, smem, stream, kernel)(args), which
// the host build maps onto its fiber runtime; the kernel comes last because its template arguments may hold commas.
#define GPTOSS_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

#include <cstdint>
#include <cstring>

#include "gptoss_kernels.h"

// The library is built with hidden visibility; the C ABI of gptoss_kernels.h is exported explicitly.
#define GPTOSS_EXPORT __attribute__((visibility("default")))

// Returns the cudaError_t of a failed CUDA runtime call from the enclosing function (never aborts).
#define GPTOSS_CUDA_TRY(call)                                                                                      \
    do {                                                                                                           \
        const cudaError_t gptoss_err_ = (call);                                                                    \
        if (gptoss_err_ != cudaSuccess) return static_cast<int>(gptoss_err_);                                      \
    } while (0)

namespace gptoss {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

__host__ __device__ constexpr size_t align_up(size_t bytes, size_t alignment) {
    return (bytes + alignment - 1) / alignment * alignment;
}

inline bool is_aligned(const void* p, size_t alignment) {
    return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

template <typename To, typename From>
__host__ __device__ __forceinline__ To bit_cast(const From& from) {
    static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
    To to;
    memcpy(&to, &from, sizeof(To));
    return to;
}

// ---------------------------------------------------------------- element types

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Two packed 16-bit values (element 0 in the low half) as floats.
__device__ __forceinline__ float2 unpack2(uint32_t bits, __half) { return __half22float2(bit_cast<__half2>(bits)); }
__device__ __forceinline__ float2 unpack2(uint32_t bits, __nv_bfloat16) {
    return make_float2(__uint_as_float(bits << 16), __uint_as_float(bits & 0xffff0000u));
}

// Loads 8 consecutive elements as floats; p must be 16-byte aligned.
__device__ __forceinline__ void load8(const float* p, float (&out)[8]) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}

template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&out)[8]) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 pair = unpack2(words[i], T());
        out[2 * i] = pair.x;
        out[2 * i + 1] = pair.y;
    }
}

// Copies 16 bytes; both pointers must be 16-byte aligned.
__device__ __forceinline__ void copy16(void* dst, const void* src) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
}

// ---------------------------------------------------------------- warp reductions

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
    return x;
}

// Sum / max over groups of `width` consecutive lanes (width a power of two <= 32); every lane gets the result.
template <int width>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
    for (int offset = width / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
    return x;
}

template <int width>
__device__ __forceinline__ float group_max(float x) {
#pragma unroll
    for (int offset = width / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
    return x;
}

// ---------------------------------------------------------------- host-side dispatch

// Calls fn(T{}) with T the C++ type of an activation dtype; cudaErrorInvalidValue for any other dtype.
template <typename Fn>
int dispatch_float_dtype(gptoss_dtype dtype, Fn&& fn) {
    switch (dtype) {
        case GPTOSS_FLOAT32: return fn(float());
        case GPTOSS_FLOAT16: return fn(__half());
        case GPTOSS_BFLOAT16: return fn(__nv_bfloat16());
        default: return static_cast<int>(cudaErrorInvalidValue);
    }
}

inline size_t dtype_size(gptoss_dtype dtype) {
    switch (dtype) {
        case GPTOSS_FLOAT32: return 4;
        case GPTOSS_FLOAT16:
        case GPTOSS_BFLOAT16: return 2;
        case GPTOSS_UINT8: return 1;
    }
    return 0;
}

inline bool is_float_dtype(gptoss_dtype dtype) {
    return dtype == GPTOSS_FLOAT32 || dtype == GPTOSS_FLOAT16 || dtype == GPTOSS_BFLOAT16;
}

}  // namespace gptoss

#endif  // GPTOSS_KERNEL_COMMON_CUH
