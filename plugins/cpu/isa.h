// The ISA-specific kernels (isa_avx512.cpp, isa_avx2.cpp, isa_scalar.cpp, all built from kernels.inc) and the
// plain structs they take. The library picks one table at load (isa()) and calls only through it.
#ifndef GPTOSS_CPU_ISA_H
#define GPTOSS_CPU_ISA_H

#include <cstddef>
#include <cstdint>

#include "common.h"

namespace gptoss_cpu {

enum class WeightFormat { kF32, kF16, kBf16, kMxfp4 };

// Dot products of weight rows with activation rows: c[t * ldc + r] = sum_i w[r, i] * x[t, i].
struct Gemm {
    WeightFormat format;
    const void* w;          // [N, K] (MXFP4: blocks [N, K/32, 16])
    const uint8_t* scales;  // MXFP4: [N, K/32]
    int k;
    const void* x;  // [tokens, ldx]: float32 (with MXFP4 weights in mxfp4_position order), or bf16 for gemm_bf16
    size_t ldx;
    int tokens;
    const void* packed = nullptr;  // x as amx::pack_activations (or pack_digits) lays it out
    // The first weight row of what this thread computes next (same row pitch), which a kernel may prefetch over its
    // last rows; nullptr if none or unknown.
    const void* next = nullptr;
};

// Address of weight row r of g.
inline const void* weight_row(const Gemm& g, int r) {
    const size_t pitch = g.format == WeightFormat::kMxfp4 ? g.k / 2
                         : g.format == WeightFormat::kF32 ? g.k * sizeof(float)
                                                          : g.k * sizeof(uint16_t);
    return static_cast<const char*>(g.w) + static_cast<size_t>(r) * pitch;
}

// Position of activation element i in the layout MXFP4 gemms read: each group of 2L elements holds its even
// elements, then its odd ones, so that the low and high nibbles of L bytes meet L consecutive activations.
inline size_t mxfp4_position(size_t i, int lanes) {  // lanes: a power of two
    const size_t group = 2 * static_cast<size_t>(lanes), within = i & (group - 1);
    return i - within + (within % 2) * lanes + within / 2;
}

// One token's activations as int8 digits for Isa::gemm_mxfp4_digits (mxfp4_digits.cpp has the layout): per quad of
// four 32-element blocks, 512 bytes.
constexpr int kDigitBytesPerQuad = 512;
inline int digit_quads(int k) { return (k + 4 * kMxfp4Block - 1) / (4 * kMxfp4Block); }
inline size_t digit_bytes(int k) { return static_cast<size_t>(digit_quads(k)) * kDigitBytesPerQuad; }

// One attention call (descriptor values and pointers), and one unit of its work.
struct AttentionArgs {
    const void *q, *k, *v, *cache;
    const float* sinks;
    void* out;
    int seq_len, num_heads, num_kv_heads, head_dim, capacity, window;
    float scale;
    gptoss_dtype dtype;
};

// Queries [s0, s1) of row b, query heads [h0, h0 + heads) (all reading KV head hk); the row caches `past` tokens.
struct AttentionTask {
    int b, past, hk, h0, heads, s0, s1;
};

using GemmFn = void (*)(const Gemm& g, int r0, int r1, int t0, int t1, float* c, int ldc);

struct Isa {
    const char* name;
    int lanes;         // floats per vector
    GemmFn gemm;       // float32 activations, any weight format; c[(t - t0) * ldc + r - r0]
    GemmFn gemm_bf16;  // bf16 activations and bf16 weights (AVX512-BF16), or nullptr
    // h[i] = min(g, limit) * sigmoid(alpha * min(g, limit)) * (clamp(up[i], -limit, limit) + 1), g = gate[i];
    // the three arrays hold n rounded up to a multiple of `lanes`
    void (*swiglu)(const float* gate, const float* up, int n, float alpha, float limit, float* h);
    void (*attention)(const AttentionArgs& a, const AttentionTask& task);
    float (*read)(const float* data, size_t count);  // sum, at full bandwidth
    // MXFP4 weights times one token (t0 = 0, t1 = 1) given as pack_digits made it in g.packed,
    // and pack_digits: a float32 token in mxfp4_position order into digit_bytes(k) bytes; nullptr without
    // AVX512-VNNI and VBMI
    GemmFn gemm_mxfp4_digits;
    void (*pack_digits)(const float* x, int k, void* packed);
};

namespace avx512 {
bool supported();
bool bf16_supported();
bool digits_supported();  // AVX512-BF16, VNNI and VBMI
void pack_digits(const float* x, int k, void* packed);
void gemm_mxfp4_digits(const Gemm& g, int r0, int r1, int t0, int t1, float* c, int ldc);
extern const Isa kIsa;        // without gemm_bf16
extern const Isa kIsaBf16;    // with gemm_bf16, for CPUs with AVX512-BF16
extern const Isa kIsaDigits;  // and with gemm_mxfp4_digits, for CPUs that also have VNNI and VBMI
}  // namespace avx512
namespace avx2 {
bool supported();
extern const Isa kIsa;
}  // namespace avx2
namespace scalar {
extern const Isa kIsa;
}  // namespace scalar

// The kernels in use: $GPTOSS_CPU_ISA or the best the CPU supports, until set_isa.
const Isa& isa();
bool set_isa(const char* name);

}  // namespace gptoss_cpu

#endif  // GPTOSS_CPU_ISA_H
