// SinkAttention fields: parse with validation, and serialize back.
#include "common/field_checks.h"
#include "sink_attention.h"

namespace gptoss {
namespace sink_attention {

const std::vector<FieldSpec>& fieldSpecs() {
    static const std::vector<FieldSpec> specs = {
        {"num_heads", FieldType::kInt32},      {"num_kv_heads", FieldType::kInt32}, {"head_dim", FieldType::kInt32},
        {"sliding_window", FieldType::kInt32}, {"scale", FieldType::kFloat32},
    };
    return specs;
}

Status parse(const std::vector<FieldView>& fields, SinkAttentionParams& params) {
    FieldValues values;
    Status status = readFields(kName, fieldSpecs(), fields, values);
    if (!status) {
        return status;
    }
    SinkAttentionParams read;
    read.numHeads = values.ints.at("num_heads");
    read.numKvHeads = values.ints.at("num_kv_heads");
    read.headDim = values.ints.at("head_dim");
    read.slidingWindow = values.ints.at("sliding_window");
    read.scale = values.floats.at("scale");
    for (Status check : {checkPositive(kName, "num_heads", read.numHeads),
                         checkPositive(kName, "num_kv_heads", read.numKvHeads),
                         checkPositive(kName, "head_dim", read.headDim), checkPositive(kName, "scale", read.scale)}) {
        if (!check) {
            return check;
        }
    }
    if (read.numHeads % read.numKvHeads != 0) {
        return fieldError(kName, "num_kv_heads", "divide num_heads (" + std::to_string(read.numHeads) + ")",
                          std::to_string(read.numKvHeads));
    }
    if (read.slidingWindow < 0) {
        return fieldError(kName, "sliding_window", "be >= 0 (0 = full attention)",
                          std::to_string(read.slidingWindow));
    }
    params = read;
    return Status::ok();
}

FieldSet toFields(const SinkAttentionParams& params) {
    FieldSet fields;
    fields.addInt32("num_heads", params.numHeads);
    fields.addInt32("num_kv_heads", params.numKvHeads);
    fields.addInt32("head_dim", params.headDim);
    fields.addInt32("sliding_window", params.slidingWindow);
    fields.addFloat32("scale", params.scale);
    return fields;
}

}  // namespace sink_attention
}  // namespace gptoss
