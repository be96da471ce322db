// gptoss::MoE without TensorRT: fields, input/output rules, kernel descriptor (docs/ops.md "MoE", moe/README.md).
// Inputs hidden, expert_ids, expert_weights, gate_up_weight, [gate_up_scales], gate_up_bias, down_weight,
// [down_scales], down_bias; output out. The scales exist only for MXFP4 weights: a float-format node has 7 inputs
// (scales left out) or all 9 (scales present, unused). TensorRT's ONNX parser passes an empty optional input as a
// null tensor, which addPluginV3 rejects, so a float node reaching TensorRT must have 7.
#ifndef GPTOSS_MOE_H
#define GPTOSS_MOE_H

#include <cstdint>
#include <vector>

#include "common/plugin_fields.h"
#include "common/status.h"
#include "common/tensor_rules.h"
#include "gptoss_kernels.h"

namespace gptoss {

enum class WeightFormat { kMxfp4, kFloat };

struct MoEParams {
    int32_t numExperts = 0;
    int32_t topK = 0;
    int32_t hiddenSize = 0;
    int32_t intermediateSize = 0;
    WeightFormat weightFormat = WeightFormat::kMxfp4;
    float swigluAlpha = 0.0F;
    float swigluLimit = 0.0F;
};

namespace moe {

constexpr const char* kName = "MoE";
constexpr int32_t kNbOutputs = 1;
constexpr int32_t kMxfp4Block = 32;  // elements per E8M0 scale; a block is 16 bytes of E2M1 pairs

// Where each input sits for a given input count (-1: absent).
struct Layout {
    int32_t nbInputs;
    int32_t hidden, expertIds, expertWeights, gateUpWeight, gateUpScales, gateUpBias, downWeight, downScales,
        downBias;
};

// The creator's fields, mirroring the ONNX attributes: num_experts, top_k, hidden_size, intermediate_size (int32),
// weight_format ('mxfp4' | 'float'), swiglu_alpha, swiglu_limit (float32).
const std::vector<FieldSpec>& fieldSpecs();

Status parse(const std::vector<FieldView>& fields, MoEParams& params);
FieldSet toFields(const MoEParams& params);
const char* weightFormatName(WeightFormat format);

// MXFP4: 9 inputs; float: 7 or 9. One output.
Status layoutFor(const MoEParams& params, int32_t nbInputs, int32_t nbOutputs, Layout& layout);

// Type rules of positions 0..nbInputs (inputs then the output): hidden, expert_weights and out one float type;
// expert_ids int32; biases float32; MXFP4 blocks and scales uint8; float weights one float type.
std::vector<TypeRule> typeRules(const MoEParams& params, const Layout& layout);

// Shapes: hidden [T,H], expert_ids/expert_weights [T,K]; MXFP4 gate_up blocks [E,2I,H/32,16], scales [E,2I,H/32],
// down blocks [E,H,I/32,16], scales [E,H,I/32]; float gate_up [E,2I,H], down [E,H,I]; biases [E,2I] and [E,H].
Status checkShapes(const MoEParams& params, const Layout& layout, const std::vector<Shape>& inputs);

// The output has the shape of `hidden`.
constexpr int32_t kOutputShapeSource = 0;

gptoss_moe_desc kernelDesc(const MoEParams& params, int64_t numTokens, TensorType type, TensorType weightType);

}  // namespace moe
}  // namespace gptoss

#endif  // GPTOSS_MOE_H
