#include "sink_attention_plugin.h"

#include "gptoss_kernels.h"

namespace gptoss {

namespace sa = sink_attention;
using nvinfer1::DataType;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginTensorDesc;

bool SinkAttentionPlugin::validInputs(int32_t nbInputs, int32_t nbOutputs, const std::vector<TensorType>& types,
                                      const std::vector<Shape>& shapes) const {
    Status status = sa::checkInputCount(nbInputs, nbOutputs);
    if (status && !types.empty()) {
        status = checkInputTypes(kName, sa::typeRules(), types);
    }
    if (status && !shapes.empty()) {
        status = sa::checkShapes(params_, shapes);
    }
    if (!status) {
        fail(status.message());
    }
    return status.isOk();
}

int32_t SinkAttentionPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                                int32_t nbInputs) const noexcept {
    return guarded(-1, [&] {
        const std::vector<TensorType> types = toTensorTypes(inputTypes, nbInputs);
        if (!validInputs(nbInputs, nbOutputs, types, {})) {
            return -1;
        }
        for (int32_t i = 0; i < nbOutputs; ++i) {
            outputTypes[i] = toDataType(outputType(sa::typeRules(), nbInputs, i, types));
        }
        return 0;
    });
}

int32_t SinkAttentionPlugin::getOutputShapes(const DimsExprs* inputs, int32_t nbInputs,
                                             const DimsExprs* /*shapeInputs*/, int32_t /*nbShapeInputs*/,
                                             DimsExprs* outputs, int32_t nbOutputs,
                                             nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept {
    return guarded(-1, [&] {
        if (!validInputs(nbInputs, nbOutputs, {}, toShapes(inputs, nbInputs))) {
            return -1;
        }
        for (int32_t i = 0; i < nbOutputs; ++i) {
            outputs[i] = inputs[sa::outputShapeSource(i)];
        }
        return 0;
    });
}

bool SinkAttentionPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut,
                                                    int32_t nbInputs, int32_t nbOutputs) noexcept {
    return guarded(false, [&] {
        if (!sa::checkInputCount(nbInputs, nbOutputs) || inOut[pos].desc.format != nvinfer1::TensorFormat::kLINEAR) {
            return false;
        }
        return supportsType(sa::typeRules(), pos, toTensorTypes(inOut, pos + 1).data());
    });
}

int32_t SinkAttentionPlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nbInputs,
                                             const DynamicPluginTensorDesc* /*out*/, int32_t nbOutputs) noexcept {
    return guarded(-1, [&] {
        return validInputs(nbInputs, nbOutputs, toTensorTypes(in, nbInputs), toShapes(in, nbInputs)) ? 0 : -1;
    });
}

size_t SinkAttentionPlugin::getWorkspaceSize(const DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                             const DynamicPluginTensorDesc* /*outputs*/, int32_t /*nbOutputs*/) const
    noexcept {
    return guarded<size_t>(0, [&]() -> size_t {
        if (nbInputs != sa::kNbInputs) {
            return 0;
        }
        const gptoss_attention_desc desc = sa::kernelDesc(params_, toShape(inputs[sa::kQ].max),
                                                          toShape(inputs[sa::kKvCache].max),
                                                          toTensorType(inputs[sa::kQ].desc.type));
        return gptoss_sink_attention_workspace_size(&desc);
    });
}

int32_t SinkAttentionPlugin::onShapeChange(const PluginTensorDesc* in, int32_t nbInputs,
                                           const PluginTensorDesc* /*out*/, int32_t nbOutputs) noexcept {
    return guarded(-1, [&] {
        return validInputs(nbInputs, nbOutputs, toTensorTypes(in, nbInputs), toShapes(in, nbInputs)) ? 0 : -1;
    });
}

int32_t SinkAttentionPlugin::enqueue(const PluginTensorDesc* inputDesc, const PluginTensorDesc* /*outputDesc*/,
                                     const void* const* inputs, void* const* outputs, void* workspace,
                                     cudaStream_t stream) noexcept {
    return guarded(-1, [&] {
        const gptoss_attention_desc desc =
            sa::kernelDesc(params_, toShape(inputDesc[sa::kQ].dims), toShape(inputDesc[sa::kKvCache].dims),
                           toTensorType(inputDesc[sa::kQ].type));
        // kv_cache_out is usually bound to kv_cache's memory; the kernel handles both cases.
        const int status = gptoss_sink_attention(
            &desc, inputs[sa::kQ], inputs[sa::kK], inputs[sa::kV], static_cast<const float*>(inputs[sa::kSinks]),
            inputs[sa::kKvCache], static_cast<const int32_t*>(inputs[sa::kPastLen]),
            static_cast<const int32_t*>(inputs[sa::kNewLen]), outputs[sa::kOut], outputs[sa::kKvCacheOut], workspace,
            stream);
        if (status != 0) {
            fail(kernelFailure(kName, status), nvinfer1::ErrorCode::kFAILED_EXECUTION);
        }
        return status;
    });
}

}  // namespace gptoss
