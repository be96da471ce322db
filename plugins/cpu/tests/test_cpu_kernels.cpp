// C++ tests of the CPU kernels' pieces: the MXFP4 table and decoding, bf16/fp16 rounding, each ISA's gemm on
// values whose float32 sums are exact (so every summation order must give the same bits), SwiGLU, the thread pool
// and the C ABI's argument checks. The ops themselves are compared with the PyTorch reference in
// tests/test_cpu_kernels.py.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "common.h"
#include "gptoss_cpu_kernels.h"
#include "isa.h"
#include "thread_pool.h"

using namespace gptoss_cpu;

namespace {

int g_failures = 0;

#define CHECK(cond)                                                               \
    do {                                                                          \
        if (!(cond)) {                                                            \
            std::fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            ++g_failures;                                                         \
        }                                                                         \
    } while (0)

std::vector<const Isa*> supported_isas() {
    std::vector<const Isa*> isas{&scalar::kIsa};
    if (avx2::supported()) isas.push_back(&avx2::kIsa);
    if (avx512::digits_supported()) {
        isas.push_back(&avx512::kIsaDigits);
    } else if (avx512::supported()) {
        isas.push_back(avx512::bf16_supported() ? &avx512::kIsaBf16 : &avx512::kIsa);
    }
    return isas;
}

void test_fp4_table() {
    for (int s = 0; s < 256; ++s) {
        for (int c = 0; c < 16; ++c) {
            const float expected = std::ldexp(kFp4Values[c], s - 127);  // exact, or inf when it overflows
            CHECK(kFp4Table.rows[s][c] == expected && std::signbit(kFp4Table.rows[s][c]) == std::signbit(expected));
        }
    }
    CHECK(reinterpret_cast<uintptr_t>(kFp4Table.rows[1]) % 64 == 0);
}

void test_conversions() {
    CHECK(float_to_bf16(1.0f) == 0x3f80);
    CHECK(float_to_bf16(bits_to_float(0x3f808000u)) == 0x3f80);  // a tie rounds to even
    CHECK(float_to_bf16(bits_to_float(0x3f818000u)) == 0x3f82);
    CHECK(float_to_bf16(bits_to_float(0x3f808001u)) == 0x3f81);
    CHECK(std::isnan(bf16_to_float(float_to_bf16(NAN))));
    CHECK(bf16_to_float(0xc0c0) == -6.0f);
    CHECK(float_to_half(1.0f) == 0x3c00 && half_to_float(0x3c00) == 1.0f);
    CHECK(half_to_float(float_to_half(65520.0f)) == INFINITY);  // halfway to the next binade rounds up
    CHECK(half_to_float(float_to_half(1.0f + 1.0f / 4096)) == 1.0f);  // a tie rounds to even
}

// The docs/numerics.md example: byte 0x2B with scale 124 holds -0.1875 then 0.125.
void test_mxfp4_example(const Isa& isa) {
    uint8_t blocks[16] = {0x2b};
    const uint8_t scale = 124;
    for (int element = 0; element < 2; ++element) {
        std::vector<float> x(32, 0.0f);
        x[mxfp4_position(element, isa.lanes)] = 1.0f;
        const Gemm g{WeightFormat::kMxfp4, blocks, &scale, 32, x.data(), 32, 1};
        float c = NAN;
        isa.gemm(g, 0, 1, 0, 1, &c, 1);
        CHECK(c == (element == 0 ? -0.1875f : 0.125f));
    }
}

// y = W x for small integers (MXFP4: codes times powers of two near 1): every partial sum is exact in float32.
void test_gemm_exact(const Isa& isa) {
    std::mt19937 rng(7);
    auto small = [&] { return static_cast<float>(static_cast<int>(rng() % 9) - 4); };
    const int n = 19, k = 100, tokens = 6;  // k: three 32-blocks and a tail
    std::vector<float> x(tokens * k), w(n * k);
    for (float& v : x) v = small();
    for (float& v : w) v = small();
    std::vector<uint16_t> w_bf16(n * k), w_f16(n * k), x_bf16(tokens * k);
    for (int i = 0; i < n * k; ++i) w_bf16[i] = float_to_bf16(w[i]), w_f16[i] = float_to_half(w[i]);
    for (int i = 0; i < tokens * k; ++i) x_bf16[i] = float_to_bf16(x[i]);
    auto expect = [&](const float* c, const auto& weight, int kk, const std::vector<float>& xs, const char* what) {
        for (int t = 0; t < tokens; ++t) {
            for (int r = 0; r < n; ++r) {
                double sum = 0;
                for (int i = 0; i < kk; ++i) sum += weight(r, i) * xs[t * kk + i];
                if (c[t * n + r] != static_cast<float>(sum)) {
                    std::fprintf(stderr, "%s %s: token %d row %d: %g != %g\n", isa.name, what, t, r, c[t * n + r], sum);
                    ++g_failures;
                    return;
                }
            }
        }
    };
    auto dense = [&](int r, int i) { return static_cast<double>(w[r * k + i]); };
    std::vector<float> c(tokens * n);
    const void* weights[] = {w.data(), w_f16.data(), w_bf16.data()};
    const WeightFormat formats[] = {WeightFormat::kF32, WeightFormat::kF16, WeightFormat::kBf16};
    for (int f = 0; f < 3; ++f) {
        isa.gemm({formats[f], weights[f], nullptr, k, x.data(), static_cast<size_t>(k), tokens}, 0, n, 0, tokens,
                 c.data(), n);
        expect(c.data(), dense, k, x, "dense");
    }
    if (isa.gemm_bf16) {
        isa.gemm_bf16({WeightFormat::kBf16, w_bf16.data(), nullptr, k, x_bf16.data(), static_cast<size_t>(k), tokens}, 0,
                      n, 0, tokens, c.data(), n);
        expect(c.data(), dense, k, x, "bf16 pairs");
    }

    const int km = 96;  // MXFP4: whole blocks
    std::vector<uint8_t> blocks(n * km / 2), scales(n * km / 32);
    for (uint8_t& b : blocks) b = static_cast<uint8_t>(rng());
    for (uint8_t& s : scales) s = static_cast<uint8_t>(125 + rng() % 5);
    auto mxfp4 = [&](int r, int i) {
        const int g = i / 32, j = i % 32, byte = blocks[(r * km / 32 + g) * 16 + j / 2];
        return std::ldexp(static_cast<double>(kFp4Values[j % 2 ? byte >> 4 : byte & 15]), scales[r * km / 32 + g] - 127);
    };
    std::vector<float> xm(tokens * km), xm_layout(tokens * km);
    for (float& v : xm) v = small();
    for (int t = 0; t < tokens; ++t)
        for (int i = 0; i < km; ++i) xm_layout[t * km + mxfp4_position(i, isa.lanes)] = xm[t * km + i];
    isa.gemm({WeightFormat::kMxfp4, blocks.data(), scales.data(), km, xm_layout.data(), static_cast<size_t>(km), tokens},
             0, n, 0, tokens, c.data(), n);
    expect(c.data(), mxfp4, km, xm, "mxfp4");
    if (isa.gemm_mxfp4_digits) {  // one token per call; km: a last quad of three blocks
        std::vector<uint8_t> digits(digit_bytes(km));
        for (int t = 0; t < tokens; ++t) {
            isa.pack_digits(xm_layout.data() + t * km, km, digits.data());
            Gemm g{WeightFormat::kMxfp4, blocks.data(), scales.data(), km, nullptr, 0, 1, digits.data()};
            isa.gemm_mxfp4_digits(g, 0, n, 0, 1, c.data() + t * n, n);
        }
        expect(c.data(), mxfp4, km, xm, "mxfp4 digits");
    }
}

// Digits keep each activation to 2^-20 of its block's largest |x| (rounded to nearest): against exact sums, on
// activations spread over 2^-40 .. 2^20 and rows of 16-row tiles and single rows, the error stays within that
// rounding plus float32 summation, and a NaN activation makes every row NaN.
void test_digits_bound(const Isa& isa) {
    if (!isa.gemm_mxfp4_digits) return;
    std::mt19937 rng(11);
    const int n = 37, k = 2880, groups = k / 32;
    std::vector<uint8_t> blocks(n * k / 2), scales(n * groups);
    for (uint8_t& b : blocks) b = static_cast<uint8_t>(rng());
    for (uint8_t& s : scales) s = static_cast<uint8_t>(120 + rng() % 8);
    std::normal_distribution<float> normal;
    std::vector<float> x(k), x_layout(k);
    for (float& v : x) v = std::ldexp(normal(rng), static_cast<int>(rng() % 61) - 40);
    for (int i = 0; i < k; ++i) x_layout[mxfp4_position(i, isa.lanes)] = x[i];
    std::vector<uint8_t> digits(digit_bytes(k));
    isa.pack_digits(x_layout.data(), k, digits.data());
    std::vector<float> c(n);
    const Gemm g{WeightFormat::kMxfp4, blocks.data(), scales.data(), k, nullptr, 0, 1, digits.data()};
    isa.gemm_mxfp4_digits(g, 0, n, 0, 1, c.data(), n);
    for (int r = 0; r < n; ++r) {
        double exact = 0, bound = 0, magnitude = 0;
        for (int b = 0; b < groups; ++b) {
            double largest = 0, weights = 0;
            for (int i = b * 32; i < b * 32 + 32; ++i) {
                const int byte = blocks[(r * groups + b) * 16 + i % 32 / 2];
                const double w = std::ldexp(static_cast<double>(kFp4Values[i % 2 ? byte >> 4 : byte & 15]),
                                            scales[r * groups + b] - 127);
                exact += w * x[i], magnitude += std::fabs(w * x[i]), weights += std::fabs(w);
                largest = std::max(largest, static_cast<double>(std::fabs(x[i])));
            }
            bound += std::ldexp(1.0, std::ilogb(largest) - 20) * weights;
        }
        bound += 1e-6 * magnitude;  // float32 sums of 90 blocks
        if (!(std::fabs(c[r] - exact) <= bound)) {
            std::fprintf(stderr, "%s digits: row %d: %.9g vs exact %.9g (bound %.3g)\n", isa.name, r, c[r], exact,
                         bound);
            ++g_failures;
            return;
        }
    }
    x_layout[100] = NAN;
    isa.pack_digits(x_layout.data(), k, digits.data());
    isa.gemm_mxfp4_digits(g, 0, n, 0, 1, c.data(), n);
    CHECK(std::all_of(c.begin(), c.end(), [](float v) { return std::isnan(v); }));
}

void test_swiglu(const Isa& isa) {
    const float alpha = 1.702f, limit = 7.0f;
    const int n = 37;
    std::vector<float> gate(48), up(48), h(48);
    for (int i = 0; i < n; ++i) gate[i] = -30.0f + 1.1f * i, up[i] = 9.0f - 0.5f * i;
    isa.swiglu(gate.data(), up.data(), n, alpha, limit, h.data());
    for (int i = 0; i < n; ++i) {
        // The exponent is rounded to float32 as in the kernels (and torch): near |x| = 50 that alone moves e^x by
        // 3e-6; what is checked is the rest, about 2 ulp of exp plus the float32 products.
        const double g = std::min(gate[i], limit), u = std::clamp(up[i], -limit, limit);
        const double expected = g / (1 + std::exp(static_cast<double>(-alpha * static_cast<float>(g)))) * (u + 1);
        if (std::abs(h[i] - expected) > 1e-6 * std::abs(expected)) {
            std::fprintf(stderr, "%s swiglu(%g, %g) = %.9g, not %.9g\n", isa.name, gate[i], up[i], h[i], expected);
            ++g_failures;
        }
    }
}

void test_thread_pool() {
    set_num_threads(3);
    CHECK(num_threads() == 3);
    std::vector<std::atomic<int>> hits(10007);
    parallel_for(static_cast<int64_t>(hits.size()), 13, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) ++hits[i];
        parallel_for(4, 1, [&](int64_t, int64_t) {});  // nested: runs on this thread
    });
    bool once = true;
    for (const auto& h : hits) once &= h == 1;
    CHECK(once);
    int calls = 0;
    parallel_for(0, 1, [&](int64_t, int64_t) { ++calls; });
    CHECK(calls == 0);
    set_num_threads(0);
}

void test_abi_checks() {
    CHECK(gptoss_cpu_set_isa("sse9") == kInvalidValue);
    CHECK(gptoss_cpu_set_isa("scalar") == 0);
    CHECK(std::strcmp(gptoss_cpu_isa(), "scalar") == 0);
    gptoss_attention_desc attention{1, 1, 8, 2, 12, 16, 0, 1.0f, GPTOSS_FLOAT32};  // head_dim 12
    float buffer[4096] = {};
    int32_t one = 1;
    CHECK(gptoss_sink_attention(&attention, buffer, buffer, buffer, buffer, buffer, &one, &one, buffer, buffer,
                                nullptr, nullptr) == kInvalidValue);
    gptoss_moe_desc moe{1, 32, 32, 2, 1, 1.702f, 7.0f, GPTOSS_FLOAT32, GPTOSS_WEIGHTS_FLOAT, GPTOSS_FLOAT32};
    CHECK(gptoss_moe_workspace_size(&moe) > 0);
    CHECK(gptoss_moe(&moe, buffer, &one, buffer, buffer, nullptr, buffer, buffer, nullptr, buffer, buffer, nullptr,
                     nullptr) == kInvalidValue);  // no workspace
    gptoss_linear_desc linear{1, 8, 8, GPTOSS_FLOAT32, GPTOSS_UINT8, GPTOSS_FLOAT32, GPTOSS_FLOAT32};
    CHECK(gptoss_cpu_linear(&linear, buffer, buffer, nullptr, buffer) == kInvalidValue);  // uint8 weights
    CHECK(std::strcmp(gptoss_kernels_version(), "1.0.0") == 0);
}

}  // namespace

int main() {
    test_fp4_table();
    test_conversions();
    for (const Isa* isa : supported_isas()) {
        test_mxfp4_example(*isa);
        test_gemm_exact(*isa);
        test_digits_bound(*isa);
        test_swiglu(*isa);
    }
    test_thread_pool();
    test_abi_checks();
    if (g_failures) {
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("all CPU kernel checks passed (%zu instruction sets)\n", supported_isas().size());
    return 0;
}
