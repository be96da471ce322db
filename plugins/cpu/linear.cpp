// gptoss_cpu_linear: y = x W^T + b, parallel over chunks of output rows (and of tokens in prefill).
#include <vector>

#include "common.h"
#include "gemm.h"
#include "gptoss_cpu_kernels.h"

namespace gptoss_cpu {
namespace {

bool valid_desc(const gptoss_linear_desc* d, bool has_bias) {
    return d && d->num_tokens > 0 && d->in_features > 0 && d->out_features > 0 && is_float_dtype(d->x_dtype) &&
           is_float_dtype(d->weight_dtype) && (!has_bias || is_float_dtype(d->bias_dtype)) &&
           is_float_dtype(d->y_dtype);
}

WeightFormat format_of(gptoss_dtype t) {
    return t == GPTOSS_FLOAT16 ? WeightFormat::kF16 : t == GPTOSS_BFLOAT16 ? WeightFormat::kBf16 : WeightFormat::kF32;
}

int linear(const gptoss_linear_desc& d, const void* x, const void* weight, const void* bias, void* y) {
    const Isa& kernels = isa();
    const size_t k = d.in_features, n = d.out_features;
    const bool pairs = kernels.gemm_bf16 && d.x_dtype == GPTOSS_BFLOAT16 && d.weight_dtype == GPTOSS_BFLOAT16;
    thread_local std::vector<float> converted;
    if (!pairs && d.x_dtype != GPTOSS_FLOAT32) {
        converted.resize(d.num_tokens * k);
        for (size_t i = 0; i < converted.size(); ++i) converted[i] = load_float(x, i, d.x_dtype);
        x = converted.data();
    }
    const Gemm gemm{format_of(d.weight_dtype), weight, nullptr, d.in_features, x, k, d.num_tokens};
    std::vector<GemmTask> tasks;
    add_gemm_tasks(tasks, 0, d.out_features, d.num_tokens, chunk_rows(d.out_features));
    run_gemm_tasks(kernels, tasks, &gemm, pairs, [&](const GemmTask& task, const float* c) {
        const int rows = task.r1 - task.r0;
        for (int t = task.t0; t < task.t1; ++t) {
            for (int r = task.r0; r < task.r1; ++r) {
                const float b = bias ? load_float(bias, r, d.bias_dtype) : 0.0f;
                store_float(y, t * n + r, d.y_dtype, c[(t - task.t0) * rows + r - task.r0] + b);
            }
        }
    });
    return 0;
}

}  // namespace
}  // namespace gptoss_cpu

extern "C" GPTOSS_EXPORT int gptoss_cpu_linear(const gptoss_linear_desc* desc, const void* x, const void* weight,
                                               const void* bias, void* y) {
    if (!gptoss_cpu::valid_desc(desc, bias) || !x || !weight || !y) return gptoss_cpu::kInvalidValue;
    return gptoss_cpu::linear(*desc, x, weight, bias, y);
}
