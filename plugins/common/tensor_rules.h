// Data-type and shape rules of plugin inputs/outputs on plain values (no TensorRT types).
#ifndef GPTOSS_TENSOR_RULES_H
#define GPTOSS_TENSOR_RULES_H

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "gptoss_kernels.h"
#include "status.h"

namespace gptoss {

enum class TensorType { kFloat32, kFloat16, kBFloat16, kInt32, kUInt8, kInt8, kOther };

const char* tensorTypeName(TensorType type);

// Kernel dtype of a float32/float16/bfloat16 tensor, or GPTOSS_UINT8 for raw bytes (uint8 or int8); callers pass
// only types that passed the rules.
gptoss_dtype kernelDtype(TensorType type);

// Bit set of accepted types.
enum TypeSet : unsigned {
    kFloat32Only = 1U << static_cast<unsigned>(TensorType::kFloat32),
    kInt32Only = 1U << static_cast<unsigned>(TensorType::kInt32),
    // Raw bytes: TensorRT's ONNX parser widens uint8 initializers to int32, so packed data may arrive as int8.
    kBytes = (1U << static_cast<unsigned>(TensorType::kUInt8)) | (1U << static_cast<unsigned>(TensorType::kInt8)),
    kFloating = kFloat32Only | (1U << static_cast<unsigned>(TensorType::kFloat16)) |
                (1U << static_cast<unsigned>(TensorType::kBFloat16)),
    kAnyType = ~0U,
};

// The rule of one input/output position: its name, the accepted types, and an earlier position whose type it
// must repeat (-1: none).
struct TypeRule {
    const char* name;
    unsigned allowed;
    int32_t sameAs;
};

// TensorRT's supportsFormatCombination question: may position `pos` have `types[pos]`, given `types[0..pos-1]`?
bool supportsType(const std::vector<TypeRule>& rules, int32_t pos, const TensorType* types);

// The same rules as an error message naming the first input that breaks them.
Status checkInputTypes(const char* plugin, const std::vector<TypeRule>& rules, const std::vector<TensorType>& inputs);

// Type of output `index` (rules[nbInputs + index]) given valid input types: the type it repeats.
TensorType outputType(const std::vector<TypeRule>& rules, int32_t nbInputs, int32_t index,
                      const std::vector<TensorType>& inputs);

// A shape with kUnknownDim for extents not known yet (build time).
using Shape = std::vector<int64_t>;
constexpr int64_t kUnknownDim = -1;

std::string shapeText(const Shape& shape);

// One expected extent: a fixed value, or a symbol (B, S, T) that must agree across the inputs.
struct DimRule {
    std::string name;
    int64_t value;

    static DimRule fixed(int64_t value, std::string name = "") { return DimRule{std::move(name), value}; }
    static DimRule symbol(std::string name) { return DimRule{std::move(name), kUnknownDim}; }
};

// Matches input shapes against patterns, binding symbols on the first known extent.
class ShapeMatcher {
public:
    explicit ShapeMatcher(const char* plugin) : plugin_(plugin) {}
    Status match(const char* input, const Shape& shape, const std::vector<DimRule>& pattern);

private:
    std::string patternText(const std::vector<DimRule>& pattern) const;

    const char* plugin_;
    std::map<std::string, int64_t> bound_;
};

}  // namespace gptoss

#endif  // GPTOSS_TENSOR_RULES_H
