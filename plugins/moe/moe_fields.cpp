// MoE fields: parse with validation, and serialize back.
#include "common/field_checks.h"
#include "moe.h"

namespace gptoss {
namespace moe {
namespace {

Status readWeightFormat(const std::string& text, WeightFormat& format) {
    if (text == "mxfp4" || text == "float") {
        format = text == "mxfp4" ? WeightFormat::kMxfp4 : WeightFormat::kFloat;
        return Status::ok();
    }
    return fieldError(kName, "weight_format", "be 'mxfp4' or 'float'", "'" + text + "'");
}

Status checkBlockMultiple(const char* field, int32_t value) {
    if (value % kMxfp4Block == 0) {
        return Status::ok();
    }
    return fieldError(kName, field, "be a multiple of " + std::to_string(kMxfp4Block) + " for weight_format 'mxfp4'",
                      std::to_string(value));
}

}  // namespace

const std::vector<FieldSpec>& fieldSpecs() {
    static const std::vector<FieldSpec> specs = {
        {"num_experts", FieldType::kInt32},    {"top_k", FieldType::kInt32},
        {"hidden_size", FieldType::kInt32},    {"intermediate_size", FieldType::kInt32},
        {"weight_format", FieldType::kChar},   {"swiglu_alpha", FieldType::kFloat32},
        {"swiglu_limit", FieldType::kFloat32},
    };
    return specs;
}

const char* weightFormatName(WeightFormat format) {
    return format == WeightFormat::kMxfp4 ? "mxfp4" : "float";
}

Status parse(const std::vector<FieldView>& fields, MoEParams& params) {
    FieldValues values;
    Status status = readFields(kName, fieldSpecs(), fields, values);
    if (!status) {
        return status;
    }
    MoEParams read;
    read.numExperts = values.ints.at("num_experts");
    read.topK = values.ints.at("top_k");
    read.hiddenSize = values.ints.at("hidden_size");
    read.intermediateSize = values.ints.at("intermediate_size");
    read.swigluAlpha = values.floats.at("swiglu_alpha");
    read.swigluLimit = values.floats.at("swiglu_limit");
    for (Status check : {checkPositive(kName, "num_experts", read.numExperts), checkPositive(kName, "top_k", read.topK),
                         checkPositive(kName, "hidden_size", read.hiddenSize),
                         checkPositive(kName, "intermediate_size", read.intermediateSize),
                         readWeightFormat(values.strings.at("weight_format"), read.weightFormat),
                         checkFinite(kName, "swiglu_alpha", read.swigluAlpha),
                         checkPositive(kName, "swiglu_limit", read.swigluLimit)}) {
        if (!check) {
            return check;
        }
    }
    if (read.topK > read.numExperts) {
        return fieldError(kName, "top_k", "be at most num_experts (" + std::to_string(read.numExperts) + ")",
                          std::to_string(read.topK));
    }
    if (read.weightFormat == WeightFormat::kMxfp4) {
        for (Status check : {checkBlockMultiple("hidden_size", read.hiddenSize),
                             checkBlockMultiple("intermediate_size", read.intermediateSize)}) {
            if (!check) {
                return check;
            }
        }
    }
    params = read;
    return Status::ok();
}

FieldSet toFields(const MoEParams& params) {
    FieldSet fields;
    fields.addInt32("num_experts", params.numExperts);
    fields.addInt32("top_k", params.topK);
    fields.addInt32("hidden_size", params.hiddenSize);
    fields.addInt32("intermediate_size", params.intermediateSize);
    fields.addString("weight_format", weightFormatName(params.weightFormat));
    fields.addFloat32("swiglu_alpha", params.swigluAlpha);
    fields.addFloat32("swiglu_limit", params.swigluLimit);
    return fields;
}

}  // namespace moe
}  // namespace gptoss
