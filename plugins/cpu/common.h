// Scalar helpers shared by the CPU kernels: status codes, element types, bf16/fp16 conversions, the MXFP4 table.
// Everything here is baseline x86-64 (or any target): ISA-specific code lives in isa_*.cpp.
#ifndef GPTOSS_CPU_COMMON_H
#define GPTOSS_CPU_COMMON_H

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "gptoss_kernels.h"

#define GPTOSS_EXPORT __attribute__((visibility("default")))

namespace gptoss_cpu {

// The cudaError_t codes the C ABI documents (tools/kernels.py names them).
constexpr int kInvalidValue = 1;

constexpr int kMxfp4Block = 32;       // elements per E8M0 scale
constexpr int kMxfp4BlockBytes = 16;  // two E2M1 codes per byte

inline bool is_float_dtype(gptoss_dtype t) {
    return t == GPTOSS_FLOAT32 || t == GPTOSS_FLOAT16 || t == GPTOSS_BFLOAT16;
}

inline size_t dtype_size(gptoss_dtype t) { return t == GPTOSS_FLOAT32 ? 4 : t == GPTOSS_UINT8 ? 1 : 2; }

inline float bits_to_float(uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
    return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

inline float half_to_float(uint16_t h) {
    _Float16 v;
    std::memcpy(&v, &h, sizeof v);
    return static_cast<float>(v);
}

inline uint16_t float_to_half(float f) {
    const _Float16 v = static_cast<_Float16>(f);  // round to nearest even
    uint16_t h;
    std::memcpy(&h, &v, sizeof h);
    return h;
}

// Element i of a float tensor of type t, as float32 (exact).
inline float load_float(const void* data, size_t i, gptoss_dtype t) {
    switch (t) {
        case GPTOSS_FLOAT16: return half_to_float(static_cast<const uint16_t*>(data)[i]);
        case GPTOSS_BFLOAT16: return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
        default: return static_cast<const float*>(data)[i];
    }
}

// Stores v as element i of a float tensor of type t (rounded once, to nearest even).
inline void store_float(void* data, size_t i, gptoss_dtype t, float v) {
    switch (t) {
        case GPTOSS_FLOAT16: static_cast<uint16_t*>(data)[i] = float_to_half(v); break;
        case GPTOSS_BFLOAT16: static_cast<uint16_t*>(data)[i] = float_to_bf16(v); break;
        default: static_cast<float*>(data)[i] = v; break;
    }
}

// FP4 E2M1 code -> value (docs/numerics.md): sign bit 3, exponent bits 2-1 (bias 1), mantissa bit 0.
constexpr float kFp4Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Row s: the 16 values times 2^(s - 127), rounded once from exact doubles, so exact wherever float32 can hold them
// (every scale byte: 2^-127 is subnormal, 6 * 2^128 overflows to inf as it must).
struct Fp4Table {
    alignas(64) float rows[256][16];
};

constexpr Fp4Table make_fp4_table() {
    Fp4Table table{};
    for (int s = 0; s < 256; ++s) {
        double scale = 1.0;
        for (int e = s; e > 127; --e) scale *= 2.0;
        for (int e = s; e < 127; ++e) scale *= 0.5;
        for (int c = 0; c < 16; ++c) {
            const double v = kFp4Values[c] * scale;  // |v| >= 2^128 rounds to inf in float32
            table.rows[s][c] = v >= 0x1p128 ? __builtin_inff() : v <= -0x1p128 ? -__builtin_inff() : static_cast<float>(v);
        }
    }
    return table;
}

inline constexpr Fp4Table kFp4Table = make_fp4_table();

// Consecutive 64-byte-aligned pieces of a caller's workspace; with a null base it only counts the bytes.
class WorkspaceCarver {
public:
    explicit WorkspaceCarver(void* base) : base_(static_cast<char*>(base)) {}
    template <class T>
    T* take(size_t count) {
        char* p = base_ ? base_ + used_ : nullptr;
        used_ += (count * sizeof(T) + 63) / 64 * 64;
        return reinterpret_cast<T*>(p);
    }
    size_t used() const { return used_; }

private:
    char* base_;
    size_t used_ = 0;
};

}  // namespace gptoss_cpu

#endif  // GPTOSS_CPU_COMMON_H
