// Linears sharing one input (linear.cpp): gptoss_cpu_linear, and the q/k/v projections of a decode step in one job.
#ifndef GPTOSS_CPU_LINEAR_H
#define GPTOSS_CPU_LINEAR_H

#include "gptoss_cpu_kernels.h"

namespace gptoss_cpu {

struct LinearOutput {
    const void* weight;  // [out_features, in_features]
    const void* bias;    // [out_features] or nullptr
    int out_features;
    void* y;  // [tokens, out_features]
};

// y_j = x weight_j^T + bias_j for each of `count` outputs, as gptoss_cpu_linear with d.out_features ignored; the
// outputs' tasks share one parallel job and one conversion or packing of x. d must be valid.
int linears(const gptoss_linear_desc& d, const void* x, const LinearOutput* outputs, int count);

}  // namespace gptoss_cpu

#endif  // GPTOSS_CPU_LINEAR_H
