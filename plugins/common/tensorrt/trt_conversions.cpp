#include "trt_conversions.h"

#include <utility>

namespace gptoss {

using nvinfer1::DataType;
using nvinfer1::PluginFieldType;

TensorType toTensorType(DataType type) {
    switch (type) {
        case DataType::kFLOAT: return TensorType::kFloat32;
        case DataType::kHALF: return TensorType::kFloat16;
        case DataType::kBF16: return TensorType::kBFloat16;
        case DataType::kINT32: return TensorType::kInt32;
        case DataType::kUINT8: return TensorType::kUInt8;
        case DataType::kINT8: return TensorType::kInt8;
        default: return TensorType::kOther;
    }
}

DataType toDataType(TensorType type) {
    switch (type) {
        case TensorType::kFloat16: return DataType::kHALF;
        case TensorType::kBFloat16: return DataType::kBF16;
        default: return DataType::kFLOAT;
    }
}

FieldType toFieldType(PluginFieldType type) {
    switch (type) {
        case PluginFieldType::kINT8: return FieldType::kInt8;
        case PluginFieldType::kINT16: return FieldType::kInt16;
        case PluginFieldType::kINT32: return FieldType::kInt32;
        case PluginFieldType::kINT64: return FieldType::kInt64;
        case PluginFieldType::kFLOAT16: return FieldType::kFloat16;
        case PluginFieldType::kBF16: return FieldType::kBFloat16;
        case PluginFieldType::kFLOAT32: return FieldType::kFloat32;
        case PluginFieldType::kFLOAT64: return FieldType::kFloat64;
        case PluginFieldType::kCHAR: return FieldType::kChar;
        default: return FieldType::kOther;
    }
}

PluginFieldType toPluginFieldType(FieldType type) {
    switch (type) {
        case FieldType::kInt32: return PluginFieldType::kINT32;
        case FieldType::kFloat32: return PluginFieldType::kFLOAT32;
        case FieldType::kChar: return PluginFieldType::kCHAR;
        default: return PluginFieldType::kUNKNOWN;
    }
}

std::vector<FieldView> toFieldViews(const nvinfer1::PluginFieldCollection* collection) {
    std::vector<FieldView> views;
    if (collection == nullptr || collection->fields == nullptr) {
        return views;
    }
    for (int32_t i = 0; i < collection->nbFields; ++i) {
        const nvinfer1::PluginField& field = collection->fields[i];
        views.push_back(FieldView{field.name, toFieldType(field.type), field.length, field.data});
    }
    return views;
}

Shape toShape(const nvinfer1::Dims& dims) {
    return dims.nbDims < 0 ? Shape{} : Shape(dims.d, dims.d + dims.nbDims);
}

Shape toShape(const nvinfer1::DimsExprs& dims) {
    Shape shape;
    for (int32_t i = 0; i < dims.nbDims; ++i) {
        shape.push_back(dims.d[i]->isConstant() ? dims.d[i]->getConstantValue() : kUnknownDim);
    }
    return shape;
}

namespace {

// `convert` applied to each of `count` items.
template <typename Item, typename Convert>
auto mapEach(const Item* items, int32_t count, Convert convert) {
    std::vector<decltype(convert(*items))> result;
    for (int32_t i = 0; i < count; ++i) {
        result.push_back(convert(items[i]));
    }
    return result;
}

}  // namespace

std::vector<Shape> toShapes(const nvinfer1::DynamicPluginTensorDesc* descs, int32_t count) {
    return mapEach(descs, count, [](const nvinfer1::DynamicPluginTensorDesc& d) { return toShape(d.desc.dims); });
}

std::vector<Shape> toShapes(const nvinfer1::PluginTensorDesc* descs, int32_t count) {
    return mapEach(descs, count, [](const nvinfer1::PluginTensorDesc& d) { return toShape(d.dims); });
}

std::vector<Shape> toShapes(const nvinfer1::DimsExprs* dims, int32_t count) {
    return mapEach(dims, count, [](const nvinfer1::DimsExprs& d) { return toShape(d); });
}

std::vector<TensorType> toTensorTypes(const DataType* types, int32_t count) {
    return mapEach(types, count, [](DataType type) { return toTensorType(type); });
}

std::vector<TensorType> toTensorTypes(const nvinfer1::DynamicPluginTensorDesc* descs, int32_t count) {
    return mapEach(descs, count, [](const nvinfer1::DynamicPluginTensorDesc& d) { return toTensorType(d.desc.type); });
}

std::vector<TensorType> toTensorTypes(const nvinfer1::PluginTensorDesc* descs, int32_t count) {
    return mapEach(descs, count, [](const nvinfer1::PluginTensorDesc& d) { return toTensorType(d.type); });
}

const nvinfer1::PluginFieldCollection* SerializedFields::assign(FieldSet fields) {
    fields_ = std::move(fields);
    entries_.clear();
    for (const FieldView& view : fields_.views()) {
        entries_.emplace_back(view.name, view.data, toPluginFieldType(view.type), view.length);
    }
    collection_.nbFields = static_cast<int32_t>(entries_.size());
    collection_.fields = entries_.data();
    return &collection_;
}

}  // namespace gptoss
