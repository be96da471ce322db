// gptoss_moe on the CPU. Tokens go in passes of at most kPassTokens; a pass groups its (token, slot) assignments by
// expert, runs gate_up + clamped SwiGLU and then down as gemm tasks over (expert, weight rows, tokens), and
// finally forms each token's weighted sum. At one token (decode) the tasks split the rows of the selected experts
// across the threads; with many tokens each weight tile serves all the tokens of its expert in the task.
#include <algorithm>
#include <vector>

#include "common.h"
#include "gemm.h"

namespace gptoss_cpu {
namespace {

constexpr int kPassTokens = 256;
constexpr int kMaxExperts = 1024;

// Scratch of one pass, carved from the caller's workspace; A = tokens of the pass x top_k assignments.
struct Workspace {
    float* x;           // [A, H] each assignment's token as float32, in the gemm activation layout
    float* h;           // [A, I] SwiGLU outputs, same layout
    float* y;           // [A, H] expert outputs, row token * K + slot
    uint8_t* digits;    // [A, digit_bytes(max(H, I))] the x or h row of an expert's only assignment, as digits
    int32_t* order;     // [A] token * K + slot of the assignments, grouped by expert
    int32_t* offsets;   // [E + 1] start of each expert's group in order
    size_t digit_stride;
    size_t bytes;
};

Workspace carve(const gptoss_moe_desc& d, void* base) {
    const size_t a = static_cast<size_t>(std::min(d.num_tokens, kPassTokens)) * d.top_k;
    WorkspaceCarver carver(base);
    Workspace ws{};
    ws.x = carver.take<float>(a * d.hidden_size);
    ws.h = carver.take<float>(a * d.intermediate_size);
    ws.y = carver.take<float>(a * d.hidden_size);
    ws.digit_stride = digit_bytes(std::max(d.hidden_size, d.intermediate_size));
    ws.digits = carver.take<uint8_t>(a * ws.digit_stride);
    ws.order = carver.take<int32_t>(a);
    ws.offsets = carver.take<int32_t>(d.num_experts + 1);
    ws.bytes = carver.used();
    return ws;
}

bool valid_desc(const gptoss_moe_desc* d) {
    if (!d || d->num_tokens <= 0 || d->hidden_size <= 0 || d->intermediate_size <= 0 || d->num_experts <= 0 ||
        d->top_k <= 0 || d->top_k > d->num_experts || d->num_experts > kMaxExperts ||
        d->hidden_size % kMxfp4Block != 0 || d->intermediate_size % kMxfp4Block != 0 || !is_float_dtype(d->dtype)) {
        return false;
    }
    switch (d->weight_format) {
        case GPTOSS_WEIGHTS_FLOAT: return is_float_dtype(d->weight_dtype);
        case GPTOSS_WEIGHTS_MXFP4: return d->weight_dtype == GPTOSS_UINT8;
    }
    return false;
}

// One weight tensor of all experts, [E, rows, k] (MXFP4: blocks [E, rows, k/32, 16] and scales [E, rows, k/32]).
struct ExpertWeights {
    WeightFormat format;
    const char* w;
    const uint8_t* scales;
    const float* bias;  // [E, rows]
    int rows, k;
    size_t elem_bytes;  // dense formats

    Gemm gemm(int e, const float* x, int tokens) const {
        const size_t n = static_cast<size_t>(rows) * k;  // elements per expert
        const size_t bytes = format == WeightFormat::kMxfp4 ? n / 2 : n * elem_bytes;
        return {format, w + e * bytes, scales ? scales + e * n / kMxfp4Block : nullptr, k, x, static_cast<size_t>(k),
                tokens};
    }
};

// The experts' gemm: on activation digits where a problem has them (its expert's only token), else in float32.
void expert_gemm(const Gemm& g, int r0, int r1, int t0, int t1, float* c, int ldc) {
    const Isa& kernels = isa();
    (g.packed ? kernels.gemm_mxfp4_digits : kernels.gemm)(g, r0, r1, t0, t1, c, ldc);
}

// The call's tensors, advanced to the current pass.
struct Pass {
    const void* hidden;
    const int32_t* ids;
    const void* weights;
    void* out;
    int tokens;
};

class Moe {
public:
    Moe(const gptoss_moe_desc& d, const ExpertWeights& gate_up, const ExpertWeights& down, const Workspace& ws)
        : d_(d), gate_up_(gate_up), down_(down), ws_(ws), kernels_(isa()),
          // float32 activations keep float32 products: the digits round what lies 2^20 below a block's largest
          digits_(kernels_.gemm_mxfp4_digits && gate_up.format == WeightFormat::kMxfp4 && d.dtype != GPTOSS_FLOAT32) {}

    void run(const Pass& p) {
        group(p);
        gather(p);
        pack_digits(ws_.x, d_.hidden_size);
        gate_up();
        pack_digits(ws_.h, d_.intermediate_size);
        down();
        combine(p);
    }

private:
    bool routed(int32_t id) const { return id >= 0 && id < d_.num_experts; }

    // Where element i of an activation row goes: MXFP4 gemms read pair-split groups (mxfp4_position).
    size_t column(size_t i) const { return gate_up_.format == WeightFormat::kMxfp4 ? mxfp4_position(i, kernels_.lanes) : i; }

    // Counting sort of the pass's assignments by expert.
    void group(const Pass& p) {
        const int assignments = p.tokens * d_.top_k;
        int32_t* offsets = ws_.offsets;
        std::fill(offsets, offsets + d_.num_experts + 1, 0);
        for (int a = 0; a < assignments; ++a) {
            if (routed(p.ids[a])) ++offsets[p.ids[a] + 1];
        }
        for (int e = 0; e < d_.num_experts; ++e) offsets[e + 1] += offsets[e];
        std::vector<int32_t> next(offsets, offsets + d_.num_experts);
        for (int a = 0; a < assignments; ++a) {
            if (routed(p.ids[a])) ws_.order[next[p.ids[a]]++] = a;
        }
        experts_.clear();
        for (int e = 0; e < d_.num_experts; ++e) {
            if (offsets[e + 1] > offsets[e]) experts_.push_back(e);
        }
    }

    // x row of each assignment: its token's hidden state as float32, in the gemm layout.
    void gather(const Pass& p) {
        const int h = d_.hidden_size;
        parallel_for(ws_.offsets[d_.num_experts], 16, [&](int64_t begin, int64_t end) {
            for (int64_t a = begin; a < end; ++a) {
                const size_t token = ws_.order[a] / d_.top_k;
                float* row = ws_.x + a * h;
                for (int i = 0; i < h; ++i) row[column(i)] = load_float(p.hidden, token * h + i, d_.dtype);
            }
        });
    }

    bool on_digits(int e) const { return digits_ && ws_.offsets[e + 1] - ws_.offsets[e] == 1; }

    // The activation row [A, k] of each expert that has one token, as digits for gemm_mxfp4_digits.
    void pack_digits(const float* x, int k) {
        if (!digits_) return;
        parallel_for(static_cast<int64_t>(experts_.size()), 1, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
                const int first = ws_.offsets[experts_[i]];
                if (on_digits(experts_[i])) kernels_.pack_digits(x + static_cast<size_t>(first) * k, k,
                                                                 ws_.digits + first * ws_.digit_stride);
            }
        });
    }

    // Gemm tasks of one weight tensor over the routed experts, reading activations `x` ([A, k]).
    std::vector<GemmTask> tasks(const ExpertWeights& w, const float* x) {
        problems_.clear();
        std::vector<GemmTask> tasks;
        const int chunk = chunk_rows(static_cast<int64_t>(w.rows) * experts_.size());
        for (const int e : experts_) {
            const int first = ws_.offsets[e], count = ws_.offsets[e + 1] - first;
            add_gemm_tasks(tasks, static_cast<int>(problems_.size()), w.rows, count, chunk);
            problems_.push_back(w.gemm(e, x + static_cast<size_t>(first) * w.k, count));
            if (on_digits(e)) problems_.back().packed = ws_.digits + first * ws_.digit_stride;
        }
        return tasks;
    }

    void gate_up() {
        const std::vector<GemmTask> work = tasks(gate_up_, ws_.x);
        run_gemm_tasks(expert_gemm, work, problems_.data(), [&](const GemmTask& task, const float* c) {
            const int e = experts_[task.problem], rows = task.r1 - task.r0, pairs = rows / 2;
            const float* bias = gate_up_.bias + static_cast<size_t>(e) * gate_up_.rows + task.r0;
            float gate[kMaxChunkRows / 2] = {}, up[kMaxChunkRows / 2] = {}, h[kMaxChunkRows / 2];  // room for swiglu
            for (int t = task.t0; t < task.t1; ++t) {
                const float* u = c + (t - task.t0) * rows;
                for (int i = 0; i < pairs; ++i) {
                    gate[i] = u[2 * i] + bias[2 * i];
                    up[i] = u[2 * i + 1] + bias[2 * i + 1];
                }
                kernels_.swiglu(gate, up, pairs, d_.swiglu_alpha, d_.swiglu_limit, h);
                float* row = ws_.h + static_cast<size_t>(ws_.offsets[e] + t) * d_.intermediate_size;
                for (int i = 0; i < pairs; ++i) row[column(task.r0 / 2 + i)] = h[i];
            }
        });
    }

    void down() {
        const std::vector<GemmTask> work = tasks(down_, ws_.h);
        run_gemm_tasks(expert_gemm, work, problems_.data(), [&](const GemmTask& task, const float* c) {
            const int e = experts_[task.problem], rows = task.r1 - task.r0;
            const float* bias = down_.bias + static_cast<size_t>(e) * down_.rows;
            for (int t = task.t0; t < task.t1; ++t) {
                float* y = ws_.y + static_cast<size_t>(ws_.order[ws_.offsets[e] + t]) * d_.hidden_size;
                for (int r = task.r0; r < task.r1; ++r) y[r] = c[(t - task.t0) * rows + r - task.r0] + bias[r];
            }
        });
    }

    // out[t] = sum over routed slots of weight * y, in float32 (slot by slot), rounded once.
    void combine(const Pass& p) {
        const int h = d_.hidden_size, k = d_.top_k;
        parallel_for(p.tokens, 1, [&](int64_t begin, int64_t end) {
            thread_local std::vector<float> sum;
            sum.resize(h);
            for (int64_t t = begin; t < end; ++t) {
                std::fill(sum.begin(), sum.end(), 0.0f);
                for (int s = 0; s < k; ++s) {
                    const size_t a = t * k + s;
                    if (!routed(p.ids[a])) continue;
                    const float weight = load_float(p.weights, a, d_.dtype), *y = ws_.y + a * h;
                    for (int r = 0; r < h; ++r) sum[r] += weight * y[r];
                }
                for (int r = 0; r < h; ++r) store_float(p.out, t * h + r, d_.dtype, sum[r]);
            }
        });
    }

    const gptoss_moe_desc& d_;
    const ExpertWeights gate_up_, down_;
    const Workspace ws_;
    const Isa& kernels_;
    const bool digits_;          // one-token experts run gemm_mxfp4_digits (bf16 and fp16 activations)
    std::vector<int> experts_;   // routed experts of the pass, ascending
    std::vector<Gemm> problems_;  // one per routed expert, for the current weight tensor
};

int moe(const gptoss_moe_desc& d, const void* hidden, const int32_t* ids, const void* weights,
        const ExpertWeights& gate_up, const ExpertWeights& down, void* out, void* workspace) {
    Moe moe(d, gate_up, down, carve(d, workspace));
    const size_t act = dtype_size(d.dtype);
    for (int t0 = 0; t0 < d.num_tokens; t0 += kPassTokens) {
        const Pass pass{static_cast<const char*>(hidden) + t0 * act * d.hidden_size, ids + t0 * d.top_k,
                        static_cast<const char*>(weights) + t0 * act * d.top_k,
                        static_cast<char*>(out) + t0 * act * d.hidden_size, std::min(kPassTokens, d.num_tokens - t0)};
        moe.run(pass);
    }
    return 0;
}

WeightFormat format_of(const gptoss_moe_desc& d) {
    if (d.weight_format == GPTOSS_WEIGHTS_MXFP4) return WeightFormat::kMxfp4;
    return d.weight_dtype == GPTOSS_FLOAT16 ? WeightFormat::kF16
           : d.weight_dtype == GPTOSS_BFLOAT16 ? WeightFormat::kBf16
                                               : WeightFormat::kF32;
}

}  // namespace
}  // namespace gptoss_cpu

extern "C" {

GPTOSS_EXPORT size_t gptoss_moe_workspace_size(const gptoss_moe_desc* desc) {
    return gptoss_cpu::valid_desc(desc) ? gptoss_cpu::carve(*desc, nullptr).bytes : 0;
}

GPTOSS_EXPORT int gptoss_moe(const gptoss_moe_desc* desc, const void* hidden, const int32_t* expert_ids,
                             const void* expert_weights, const void* gate_up_weight, const uint8_t* gate_up_scales,
                             const float* gate_up_bias, const void* down_weight, const uint8_t* down_scales,
                             const float* down_bias, void* out, void* workspace, gptoss_stream) {
    using namespace gptoss_cpu;
    const bool mxfp4 = desc && desc->weight_format == GPTOSS_WEIGHTS_MXFP4;
    if (!valid_desc(desc) || !hidden || !expert_ids || !expert_weights || !gate_up_weight || !gate_up_bias ||
        !down_weight || !down_bias || !out || !workspace || (mxfp4 && (!gate_up_scales || !down_scales))) {
        return kInvalidValue;
    }
    const gptoss_moe_desc& d = *desc;
    const WeightFormat format = format_of(d);
    const size_t elem = dtype_size(d.weight_dtype);
    const ExpertWeights gate_up{format, static_cast<const char*>(gate_up_weight), mxfp4 ? gate_up_scales : nullptr,
                                gate_up_bias, 2 * d.intermediate_size, d.hidden_size, elem};
    const ExpertWeights down{format, static_cast<const char*>(down_weight), mxfp4 ? down_scales : nullptr, down_bias,
                             d.hidden_size, d.intermediate_size, elem};
    return moe(d, hidden, expert_ids, expert_weights, gate_up, down, out, workspace);
}

}  // extern "C"
