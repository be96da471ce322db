// The kernels for AVX-512F (16 floats per vector), and bf16 x bf16 dot products with AVX512-BF16. Only the functions
// defined between the pragmas use these instructions; isa() calls them only on CPUs that have them.
// GCC 12's avx512fintrin.h builds undefined vectors by self-initialization, which its own -Wuninitialized flags
// (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "common.h"
#include "isa.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,f16c")

namespace gptoss_cpu::avx512 {

struct V {
    using F = __m512;
    using Lut = __m512;
    static constexpr int L = 16;
    static constexpr float kExpMin = -104.0f, kExpMax = 88.8f;

    static F zero() { return _mm512_setzero_ps(); }
    static F set1(float a) { return _mm512_set1_ps(a); }
    static F load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, F a) { _mm512_storeu_ps(p, a); }
    static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
    static F add(F a, F b) { return _mm512_add_ps(a, b); }
    static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F div(F a, F b) { return _mm512_div_ps(a, b); }
    static F min(F a, F b) { return _mm512_min_ps(a, b); }
    static F max(F a, F b) { return _mm512_max_ps(a, b); }
    static float sum(F a) { return _mm512_reduce_add_ps(a); }
    static float hmax(F a) { return _mm512_reduce_max_ps(a); }
    static void sum4(const F (&v)[4], float* out) {
        // Per 128-bit lane: pairs of v0 | v1 and v2 | v3, then one partial sum of each vector, then across lanes.
        const F s01 = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
        const F s23 = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
        const F s = _mm512_add_ps(_mm512_shuffle_ps(s01, s23, 0x44), _mm512_shuffle_ps(s01, s23, 0xee));
        const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1));
        const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), high);
        _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    }
    static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static F scale2(F p, F n) { return _mm512_scalef_ps(p, n); }

    static F load_bf16(const uint16_t* p) {
        const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
    }
    static F load_f16(const uint16_t* p) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static Lut load_lut(const float* lut) { return _mm512_load_ps(lut); }
    // vpermps looks at the low 4 bits of each index: the low nibble needs no mask.
    static F fp4(const uint8_t* bytes, Lut lut, int shift) {
        const __m512i codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
        return _mm512_permutexvar_ps(shift ? _mm512_srli_epi32(codes, 4) : codes, lut);
    }
};

constexpr int kRowsDecode = 8, kRows = 4, kTokens = 4;

#include "kernels.inc"

}  // namespace gptoss_cpu::avx512

#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,avx2,fma,f16c")

namespace gptoss_cpu::avx512 {

// Tiles with bf16 activations and bf16 weights: vdpbf16ps multiplies the 32 bf16 pairs of two vectors exactly and
// adds each pair into one of 16 float32 lanes; masked loads cover a K that is not a multiple of 32. (MXFP4 weights
// expanded to bf16 this way, with vpermw, measured slower than the float32 path.)
struct Bf16PairTile {
    DenseRows<Bf16Elems> w;
    const uint16_t* x;
    size_t ldx;

    template <int R, int TT>
    void run(int r, int t, float* c, int ldc) const {
        const int k = w.k;
        const uint16_t* xt = x + t * ldx;
        __m512 acc[R][TT];
        for (auto& row : acc)
            for (__m512& a : row) a = _mm512_setzero_ps();
        for (int g = 0; g * kMxfp4Block < k; ++g) {
            const int left = k - g * kMxfp4Block;
            const __mmask32 mask = left >= kMxfp4Block ? ~0u : (1u << left) - 1u;
            __m512bh xv[TT];
            for (int j = 0; j < TT; ++j) {
                xv[j] = (__m512bh)_mm512_maskz_loadu_epi16(mask, xt + j * ldx + g * kMxfp4Block);
            }
            for (int i = 0; i < R; ++i) {
                w.prefetch(r + R + i, g);
                const uint16_t* row = w.w + static_cast<size_t>(r + i) * k + g * kMxfp4Block;
                const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mask, row);
                for (int j = 0; j < TT; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv, xv[j]);
            }
        }
        for (int i = 0; i < R; ++i)
            for (int j = 0; j < TT; ++j) c[j * ldc + i] = _mm512_reduce_add_ps(acc[i][j]);
    }
};

void gemm_bf16(const Gemm& g, int r0, int r1, int t0, int t1, float* c, int ldc) {
    const DenseRows<Bf16Elems> rows{static_cast<const uint16_t*>(g.w), g.k};
    gemm_tiles(Bf16PairTile{rows, static_cast<const uint16_t*>(g.x), g.ldx}, r0, r1, t0, t1, c, ldc);
}

}  // namespace gptoss_cpu::avx512

#pragma GCC pop_options

namespace gptoss_cpu::avx512 {

bool supported() { return __builtin_cpu_supports("avx512f"); }
bool bf16_supported() { return supported() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16"); }

const Isa kIsa = {"avx512", V::L, gemm, nullptr, swiglu, attention, read, nullptr, nullptr};
const Isa kIsaBf16 = {"avx512", V::L, gemm, gemm_bf16, swiglu, attention, read, nullptr, nullptr};
const Isa kIsaDigits = {"avx512", V::L, gemm, gemm_bf16, swiglu, attention, read, gemm_mxfp4_digits, pack_digits};

}  // namespace gptoss_cpu::avx512
