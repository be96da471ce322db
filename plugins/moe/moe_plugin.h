// TensorRT IPluginV3 for gptoss::MoE; the op's rules live in moe.h (no TensorRT).
#ifndef GPTOSS_MOE_PLUGIN_H
#define GPTOSS_MOE_PLUGIN_H

#include "common/tensorrt/plugin_base.h"
#include "moe.h"

namespace gptoss {

class MoEPlugin final : public PluginBase<MoEPlugin> {
public:
    using Params = MoEParams;
    static constexpr const char* kName = moe::kName;
    static const std::vector<FieldSpec>& fieldSpecs() { return moe::fieldSpecs(); }
    static Status parse(const std::vector<FieldView>& fields, Params& params) { return moe::parse(fields, params); }

    explicit MoEPlugin(const Params& params) : params_(params) {}
    FieldSet fields() const { return moe::toFields(params_); }

    // Build
    int32_t getNbOutputs() const noexcept override { return moe::kNbOutputs; }
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               const nvinfer1::DataType* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, const nvinfer1::DimsExprs* shapeInputs,
                            int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nbOutputs) const
        noexcept override;

    // Runtime
    int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs, const nvinfer1::PluginTensorDesc* out,
                          int32_t nbOutputs) noexcept override;
    int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                    const void* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;

private:
    // Input count, types and shapes (empty: not checked); reports and returns false when they break the rules,
    // else sets `layout`.
    bool validInputs(int32_t nbInputs, int32_t nbOutputs, const std::vector<TensorType>& types,
                     const std::vector<Shape>& shapes, moe::Layout& layout) const;

    Params params_;
    moe::Layout layout_{};  // set by configurePlugin/onShapeChange; enqueue gets no input count
};

}  // namespace gptoss

#endif  // GPTOSS_MOE_PLUGIN_H
