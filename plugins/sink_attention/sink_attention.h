// gptoss::SinkAttention without TensorRT: fields, input/output rules, kernel descriptor.
// Inputs q, k, v, sinks, kv_cache, past_len, new_len; outputs out, kv_cache_out (docs/ops.md "SinkAttention",
// sink_attention/README.md).
#ifndef GPTOSS_SINK_ATTENTION_H
#define GPTOSS_SINK_ATTENTION_H

#include <cstdint>
#include <vector>

#include "common/plugin_fields.h"
#include "common/status.h"
#include "common/tensor_rules.h"
#include "gptoss_kernels.h"

namespace gptoss {

struct SinkAttentionParams {
    int32_t numHeads = 0;
    int32_t numKvHeads = 0;
    int32_t headDim = 0;
    int32_t slidingWindow = 0;  // 0 = full attention; else the cache holds `slidingWindow` slots as a ring
    float scale = 0.0F;
};

namespace sink_attention {

constexpr const char* kName = "SinkAttention";
constexpr int32_t kNbInputs = 7;
constexpr int32_t kNbOutputs = 2;

enum Input : int32_t { kQ, kK, kV, kSinks, kKvCache, kPastLen, kNewLen };
enum Output : int32_t { kOut, kKvCacheOut };

// The creator's fields, mirroring the ONNX attributes: num_heads, num_kv_heads, head_dim, sliding_window (int32),
// scale (float32).
const std::vector<FieldSpec>& fieldSpecs();

Status parse(const std::vector<FieldView>& fields, SinkAttentionParams& params);
FieldSet toFields(const SinkAttentionParams& params);

Status checkInputCount(int32_t nbInputs, int32_t nbOutputs);

// Type rules of positions 0..8 (inputs then outputs): q/k/v/kv_cache/out/kv_cache_out one float type,
// sinks float32, past_len/new_len int32.
const std::vector<TypeRule>& typeRules();

// Shapes: q [B,S,Hq*D], k/v [B,S,Hkv*D], sinks [Hq], kv_cache [B,2,Hkv,C,D] (C = W on sliding layers),
// past_len/new_len [B].
Status checkShapes(const SinkAttentionParams& params, const std::vector<Shape>& inputs);

// Output `index` has the shape of this input: out like q, kv_cache_out like kv_cache.
int32_t outputShapeSource(int32_t index);

gptoss_attention_desc kernelDesc(const SinkAttentionParams& params, const Shape& q, const Shape& kvCache,
                                 TensorType type);

}  // namespace sink_attention
}  // namespace gptoss

#endif  // GPTOSS_SINK_ATTENTION_H
