// MoE inputs and outputs: layout by input count, types, shapes, and the kernel descriptor.
#include "moe.h"

#include <string>

namespace gptoss {
namespace moe {
namespace {

constexpr Layout kNineInputs = {9, 0, 1, 2, 3, 4, 5, 6, 7, 8};
constexpr Layout kSevenInputs = {7, 0, 1, 2, 3, -1, 4, 5, -1, 6};

Status countError(const MoEParams& params, const std::string& expected, int32_t nbInputs, int32_t nbOutputs) {
    return Status::error(std::string(kName) + ": weight_format '" + weightFormatName(params.weightFormat) +
                         "' takes " + expected + " and 1 output, got " + std::to_string(nbInputs) + " inputs and " +
                         std::to_string(nbOutputs) + " outputs");
}

}  // namespace

Status layoutFor(const MoEParams& params, int32_t nbInputs, int32_t nbOutputs, Layout& layout) {
    const bool mxfp4 = params.weightFormat == WeightFormat::kMxfp4;
    const bool countOk = nbInputs == 9 || (!mxfp4 && nbInputs == 7);
    if (!countOk || nbOutputs != kNbOutputs) {
        return countError(params, mxfp4 ? "9 inputs" : "7 inputs (no scales) or 9", nbInputs, nbOutputs);
    }
    layout = nbInputs == 9 ? kNineInputs : kSevenInputs;
    return Status::ok();
}

std::vector<TypeRule> typeRules(const MoEParams& params, const Layout& layout) {
    const bool mxfp4 = params.weightFormat == WeightFormat::kMxfp4;
    const unsigned weights = mxfp4 ? kBytes : kFloating;
    std::vector<TypeRule> rules(layout.nbInputs + kNbOutputs);
    rules[layout.hidden] = {"hidden", kFloating, -1};
    rules[layout.expertIds] = {"expert_ids", kInt32Only, -1};
    rules[layout.expertWeights] = {"expert_weights", kFloating, layout.hidden};
    rules[layout.gateUpWeight] = {"gate_up_weight", weights, -1};
    rules[layout.gateUpBias] = {"gate_up_bias", kFloat32Only, -1};
    rules[layout.downWeight] = {"down_weight", weights, layout.gateUpWeight};
    rules[layout.downBias] = {"down_bias", kFloat32Only, -1};
    if (layout.gateUpScales >= 0) {
        // Float weights have no scales: whatever fills those positions is not read.
        rules[layout.gateUpScales] = {"gate_up_scales", mxfp4 ? kBytes : kAnyType, -1};
        rules[layout.downScales] = {"down_scales", mxfp4 ? kBytes : kAnyType, -1};
    }
    rules[layout.nbInputs] = {"out", kFloating, layout.hidden};
    return rules;
}

Status checkShapes(const MoEParams& params, const Layout& layout, const std::vector<Shape>& inputs) {
    const int64_t experts = params.numExperts;
    const int64_t hidden = params.hiddenSize;
    const int64_t inter = params.intermediateSize;
    const DimRule tokens = DimRule::symbol("T");
    const DimRule e = DimRule::fixed(experts, "E");
    const DimRule h = DimRule::fixed(hidden, "H");
    const DimRule twoI = DimRule::fixed(2 * inter, "2I");
    ShapeMatcher matcher(kName);
    std::vector<Status> checks = {
        matcher.match("hidden", inputs.at(layout.hidden), {tokens, h}),
        matcher.match("expert_ids", inputs.at(layout.expertIds), {tokens, DimRule::fixed(params.topK, "K")}),
        matcher.match("expert_weights", inputs.at(layout.expertWeights), {tokens, DimRule::fixed(params.topK, "K")}),
        matcher.match("gate_up_bias", inputs.at(layout.gateUpBias), {e, twoI}),
        matcher.match("down_bias", inputs.at(layout.downBias), {e, h}),
    };
    if (params.weightFormat == WeightFormat::kMxfp4) {
        const DimRule hBlocks = DimRule::fixed(hidden / kMxfp4Block, "H/32");
        const DimRule iBlocks = DimRule::fixed(inter / kMxfp4Block, "I/32");
        const DimRule bytes = DimRule::fixed(kMxfp4Block / 2);
        checks.push_back(matcher.match("gate_up_weight", inputs.at(layout.gateUpWeight), {e, twoI, hBlocks, bytes}));
        checks.push_back(matcher.match("gate_up_scales", inputs.at(layout.gateUpScales), {e, twoI, hBlocks}));
        checks.push_back(matcher.match("down_weight", inputs.at(layout.downWeight), {e, h, iBlocks, bytes}));
        checks.push_back(matcher.match("down_scales", inputs.at(layout.downScales), {e, h, iBlocks}));
    } else {
        checks.push_back(matcher.match("gate_up_weight", inputs.at(layout.gateUpWeight), {e, twoI, h}));
        checks.push_back(
            matcher.match("down_weight", inputs.at(layout.downWeight), {e, h, DimRule::fixed(inter, "I")}));
    }
    for (const Status& status : checks) {
        if (!status) {
            return status;
        }
    }
    return Status::ok();
}

gptoss_moe_desc kernelDesc(const MoEParams& params, int64_t numTokens, TensorType type, TensorType weightType) {
    gptoss_moe_desc desc{};
    desc.num_tokens = static_cast<int32_t>(numTokens);
    desc.hidden_size = params.hiddenSize;
    desc.intermediate_size = params.intermediateSize;
    desc.num_experts = params.numExperts;
    desc.top_k = params.topK;
    desc.swiglu_alpha = params.swigluAlpha;
    desc.swiglu_limit = params.swigluLimit;
    desc.dtype = kernelDtype(type);
    desc.weight_format = params.weightFormat == WeightFormat::kMxfp4 ? GPTOSS_WEIGHTS_MXFP4 : GPTOSS_WEIGHTS_FLOAT;
    desc.weight_dtype = kernelDtype(weightType);
    return desc;
}

}  // namespace moe
}  // namespace gptoss
