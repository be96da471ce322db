// SinkAttention inputs and outputs: count, types, shapes, and the kernel descriptor built from them.
#include "sink_attention.h"

#include <string>

namespace gptoss {
namespace sink_attention {

Status checkInputCount(int32_t nbInputs, int32_t nbOutputs) {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
        return Status::error(std::string(kName) + ": expected " + std::to_string(kNbInputs) +
                             " inputs (q, k, v, sinks, kv_cache, past_len, new_len) and " +
                             std::to_string(kNbOutputs) + " outputs (out, kv_cache_out), got " +
                             std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
    }
    return Status::ok();
}

const std::vector<TypeRule>& typeRules() {
    static const std::vector<TypeRule> rules = {
        {"q", kFloating, -1},          {"k", kFloating, kQ},           {"v", kFloating, kQ},
        {"sinks", kFloat32Only, -1},   {"kv_cache", kFloating, kQ},    {"past_len", kInt32Only, -1},
        {"new_len", kInt32Only, -1},   {"out", kFloating, kQ},         {"kv_cache_out", kFloating, kKvCache},
    };
    return rules;
}

Status checkShapes(const SinkAttentionParams& params, const std::vector<Shape>& inputs) {
    const int64_t heads = params.numHeads;
    const int64_t kvHeads = params.numKvHeads;
    const int64_t dim = params.headDim;
    const DimRule capacity = params.slidingWindow > 0 ? DimRule::fixed(params.slidingWindow, "C=W")
                                                      : DimRule::symbol("C");
    const DimRule batch = DimRule::symbol("B");
    const DimRule seq = DimRule::symbol("S");
    ShapeMatcher matcher(kName);
    for (Status status : {
             matcher.match("q", inputs.at(kQ), {batch, seq, DimRule::fixed(heads * dim, "Hq*D")}),
             matcher.match("k", inputs.at(kK), {batch, seq, DimRule::fixed(kvHeads * dim, "Hkv*D")}),
             matcher.match("v", inputs.at(kV), {batch, seq, DimRule::fixed(kvHeads * dim, "Hkv*D")}),
             matcher.match("sinks", inputs.at(kSinks), {DimRule::fixed(heads, "Hq")}),
             matcher.match("kv_cache", inputs.at(kKvCache),
                           {batch, DimRule::fixed(2), DimRule::fixed(kvHeads, "Hkv"), capacity,
                            DimRule::fixed(dim, "D")}),
             matcher.match("past_len", inputs.at(kPastLen), {batch}),
             matcher.match("new_len", inputs.at(kNewLen), {batch}),
         }) {
        if (!status) {
            return status;
        }
    }
    return Status::ok();
}

int32_t outputShapeSource(int32_t index) {
    return index == kKvCacheOut ? kKvCache : kQ;
}

gptoss_attention_desc kernelDesc(const SinkAttentionParams& params, const Shape& q, const Shape& kvCache,
                                 TensorType type) {
    gptoss_attention_desc desc{};
    desc.batch = static_cast<int32_t>(q.at(0));
    desc.seq_len = static_cast<int32_t>(q.at(1));
    desc.num_heads = params.numHeads;
    desc.num_kv_heads = params.numKvHeads;
    desc.head_dim = params.headDim;
    desc.capacity = static_cast<int32_t>(kvCache.at(3));
    desc.sliding_window = params.slidingWindow;
    desc.scale = params.scale;
    desc.dtype = kernelDtype(type);
    return desc;
}

}  // namespace sink_attention
}  // namespace gptoss
