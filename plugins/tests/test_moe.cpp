// MoE: field parsing and validation, serialization round trip, input layouts, type and shape rules, descriptor.
#include <limits>

#include "check.h"
#include "field_edits.h"
#include "moe/moe.h"

using gptoss::FieldSet;
using gptoss::FieldType;
using gptoss::MoEParams;
using gptoss::Shape;
using gptoss::TensorType;
using gptoss::WeightFormat;
using namespace gptoss::moe;
using namespace gptoss_test;

namespace {

// gpt-oss-20b experts: 32 experts, top 4, hidden 2880, intermediate 2880.
MoEParams mxfp4Experts() {
    MoEParams params;
    params.numExperts = 32;
    params.topK = 4;
    params.hiddenSize = 2880;
    params.intermediateSize = 2880;
    params.weightFormat = WeightFormat::kMxfp4;
    params.swigluAlpha = 1.702F;
    params.swigluLimit = 7.0F;
    return params;
}

MoEParams floatExperts() {
    MoEParams params = mxfp4Experts();
    params.weightFormat = WeightFormat::kFloat;
    return params;
}

bool sameParams(const MoEParams& a, const MoEParams& b) {
    return a.numExperts == b.numExperts && a.topK == b.topK && a.hiddenSize == b.hiddenSize &&
           a.intermediateSize == b.intermediateSize && a.weightFormat == b.weightFormat &&
           a.swigluAlpha == b.swigluAlpha && a.swigluLimit == b.swigluLimit;
}

gptoss::Status parseWith(const MoEParams& base, const gptoss::FieldView& field) {
    const FieldSet good = toFields(base);
    MoEParams params;
    return parse(replaced(good.views(), field), params);
}

Layout layout(const MoEParams& params, int32_t nbInputs) {
    Layout result{};
    CHECK_OK(layoutFor(params, nbInputs, 1, result));
    return result;
}

// Nine inputs of 5 tokens, MXFP4 weights.
std::vector<Shape> mxfp4Shapes() {
    return {{5, 2880},  {5, 4},  {5, 4},        {32, 5760, 90, 16}, {32, 5760, 90},
            {32, 5760}, {32, 2880, 90, 16}, {32, 2880, 90}, {32, 2880}};
}

// Seven inputs of 5 tokens, float weights.
std::vector<Shape> floatShapes() {
    return {{5, 2880}, {5, 4}, {5, 4}, {32, 5760, 2880}, {32, 5760}, {32, 2880, 2880}, {32, 2880}};
}

}  // namespace

TEST(moe_parses_and_round_trips_fields) {
    for (const MoEParams& original : {mxfp4Experts(), floatExperts()}) {
        const FieldSet fields = toFields(original);
        MoEParams parsed;
        CHECK_OK(parse(fields.views(), parsed));
        CHECK(sameParams(parsed, original));
        const std::vector<gptoss::FieldView> views = fields.views();
        CHECK_EQ(views.size(), fieldSpecs().size());
        for (size_t i = 0; i < views.size() && i < fieldSpecs().size(); ++i) {
            CHECK(std::string(views[i].name) == fieldSpecs()[i].name && views[i].type == fieldSpecs()[i].type);
        }
    }
}

TEST(moe_reads_weight_format_strings) {
    const char mxfp4[] = "mxfp4";  // with the NUL the ONNX parser appends
    const char floatText[] = {'f', 'l', 'o', 'a', 't'};
    MoEParams params;
    const FieldSet good = toFields(floatExperts());
    CHECK_OK(parse(replaced(good.views(), {"weight_format", FieldType::kChar, 6, mxfp4}), params));
    CHECK(params.weightFormat == WeightFormat::kMxfp4);
    CHECK_OK(parse(replaced(good.views(), {"weight_format", FieldType::kChar, 5, floatText}), params));
    CHECK(params.weightFormat == WeightFormat::kFloat);
}

TEST(moe_rejects_bad_values) {
    const char fp8[] = "fp8";
    const int32_t tooMany = 33;
    const int32_t zero = 0;
    const int32_t odd = 100;
    const float inf = std::numeric_limits<float>::infinity();
    const float negative = -1.0F;
    CHECK_ERROR(parseWith(mxfp4Experts(), {"weight_format", FieldType::kChar, 4, fp8}),
                "MoE: field 'weight_format' must be 'mxfp4' or 'float', got 'fp8'");
    CHECK_ERROR(parseWith(mxfp4Experts(), {"top_k", FieldType::kInt32, 1, &tooMany}),
                "MoE: field 'top_k' must be at most num_experts (32), got 33");
    CHECK_ERROR(parseWith(mxfp4Experts(), {"top_k", FieldType::kInt32, 1, &zero}),
                "MoE: field 'top_k' must be positive, got 0");
    CHECK_ERROR(parseWith(mxfp4Experts(), {"num_experts", FieldType::kInt32, 1, &zero}),
                "MoE: field 'num_experts' must be positive, got 0");
    CHECK_ERROR(parseWith(mxfp4Experts(), {"hidden_size", FieldType::kInt32, 1, &odd}),
                "MoE: field 'hidden_size' must be a multiple of 32 for weight_format 'mxfp4', got 100");
    CHECK_ERROR(parseWith(mxfp4Experts(), {"intermediate_size", FieldType::kInt32, 1, &odd}),
                "MoE: field 'intermediate_size' must be a multiple of 32 for weight_format 'mxfp4', got 100");
    CHECK_OK(parseWith(floatExperts(), {"hidden_size", FieldType::kInt32, 1, &odd}));
    CHECK_ERROR(parseWith(mxfp4Experts(), {"swiglu_alpha", FieldType::kFloat32, 1, &inf}),
                "MoE: field 'swiglu_alpha' must be finite, got inf");
    CHECK_ERROR(parseWith(mxfp4Experts(), {"swiglu_limit", FieldType::kFloat32, 1, &negative}),
                "MoE: field 'swiglu_limit' must be finite and positive, got -1");
}

TEST(moe_rejects_bad_fields) {
    const FieldSet good = toFields(mxfp4Experts());
    const int32_t four = 4;
    const double alpha = 1.702;
    MoEParams params;
    CHECK_ERROR(parseWith(mxfp4Experts(), {"weight_format", FieldType::kInt32, 1, &four}),
                "MoE: field 'weight_format' must be string, got int32");
    CHECK_ERROR(parseWith(mxfp4Experts(), {"swiglu_alpha", FieldType::kFloat64, 1, &alpha}),
                "MoE: field 'swiglu_alpha' must be float32, got float64");
    CHECK_ERROR(parse(without(good.views(), "weight_format"), params), "MoE: missing field 'weight_format' (string)");
    CHECK_ERROR(parse(with(good.views(), {"experts_per_token", FieldType::kInt32, 1, &four}), params),
                "MoE: field 'experts_per_token' is unknown (expected num_experts, top_k, hidden_size, "
                "intermediate_size, weight_format, swiglu_alpha, swiglu_limit)");
}

TEST(moe_input_layouts) {
    Layout result{};
    const Layout nine = layout(mxfp4Experts(), 9);
    CHECK(nine.gateUpScales == 4 && nine.gateUpBias == 5 && nine.downWeight == 6 && nine.downScales == 7 &&
          nine.downBias == 8);
    const Layout seven = layout(floatExperts(), 7);
    CHECK(seven.gateUpScales == -1 && seven.gateUpBias == 4 && seven.downWeight == 5 && seven.downScales == -1 &&
          seven.downBias == 6);
    CHECK_OK(layoutFor(floatExperts(), 9, 1, result));
    CHECK_ERROR(layoutFor(mxfp4Experts(), 7, 1, result),
                "MoE: weight_format 'mxfp4' takes 9 inputs and 1 output, got 7 inputs and 1 outputs");
    CHECK_ERROR(layoutFor(floatExperts(), 8, 1, result),
                "MoE: weight_format 'float' takes 7 inputs (no scales) or 9 and 1 output, got 8 inputs");
    CHECK_ERROR(layoutFor(floatExperts(), 7, 2, result), "got 7 inputs and 2 outputs");
}

TEST(moe_mxfp4_type_rules) {
    const TensorType bf16 = TensorType::kBFloat16;
    const TensorType f32 = TensorType::kFloat32;
    const TensorType u8 = TensorType::kUInt8;
    const TensorType i32 = TensorType::kInt32;
    const std::vector<gptoss::TypeRule> rules = typeRules(mxfp4Experts(), layout(mxfp4Experts(), 9));
    const std::vector<TensorType> good = {bf16, i32, bf16, u8, u8, f32, u8, u8, f32, bf16};
    for (int32_t pos = 0; pos < 10; ++pos) {
        CHECK(supportsType(rules, pos, good.data()));
    }
    std::vector<TensorType> types = good;
    types[3] = bf16;
    CHECK(!supportsType(rules, 3, types.data()));
    types = good;
    types[2] = f32;
    CHECK(!supportsType(rules, 2, types.data()));
    types = good;
    types[5] = bf16;
    CHECK(!supportsType(rules, 5, types.data()));
    types = good;
    types[1] = TensorType::kOther;
    CHECK(!supportsType(rules, 1, types.data()));
    CHECK(outputType(rules, 9, 0, good) == bf16);
    CHECK_ERROR(checkInputTypes(kName, rules, {bf16, i32, bf16, i32, u8, f32, u8, u8, f32}),
                "MoE: input 'gate_up_weight' must be uint8/int8, got int32");
    const TensorType i8 = TensorType::kInt8;  // what TensorRT's ONNX parser passes for int8 initializers
    CHECK_OK(checkInputTypes(kName, rules, {bf16, i32, bf16, i8, i8, f32, i8, i8, f32}));
    CHECK_ERROR(checkInputTypes(kName, rules, {bf16, i32, bf16, u8, u8, f32, u8, u8, bf16}),
                "MoE: input 'down_bias' must be float32, got bfloat16");
}

TEST(moe_float_type_rules) {
    const TensorType half = TensorType::kFloat16;
    const TensorType f32 = TensorType::kFloat32;
    const TensorType i32 = TensorType::kInt32;
    const std::vector<gptoss::TypeRule> seven = typeRules(floatExperts(), layout(floatExperts(), 7));
    CHECK_OK(checkInputTypes(kName, seven, {half, i32, half, f32, f32, f32, f32}));  // weights need not match hidden
    CHECK_ERROR(checkInputTypes(kName, seven, {half, i32, half, f32, f32, half, f32}),
                "MoE: input 'down_weight' must be the type of 'gate_up_weight' (float32), got float16");
    CHECK_ERROR(checkInputTypes(kName, seven, {half, i32, half, TensorType::kUInt8, f32, f32, f32}),
                "MoE: input 'gate_up_weight' must be float32/float16/bfloat16, got uint8");
    CHECK(outputType(seven, 7, 0, {half, i32, half, f32, f32, f32, f32}) == half);
    const std::vector<gptoss::TypeRule> nine = typeRules(floatExperts(), layout(floatExperts(), 9));
    CHECK_OK(checkInputTypes(kName, nine, {half, i32, half, half, TensorType::kOther, f32, half, f32, f32}));
}

TEST(moe_mxfp4_shapes) {
    const Layout nine = layout(mxfp4Experts(), 9);
    CHECK_OK(checkShapes(mxfp4Experts(), nine, mxfp4Shapes()));
    std::vector<Shape> shapes = mxfp4Shapes();
    shapes[0] = {-1, 2880};
    shapes[1] = {-1, 4};
    shapes[2] = {-1, 4};
    CHECK_OK(checkShapes(mxfp4Experts(), nine, shapes));
    shapes = mxfp4Shapes();
    shapes[1] = {5, 3};
    CHECK_ERROR(checkShapes(mxfp4Experts(), nine, shapes),
                "MoE: input 'expert_ids' must have shape [T=5,K=4], got [5,3]");
    shapes = mxfp4Shapes();
    shapes[2] = {6, 4};
    CHECK_ERROR(checkShapes(mxfp4Experts(), nine, shapes), "input 'expert_weights' must have shape [T=5,K=4]");
    shapes = mxfp4Shapes();
    shapes[3] = {32, 5760, 2880};
    CHECK_ERROR(checkShapes(mxfp4Experts(), nine, shapes),
                "MoE: input 'gate_up_weight' must have shape [E=32,2I=5760,H/32=90,16], got [32,5760,2880]");
    shapes = mxfp4Shapes();
    shapes[7] = {32, 2880, 45};
    CHECK_ERROR(checkShapes(mxfp4Experts(), nine, shapes), "input 'down_scales' must have shape [E=32,H=2880,I/32=90]");
    shapes = mxfp4Shapes();
    shapes[5] = {32, 2880};
    CHECK_ERROR(checkShapes(mxfp4Experts(), nine, shapes), "input 'gate_up_bias' must have shape [E=32,2I=5760]");
}

TEST(moe_float_shapes) {
    const Layout seven = layout(floatExperts(), 7);
    CHECK_OK(checkShapes(floatExperts(), seven, floatShapes()));
    std::vector<Shape> shapes = floatShapes();
    shapes[5] = {32, 2880, 90, 16};
    CHECK_ERROR(checkShapes(floatExperts(), seven, shapes),
                "MoE: input 'down_weight' must have shape [E=32,H=2880,I=2880], got [32,2880,90,16]");
    std::vector<Shape> nine = floatShapes();
    nine.insert(nine.begin() + 4, Shape{0});
    nine.insert(nine.begin() + 7, Shape{0});
    CHECK_OK(checkShapes(floatExperts(), layout(floatExperts(), 9), nine));
}

TEST(moe_kernel_desc) {
    const gptoss_moe_desc mx = kernelDesc(mxfp4Experts(), 17, TensorType::kFloat16, TensorType::kUInt8);
    CHECK_EQ(mx.num_tokens, 17);
    CHECK_EQ(mx.hidden_size, 2880);
    CHECK_EQ(mx.intermediate_size, 2880);
    CHECK_EQ(mx.num_experts, 32);
    CHECK_EQ(mx.top_k, 4);
    CHECK(mx.swiglu_alpha == 1.702F && mx.swiglu_limit == 7.0F);
    CHECK(mx.dtype == GPTOSS_FLOAT16 && mx.weight_format == GPTOSS_WEIGHTS_MXFP4 && mx.weight_dtype == GPTOSS_UINT8);
    CHECK(kernelDesc(mxfp4Experts(), 1, TensorType::kFloat16, TensorType::kInt8).weight_dtype == GPTOSS_UINT8);
    const gptoss_moe_desc fl = kernelDesc(floatExperts(), 1, TensorType::kFloat32, TensorType::kBFloat16);
    CHECK(fl.dtype == GPTOSS_FLOAT32 && fl.weight_format == GPTOSS_WEIGHTS_FLOAT && fl.weight_dtype == GPTOSS_BFLOAT16);
}
