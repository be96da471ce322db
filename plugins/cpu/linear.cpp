// gptoss_cpu_linear: y = x W^T + b, parallel over chunks of output rows (and of tokens in prefill); linears: several
// such outputs of one input in one job.
#include <vector>

#include "amx.h"
#include "common.h"
#include "gemm.h"
#include "gptoss_cpu_kernels.h"
#include "linear.h"

namespace gptoss_cpu {
namespace {

// Whether bf16 x bf16 linears run on AMX tiles.
bool tiles_used() { return isa().gemm_bf16 && amx::available(); }

bool valid_desc(const gptoss_linear_desc* d, bool has_bias) {
    return d && d->num_tokens > 0 && d->in_features > 0 && d->out_features > 0 && is_float_dtype(d->x_dtype) &&
           is_float_dtype(d->weight_dtype) && (!has_bias || is_float_dtype(d->bias_dtype)) &&
           is_float_dtype(d->y_dtype);
}

// bf16 x bf16 with AMX tiles, and vdpbf16ps for the rows after the last whole tile.
void gemm_bf16_tiles(const Gemm& g, int r0, int r1, int t0, int t1, float* c, int ldc) {
    const int end = amx::gemm_bf16(g, r0, r1, t0, t1, c, ldc);
    if (end < r1) isa().gemm_bf16(g, end, r1, t0, t1, c + (end - r0), ldc);
}

WeightFormat format_of(gptoss_dtype t) {
    return t == GPTOSS_FLOAT16 ? WeightFormat::kF16 : t == GPTOSS_BFLOAT16 ? WeightFormat::kBf16 : WeightFormat::kF32;
}

}  // namespace

int linears(const gptoss_linear_desc& d, const void* x, const LinearOutput* outputs, int count) {
    const Isa& kernels = isa();
    const size_t k = d.in_features;
    const bool pairs = kernels.gemm_bf16 && d.x_dtype == GPTOSS_BFLOAT16 && d.weight_dtype == GPTOSS_BFLOAT16;
    const bool tiles = pairs && tiles_used() && amx::fits(d.in_features);
    thread_local std::vector<float> converted;
    if (!pairs && d.x_dtype != GPTOSS_FLOAT32) {
        converted.resize(d.num_tokens * k);
        for (size_t i = 0; i < converted.size(); ++i) converted[i] = load_float(x, i, d.x_dtype);
        x = converted.data();
    }
    thread_local std::vector<uint32_t> packed;
    if (tiles) {
        packed.resize(amx::packed_size(d.in_features, d.num_tokens));
        amx::pack_activations(static_cast<const uint16_t*>(x), k, d.in_features, d.num_tokens, packed.data());
    }
    std::vector<Gemm> problems;
    std::vector<GemmTask> tasks;
    for (int j = 0; j < count; ++j) {
        problems.push_back({format_of(d.weight_dtype), outputs[j].weight, nullptr, d.in_features, x, k, d.num_tokens,
                            tiles ? packed.data() : nullptr});
        const int chunk = chunk_rows(outputs[j].out_features);
        add_gemm_tasks(tasks, j, outputs[j].out_features, d.num_tokens, tiles ? (chunk + 15) / 16 * 16 : chunk);
    }
    const GemmFn run = tiles ? gemm_bf16_tiles : pairs ? kernels.gemm_bf16 : kernels.gemm;
    run_gemm_tasks(run, tasks, problems.data(), [&](const GemmTask& task, const float* c) {
        const LinearOutput& out = outputs[task.problem];
        const int rows = task.r1 - task.r0;
        for (int t = task.t0; t < task.t1; ++t) {
            for (int r = task.r0; r < task.r1; ++r) {
                const float b = out.bias ? load_float(out.bias, r, d.bias_dtype) : 0.0f;
                store_float(out.y, static_cast<size_t>(t) * out.out_features + r, d.y_dtype,
                            c[(t - task.t0) * rows + r - task.r0] + b);
            }
        }
    });
    return 0;
}

}  // namespace gptoss_cpu

extern "C" GPTOSS_EXPORT int gptoss_cpu_linear(const gptoss_linear_desc* desc, const void* x, const void* weight,
                                               const void* bias, void* y) {
    if (!gptoss_cpu::valid_desc(desc, bias) || !x || !weight || !y) return gptoss_cpu::kInvalidValue;
    const gptoss_cpu::LinearOutput output{weight, bias, desc->out_features, y};
    return gptoss_cpu::linears(*desc, x, &output, 1);
}

extern "C" GPTOSS_EXPORT int gptoss_cpu_linear_tiles(void) { return gptoss_cpu::tiles_used() ? 1 : 0; }
