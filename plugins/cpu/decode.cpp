// gptoss_cpu_decode_attention: the part of a decoder layer's decode step between two MoE calls, in one call, so
// that a step runs no interpreter code between its kernels there. Each op is the one the PyTorch model runs
// (exporter/model.py), rounded where the model rounds: RMSNorm in float32, linears as gptoss_cpu_linear computes
// them (q, k and v in one parallel job), RoPE as bf16/float32 elementwise ops, sink attention through
// gptoss_sink_attention, the residual add.
#include <cmath>
#include <vector>

#include "common.h"
#include "gptoss_cpu_kernels.h"
#include "linear.h"

namespace gptoss_cpu {
namespace {

bool valid_desc(const gptoss_decode_attention_desc* d) {
    return d && d->batch > 0 && d->hidden_size > 0 && d->num_heads > 0 && d->num_kv_heads > 0 &&
           d->num_heads % d->num_kv_heads == 0 && d->head_dim > 0 && d->head_dim % 2 == 0 && d->capacity > 0 &&
           d->sliding_window >= 0 && d->num_experts > 0 && is_float_dtype(d->dtype);
}

// out = weight * (x * rsqrt(mean(x^2) + eps)) per row, in float32 (RMSNorm), rounded once to `t`.
void rms_norm(const void* x, const float* weight, int rows, int n, float eps, gptoss_dtype t, void* out) {
    thread_local std::vector<float> row;
    row.resize(n);
    for (int r = 0; r < rows; ++r) {
        double squares = 0.0;
        for (int i = 0; i < n; ++i) {
            row[i] = load_float(x, static_cast<size_t>(r) * n + i, t);
            const float square = row[i] * row[i];
            squares += square;
        }
        const float inv = 1.0f / std::sqrt(static_cast<float>(squares / n) + eps);
        for (int i = 0; i < n; ++i) store_float(out, static_cast<size_t>(r) * n + i, t, weight[i] * (row[i] * inv));
    }
}

// A float32 result rounded to the activations' type, as each elementwise op of the model rounds it.
inline float rounded(float v, gptoss_dtype t) {
    switch (t) {
        case GPTOSS_BFLOAT16: return bf16_to_float(float_to_bf16(v));
        case GPTOSS_FLOAT16: return half_to_float(float_to_half(v));
        default: return v;
    }
}

// Half-split RoPE in place on x [rows, heads, D] with cos/sin [rows, D/2] (rope.apply_rotary).
void rope(void* x, const void* cos, const void* sin, int rows, int heads, int d, gptoss_dtype t) {
    const int half = d / 2;
    for (int r = 0; r < rows; ++r) {
        for (int h = 0; h < heads; ++h) {
            const size_t base = (static_cast<size_t>(r) * heads + h) * d;
            for (int i = 0; i < half; ++i) {
                const float c = load_float(cos, static_cast<size_t>(r) * half + i, t);
                const float s = load_float(sin, static_cast<size_t>(r) * half + i, t);
                const float first = load_float(x, base + i, t), second = load_float(x, base + half + i, t);
                const float a = rounded(rounded(first * c, t) - rounded(second * s, t), t);
                const float b = rounded(rounded(second * c, t) + rounded(first * s, t), t);
                store_float(x, base + i, t, a);
                store_float(x, base + half + i, t, b);
            }
        }
    }
}

int linear(const void* x, int rows, int k, const void* weight, const void* bias, int n, gptoss_dtype t, void* y) {
    const gptoss_linear_desc desc{rows, k, n, t, t, t, t};
    const LinearOutput output{weight, bias, n, y};
    return linears(desc, x, &output, 1);
}

// Scratch of one call: the normed input, q, k, v, the attention output and o_proj's output.
struct Scratch {
    char *normed, *q, *k, *v, *attention, *o;
    size_t bytes;
};

Scratch carve(const gptoss_decode_attention_desc& d, void* base) {
    const size_t elem = dtype_size(d.dtype), rows = d.batch;
    const size_t q = rows * d.num_heads * d.head_dim * elem, kv = rows * d.num_kv_heads * d.head_dim * elem;
    const size_t hidden = rows * d.hidden_size * elem;
    WorkspaceCarver carver(base);
    Scratch s{};
    s.normed = carver.take<char>(hidden), s.q = carver.take<char>(q), s.k = carver.take<char>(kv);
    s.v = carver.take<char>(kv), s.attention = carver.take<char>(q), s.o = carver.take<char>(hidden);
    s.bytes = carver.used();
    return s;
}

// h += x, elementwise in float32, rounded to t.
void add_into(void* h, const void* x, size_t n, gptoss_dtype t) {
    for (size_t i = 0; i < n; ++i) store_float(h, i, t, load_float(h, i, t) + load_float(x, i, t));
}

int decode_attention(const gptoss_decode_attention_desc& d, const gptoss_decode_attention_weights& w, void* h,
                     const void* residual, const void* cos, const void* sin, void* kv_cache, const int32_t* past_len,
                     const int32_t* new_len, void* normed, void* router_logits, void* workspace) {
    const Scratch s = carve(d, workspace);
    const int rows = d.batch, hidden = d.hidden_size, q_size = d.num_heads * d.head_dim;
    const int kv_size = d.num_kv_heads * d.head_dim;
    const gptoss_dtype t = d.dtype;
    if (residual) add_into(h, residual, static_cast<size_t>(rows) * hidden, t);
    rms_norm(h, w.input_norm, rows, hidden, d.rms_norm_eps, t, s.normed);
    const gptoss_linear_desc projection{rows, hidden, q_size, t, t, t, t};
    const LinearOutput qkv[] = {
        {w.q, w.q_bias, q_size, s.q}, {w.k, w.k_bias, kv_size, s.k}, {w.v, w.v_bias, kv_size, s.v}};
    int code = linears(projection, s.normed, qkv, 3);
    if (code) return code;
    rope(s.q, cos, sin, rows, d.num_heads, d.head_dim, t);
    rope(s.k, cos, sin, rows, d.num_kv_heads, d.head_dim, t);
    const gptoss_attention_desc attention{rows, 1, d.num_heads, d.num_kv_heads, d.head_dim, d.capacity,
                                          d.sliding_window, d.scale, t};
    code = gptoss_sink_attention(&attention, s.q, s.k, s.v, w.sinks, kv_cache, past_len, new_len, s.attention,
                                 kv_cache, nullptr, nullptr);
    if (!code) code = linear(s.attention, rows, q_size, w.o, w.o_bias, hidden, t, s.o);
    if (code) return code;
    add_into(h, s.o, static_cast<size_t>(rows) * hidden, t);
    rms_norm(h, w.post_norm, rows, hidden, d.rms_norm_eps, t, normed);
    return linear(normed, rows, hidden, w.router, w.router_bias, d.num_experts, t, router_logits);
}

}  // namespace
}  // namespace gptoss_cpu

extern "C" {

GPTOSS_EXPORT size_t gptoss_cpu_decode_attention_workspace_size(const gptoss_decode_attention_desc* desc) {
    return gptoss_cpu::valid_desc(desc) ? gptoss_cpu::carve(*desc, nullptr).bytes : 0;
}

GPTOSS_EXPORT int gptoss_cpu_decode_attention(const gptoss_decode_attention_desc* desc,
                                              const gptoss_decode_attention_weights* weights, void* h,
                                              const void* residual, const void* cos, const void* sin,
                                              void* kv_cache, const int32_t* past_len, const int32_t* new_len,
                                              void* normed, void* router_logits, void* workspace) {
    using namespace gptoss_cpu;
    if (!valid_desc(desc) || !weights || !weights->input_norm || !weights->post_norm || !weights->sinks ||
        !weights->q || !weights->k || !weights->v || !weights->o || !weights->router || !h || !cos || !sin ||
        !kv_cache || !past_len || !new_len || !normed || !router_logits || !workspace) {
        return kInvalidValue;
    }
    return decode_attention(*desc, *weights, h, residual, cos, sin, kv_cache, past_len, new_len, normed,
                            router_logits, workspace);
}

}  // extern "C"
