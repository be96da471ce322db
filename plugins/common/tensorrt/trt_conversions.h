// Conversions between TensorRT's types and the plain ones of the TensorRT-free code (plugin_fields.h,
// tensor_rules.h).
#ifndef GPTOSS_TRT_CONVERSIONS_H
#define GPTOSS_TRT_CONVERSIONS_H

#include <vector>

#include "NvInferRuntime.h"
#include "common/plugin_fields.h"
#include "common/tensor_rules.h"

namespace gptoss {

TensorType toTensorType(nvinfer1::DataType type);
nvinfer1::DataType toDataType(TensorType type);  // float32/float16/bfloat16, the types of plugin outputs

FieldType toFieldType(nvinfer1::PluginFieldType type);
nvinfer1::PluginFieldType toPluginFieldType(FieldType type);

std::vector<FieldView> toFieldViews(const nvinfer1::PluginFieldCollection* collection);

Shape toShape(const nvinfer1::Dims& dims);
Shape toShape(const nvinfer1::DimsExprs& dims);  // constant extents, kUnknownDim elsewhere

std::vector<Shape> toShapes(const nvinfer1::DynamicPluginTensorDesc* descs, int32_t count);  // build-time dims
std::vector<Shape> toShapes(const nvinfer1::PluginTensorDesc* descs, int32_t count);
std::vector<Shape> toShapes(const nvinfer1::DimsExprs* dims, int32_t count);
std::vector<TensorType> toTensorTypes(const nvinfer1::DataType* types, int32_t count);
std::vector<TensorType> toTensorTypes(const nvinfer1::DynamicPluginTensorDesc* descs, int32_t count);
std::vector<TensorType> toTensorTypes(const nvinfer1::PluginTensorDesc* descs, int32_t count);

// Fields handed to TensorRT for serialization: owns the values the PluginField entries point into.
class SerializedFields {
public:
    SerializedFields() = default;
    SerializedFields(const SerializedFields&) : SerializedFields() {}  // a copy serializes its own fields
    SerializedFields& operator=(const SerializedFields&) = delete;

    const nvinfer1::PluginFieldCollection* assign(FieldSet fields);

private:
    FieldSet fields_;
    std::vector<nvinfer1::PluginField> entries_;
    nvinfer1::PluginFieldCollection collection_{};
};

}  // namespace gptoss

#endif  // GPTOSS_TRT_CONVERSIONS_H
