// TensorRT IPluginV3 for gptoss::SinkAttention; the op's rules live in sink_attention.h (no TensorRT).
#ifndef GPTOSS_SINK_ATTENTION_PLUGIN_H
#define GPTOSS_SINK_ATTENTION_PLUGIN_H

#include "common/tensorrt/plugin_base.h"
#include "sink_attention.h"

namespace gptoss {

class SinkAttentionPlugin final : public PluginBase<SinkAttentionPlugin> {
public:
    using Params = SinkAttentionParams;
    static constexpr const char* kName = sink_attention::kName;
    static const std::vector<FieldSpec>& fieldSpecs() { return sink_attention::fieldSpecs(); }
    static Status parse(const std::vector<FieldView>& fields, Params& params) {
        return sink_attention::parse(fields, params);
    }

    explicit SinkAttentionPlugin(const Params& params) : params_(params) {}
    FieldSet fields() const { return sink_attention::toFields(params_); }

    // Build
    int32_t getNbOutputs() const noexcept override { return sink_attention::kNbOutputs; }
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
    // Input count, types and shapes (empty: not checked); reports and returns false when they break the rules.
    bool validInputs(int32_t nbInputs, int32_t nbOutputs, const std::vector<TensorType>& types,
                     const std::vector<Shape>& shapes) const;

    Params params_;
};

}  // namespace gptoss

#endif  // GPTOSS_SINK_ATTENTION_PLUGIN_H
