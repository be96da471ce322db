// The kernels in plain C++ for any x86-64 CPU (one float per "vector"; the compiler may still use SSE2).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "common.h"
#include "isa.h"

namespace gptoss_cpu::scalar {

struct V {
    using F = float;
    using Lut = const float*;
    static constexpr int L = 1;
    static constexpr float kExpMin = -104.0f, kExpMax = 88.8f;

    static F zero() { return 0.0f; }
    static F set1(float a) { return a; }
    static F load(const float* p) { return *p; }
    static void store(float* p, F a) { *p = a; }
    static F fma(F a, F b, F c) { return a * b + c; }
    static F add(F a, F b) { return a + b; }
    static F sub(F a, F b) { return a - b; }
    static F mul(F a, F b) { return a * b; }
    static F div(F a, F b) { return a / b; }
    static F min(F a, F b) { return std::min(a, b); }
    static F max(F a, F b) { return std::max(a, b); }
    static float sum(F a) { return a; }
    static float hmax(F a) { return a; }
    static void sum4(const F (&v)[4], float* out) { std::copy(v, v + 4, out); }
    static F round(F a) { return std::nearbyint(a); }
    static F scale2(F p, F n) { return std::ldexp(p, static_cast<int>(n)); }
    static F load_bf16(const uint16_t* p) { return bf16_to_float(*p); }
    static F load_f16(const uint16_t* p) { return half_to_float(*p); }
    static Lut load_lut(const float* lut) { return lut; }
    static F fp4(const uint8_t* bytes, Lut lut, int shift) { return lut[(*bytes >> shift) & 15]; }
};

constexpr int kRowsDecode = 4, kRows = 2, kTokens = 2;

#include "kernels.inc"

const Isa kIsa = {"scalar", V::L, gemm, nullptr, swiglu, attention, read, nullptr, nullptr};

}  // namespace gptoss_cpu::scalar
