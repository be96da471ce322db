// The kernels for AVX2 + FMA + F16C (8 floats per vector). Only the functions defined between the pragmas use these
// instructions; isa() calls them only on CPUs that have them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "common.h"
#include "isa.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace gptoss_cpu::avx2 {

struct V {
    using F = __m256;
    using Lut = __m256;  // the 8 non-negative values; the sign comes from bit 3 of the code
    static constexpr int L = 8;
    static constexpr float kExpMin = -87.3f, kExpMax = 88.3f;  // 2^n built from exponent bits: n in [-126, 127]

    static F zero() { return _mm256_setzero_ps(); }
    static F set1(float a) { return _mm256_set1_ps(a); }
    static F load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, F a) { _mm256_storeu_ps(p, a); }
    static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
    static F add(F a, F b) { return _mm256_add_ps(a, b); }
    static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
    static F div(F a, F b) { return _mm256_div_ps(a, b); }
    static F min(F a, F b) { return _mm256_min_ps(a, b); }
    static F max(F a, F b) { return _mm256_max_ps(a, b); }
    static float sum(F a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
    }
    static float hmax(F a) {
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    }
    static void sum4(const F (&v)[4], float* out) {
        const F h = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
        _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    }
    static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static F scale2(F p, F n) {
        const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    }

    static F load_bf16(const uint16_t* p) {
        const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
    }
    static F load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
    static Lut load_lut(const float* lut) { return _mm256_load_ps(lut); }
    // vpermps looks at the low 3 bits of each index; bit 3 (the sign) is moved to bit 31 and flips the value.
    static F fp4(const uint8_t* bytes, Lut lut, int shift) {
        __m256i codes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
        if (shift) codes = _mm256_srli_epi32(codes, 4);
        const __m256i sign = _mm256_and_si256(_mm256_slli_epi32(codes, 28), _mm256_set1_epi32(INT32_MIN));
        return _mm256_xor_ps(_mm256_permutevar8x32_ps(lut, codes), _mm256_castsi256_ps(sign));
    }
};

constexpr int kRowsDecode = 4, kRows = 2, kTokens = 2;

#include "kernels.inc"

}  // namespace gptoss_cpu::avx2

#pragma GCC pop_options

namespace gptoss_cpu::avx2 {

bool supported() {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

const Isa kIsa = {"avx2", V::L, gemm, nullptr, swiglu, attention, read, nullptr, nullptr};

}  // namespace gptoss_cpu::avx2
