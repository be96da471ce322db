// SinkAttention: field parsing and validation, serialization round trip, input/output rules, kernel descriptor.
#include <limits>

#include "check.h"
#include "field_edits.h"
#include "sink_attention/sink_attention.h"

using gptoss::FieldSet;
using gptoss::FieldType;
using gptoss::Shape;
using gptoss::SinkAttentionParams;
using gptoss::TensorType;
using namespace gptoss::sink_attention;
using namespace gptoss_test;

namespace {

// A gpt-oss-20b sliding layer: 64 query heads, 8 KV heads of 64, window 128.
SinkAttentionParams slidingLayer() {
    SinkAttentionParams params;
    params.numHeads = 64;
    params.numKvHeads = 8;
    params.headDim = 64;
    params.slidingWindow = 128;
    params.scale = 0.125F;
    return params;
}

SinkAttentionParams fullLayer() {
    SinkAttentionParams params = slidingLayer();
    params.slidingWindow = 0;
    return params;
}

bool sameParams(const SinkAttentionParams& a, const SinkAttentionParams& b) {
    return a.numHeads == b.numHeads && a.numKvHeads == b.numKvHeads && a.headDim == b.headDim &&
           a.slidingWindow == b.slidingWindow && a.scale == b.scale;
}

gptoss::Status parseWith(const gptoss::FieldView& field) {
    const FieldSet good = toFields(slidingLayer());
    SinkAttentionParams params;
    return parse(replaced(good.views(), field), params);
}

// q, k, v, sinks, kv_cache, past_len, new_len for batch 2, 5 new tokens, cache capacity `capacity`.
std::vector<Shape> inputShapes(int64_t capacity) {
    return {{2, 5, 4096}, {2, 5, 512}, {2, 5, 512}, {64}, {2, 2, 8, capacity, 64}, {2}, {2}};
}

}  // namespace

TEST(sink_attention_parses_good_fields) {
    const FieldSet fields = toFields(slidingLayer());
    SinkAttentionParams params;
    CHECK_OK(parse(fields.views(), params));
    CHECK(sameParams(params, slidingLayer()));
}

TEST(sink_attention_round_trips_fields) {
    for (const SinkAttentionParams& original : {slidingLayer(), fullLayer()}) {
        const FieldSet fields = toFields(original);
        SinkAttentionParams parsed;
        CHECK_OK(parse(fields.views(), parsed));
        CHECK(sameParams(parsed, original));
        const FieldSet again = toFields(parsed);
        CHECK_EQ(again.views().size(), fieldSpecs().size());
    }
}

TEST(sink_attention_serializes_exactly_the_creator_fields) {
    const FieldSet fields = toFields(slidingLayer());
    const std::vector<gptoss::FieldView> views = fields.views();
    CHECK_EQ(views.size(), fieldSpecs().size());
    for (size_t i = 0; i < views.size() && i < fieldSpecs().size(); ++i) {
        CHECK(std::string(views[i].name) == fieldSpecs()[i].name);
        CHECK(views[i].type == fieldSpecs()[i].type);
    }
}

TEST(sink_attention_rejects_bad_values) {
    const int32_t seven = 7;
    const int32_t zero = 0;
    const int32_t minusOne = -1;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float zeroScale = 0.0F;
    CHECK_ERROR(parseWith({"num_kv_heads", FieldType::kInt32, 1, &seven}),
                "SinkAttention: field 'num_kv_heads' must divide num_heads (64), got 7");
    CHECK_ERROR(parseWith({"num_heads", FieldType::kInt32, 1, &zero}),
                "SinkAttention: field 'num_heads' must be positive, got 0");
    CHECK_ERROR(parseWith({"num_kv_heads", FieldType::kInt32, 1, &zero}),
                "SinkAttention: field 'num_kv_heads' must be positive, got 0");
    CHECK_ERROR(parseWith({"head_dim", FieldType::kInt32, 1, &minusOne}),
                "SinkAttention: field 'head_dim' must be positive, got -1");
    CHECK_ERROR(parseWith({"sliding_window", FieldType::kInt32, 1, &minusOne}),
                "SinkAttention: field 'sliding_window' must be >= 0 (0 = full attention), got -1");
    CHECK_ERROR(parseWith({"scale", FieldType::kFloat32, 1, &nan}),
                "SinkAttention: field 'scale' must be finite and positive, got nan");
    CHECK_ERROR(parseWith({"scale", FieldType::kFloat32, 1, &zeroScale}),
                "SinkAttention: field 'scale' must be finite and positive, got 0");
}

TEST(sink_attention_rejects_bad_fields) {
    const FieldSet good = toFields(slidingLayer());
    const float window = 128.0F;
    const int32_t version = 1;
    SinkAttentionParams params = fullLayer();
    CHECK_ERROR(parseWith({"sliding_window", FieldType::kFloat32, 1, &window}),
                "SinkAttention: field 'sliding_window' must be int32, got float32");
    CHECK_ERROR(parse(without(good.views(), "head_dim"), params), "SinkAttention: missing field 'head_dim' (int32)");
    CHECK_ERROR(parse(with(good.views(), {"rope_theta", FieldType::kInt32, 1, &version}), params),
                "SinkAttention: field 'rope_theta' is unknown");
    CHECK(sameParams(params, fullLayer()));  // untouched by failed parses
}

TEST(sink_attention_counts_inputs) {
    CHECK_OK(checkInputCount(7, 2));
    CHECK_ERROR(checkInputCount(6, 2), "SinkAttention: expected 7 inputs (q, k, v, sinks, kv_cache, past_len, "
                                       "new_len) and 2 outputs (out, kv_cache_out), got 6 and 2");
    CHECK_ERROR(checkInputCount(7, 1), "got 7 and 1");
}

TEST(sink_attention_accepts_good_shapes) {
    CHECK_OK(checkShapes(slidingLayer(), inputShapes(128)));
    CHECK_OK(checkShapes(fullLayer(), inputShapes(4096)));
    const Shape unknownBatch = {-1, -1, 4096};
    std::vector<Shape> dynamic = inputShapes(-1);
    dynamic[kQ] = unknownBatch;
    CHECK_OK(checkShapes(slidingLayer(), dynamic));
}

TEST(sink_attention_rejects_bad_shapes) {
    CHECK_ERROR(checkShapes(slidingLayer(), inputShapes(4096)),
                "SinkAttention: input 'kv_cache' must have shape [B=2,2,Hkv=8,C=W=128,D=64], got [2,2,8,4096,64]");
    std::vector<Shape> shapes = inputShapes(128);
    shapes[kK] = {2, 5, 1024};
    CHECK_ERROR(checkShapes(slidingLayer(), shapes),
                "SinkAttention: input 'k' must have shape [B=2,S=5,Hkv*D=512], got [2,5,1024]");
    shapes = inputShapes(128);
    shapes[kPastLen] = {3};
    CHECK_ERROR(checkShapes(slidingLayer(), shapes), "input 'past_len' must have shape [B=2], got [3]");
    shapes = inputShapes(128);
    shapes[kQ] = {2, 5, 64, 64};
    CHECK_ERROR(checkShapes(slidingLayer(), shapes), "input 'q' must have shape [B,S,Hq*D=4096], got [2,5,64,64]");
    shapes = inputShapes(128);
    shapes[kSinks] = {8};
    CHECK_ERROR(checkShapes(slidingLayer(), shapes), "input 'sinks' must have shape [Hq=64], got [8]");
}

TEST(sink_attention_output_shapes_follow_inputs) {
    CHECK_EQ(outputShapeSource(kOut), static_cast<int32_t>(kQ));
    CHECK_EQ(outputShapeSource(kKvCacheOut), static_cast<int32_t>(kKvCache));
}

TEST(sink_attention_type_rules) {
    const TensorType half = TensorType::kFloat16;
    const TensorType f32 = TensorType::kFloat32;
    const TensorType i32 = TensorType::kInt32;
    const std::vector<TensorType> good = {half, half, half, f32, half, i32, i32, half, half};
    for (int32_t pos = 0; pos < 9; ++pos) {
        CHECK(supportsType(typeRules(), pos, good.data()));
    }
    std::vector<TensorType> types = good;
    types[kK] = f32;
    CHECK(!supportsType(typeRules(), kK, types.data()));
    types = good;
    types[kSinks] = half;
    CHECK(!supportsType(typeRules(), kSinks, types.data()));
    types = good;
    types[kPastLen] = TensorType::kUInt8;
    CHECK(!supportsType(typeRules(), kPastLen, types.data()));
    types = good;
    types[kQ] = i32;
    CHECK(!supportsType(typeRules(), kQ, types.data()));
    types = good;
    types[7] = TensorType::kBFloat16;
    CHECK(!supportsType(typeRules(), 7, types.data()));
    const std::vector<TensorType> bf16 = {TensorType::kBFloat16, TensorType::kBFloat16, TensorType::kBFloat16, f32,
                                          TensorType::kBFloat16, i32, i32};
    CHECK_OK(checkInputTypes(kName, typeRules(), bf16));
    CHECK(outputType(typeRules(), kNbInputs, kOut, bf16) == TensorType::kBFloat16);
    CHECK(outputType(typeRules(), kNbInputs, kKvCacheOut, bf16) == TensorType::kBFloat16);
}

TEST(sink_attention_type_errors_name_the_input) {
    const TensorType half = TensorType::kFloat16;
    const TensorType f32 = TensorType::kFloat32;
    const TensorType i32 = TensorType::kInt32;
    CHECK_ERROR(checkInputTypes(kName, typeRules(), {half, half, half, half, half, i32, i32}),
                "SinkAttention: input 'sinks' must be float32, got float16");
    CHECK_ERROR(checkInputTypes(kName, typeRules(), {half, f32, half, f32, half, i32, i32}),
                "SinkAttention: input 'k' must be the type of 'q' (float16), got float32");
    CHECK_ERROR(checkInputTypes(kName, typeRules(), {i32, i32, i32, f32, i32, i32, i32}),
                "SinkAttention: input 'q' must be float32/float16/bfloat16, got int32");
    CHECK_ERROR(checkInputTypes(kName, typeRules(), {f32, f32, f32, f32, f32, i32, TensorType::kOther}),
                "SinkAttention: input 'new_len' must be int32, got an unsupported type");
}

TEST(sink_attention_kernel_desc) {
    const gptoss_attention_desc desc = kernelDesc(slidingLayer(), {3, 7, 4096}, {3, 2, 8, 128, 64},
                                                  TensorType::kBFloat16);
    CHECK_EQ(desc.batch, 3);
    CHECK_EQ(desc.seq_len, 7);
    CHECK_EQ(desc.num_heads, 64);
    CHECK_EQ(desc.num_kv_heads, 8);
    CHECK_EQ(desc.head_dim, 64);
    CHECK_EQ(desc.capacity, 128);
    CHECK_EQ(desc.sliding_window, 128);
    CHECK(desc.scale == 0.125F);
    CHECK(desc.dtype == GPTOSS_BFLOAT16);
}
