#include "tensor_rules.h"

namespace gptoss {
namespace {

bool allows(unsigned allowed, TensorType type) {
    return (allowed & (1U << static_cast<unsigned>(type))) != 0;
}

std::string allowedText(unsigned allowed) {
    std::string text;
    for (TensorType type : {TensorType::kFloat32, TensorType::kFloat16, TensorType::kBFloat16, TensorType::kInt32,
                            TensorType::kUInt8, TensorType::kInt8}) {
        if (allows(allowed, type)) {
            text += (text.empty() ? "" : "/") + std::string(tensorTypeName(type));
        }
    }
    return text;
}

std::string dimText(const DimRule& rule) {
    if (rule.value == kUnknownDim) {
        return rule.name;
    }
    return rule.name.empty() ? std::to_string(rule.value) : rule.name + "=" + std::to_string(rule.value);
}

}  // namespace

const char* tensorTypeName(TensorType type) {
    switch (type) {
        case TensorType::kFloat32: return "float32";
        case TensorType::kFloat16: return "float16";
        case TensorType::kBFloat16: return "bfloat16";
        case TensorType::kInt32: return "int32";
        case TensorType::kUInt8: return "uint8";
        case TensorType::kInt8: return "int8";
        case TensorType::kOther: break;
    }
    return "an unsupported type";
}

gptoss_dtype kernelDtype(TensorType type) {
    switch (type) {
        case TensorType::kFloat16: return GPTOSS_FLOAT16;
        case TensorType::kBFloat16: return GPTOSS_BFLOAT16;
        case TensorType::kUInt8:
        case TensorType::kInt8: return GPTOSS_UINT8;
        default: return GPTOSS_FLOAT32;
    }
}

bool supportsType(const std::vector<TypeRule>& rules, int32_t pos, const TensorType* types) {
    if (pos < 0 || pos >= static_cast<int32_t>(rules.size())) {
        return false;
    }
    const TypeRule& rule = rules[pos];
    return allows(rule.allowed, types[pos]) && (rule.sameAs < 0 || types[rule.sameAs] == types[pos]);
}

Status checkInputTypes(const char* plugin, const std::vector<TypeRule>& rules, const std::vector<TensorType>& inputs) {
    for (size_t pos = 0; pos < inputs.size() && pos < rules.size(); ++pos) {
        if (supportsType(rules, static_cast<int32_t>(pos), inputs.data())) {
            continue;
        }
        const TypeRule& rule = rules[pos];
        std::string expected = allowedText(rule.allowed);
        if (rule.sameAs >= 0 && allows(rule.allowed, inputs[pos])) {
            expected = std::string("the type of '") + rules[rule.sameAs].name + "' (" +
                       tensorTypeName(inputs[rule.sameAs]) + ")";
        }
        return Status::error(std::string(plugin) + ": input '" + rule.name + "' must be " + expected + ", got " +
                             tensorTypeName(inputs[pos]));
    }
    return Status::ok();
}

TensorType outputType(const std::vector<TypeRule>& rules, int32_t nbInputs, int32_t index,
                      const std::vector<TensorType>& inputs) {
    return inputs.at(rules.at(nbInputs + index).sameAs);
}

std::string shapeText(const Shape& shape) {
    std::string text = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        text += (i ? "," : "") + (shape[i] == kUnknownDim ? std::string("?") : std::to_string(shape[i]));
    }
    return text + "]";
}

std::string ShapeMatcher::patternText(const std::vector<DimRule>& pattern) const {
    std::string text = "[";
    for (size_t i = 0; i < pattern.size(); ++i) {
        DimRule shown = pattern[i];
        auto bound = bound_.find(shown.name);
        if (shown.value == kUnknownDim && bound != bound_.end()) {
            shown.value = bound->second;
        }
        text += (i ? "," : "") + dimText(shown);
    }
    return text + "]";
}

Status ShapeMatcher::match(const char* input, const Shape& shape, const std::vector<DimRule>& pattern) {
    bool ok = shape.size() == pattern.size();
    std::map<std::string, int64_t> bound = bound_;
    for (size_t i = 0; ok && i < shape.size(); ++i) {
        const DimRule& rule = pattern[i];
        if (shape[i] == kUnknownDim) {
            continue;
        }
        if (rule.value != kUnknownDim) {
            ok = shape[i] == rule.value;
        } else {
            ok = bound.emplace(rule.name, shape[i]).first->second == shape[i];
        }
    }
    if (!ok) {
        return Status::error(std::string(plugin_) + ": input '" + input + "' must have shape " +
                             patternText(pattern) + ", got " + shapeText(shape));
    }
    bound_ = std::move(bound);
    return Status::ok();
}

}  // namespace gptoss
