#include "moe_plugin.h"

#include "gptoss_kernels.h"

namespace gptoss {

using nvinfer1::DataType;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginTensorDesc;

bool MoEPlugin::validInputs(int32_t nbInputs, int32_t nbOutputs, const std::vector<TensorType>& types,
                            const std::vector<Shape>& shapes, moe::Layout& layout) const {
    moe::Layout found{};
    Status status = moe::layoutFor(params_, nbInputs, nbOutputs, found);
    if (status && !types.empty()) {
        status = checkInputTypes(kName, moe::typeRules(params_, found), types);
    }
    if (status && !shapes.empty()) {
        status = moe::checkShapes(params_, found, shapes);
    }
    if (!status) {
        fail(status.message());
        return false;
    }
    layout = found;
    return true;
}

int32_t MoEPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                      int32_t nbInputs) const noexcept {
    return guarded(-1, [&] {
        const std::vector<TensorType> types = toTensorTypes(inputTypes, nbInputs);
        moe::Layout layout{};
        if (!validInputs(nbInputs, nbOutputs, types, {}, layout)) {
            return -1;
        }
        outputTypes[0] = toDataType(outputType(moe::typeRules(params_, layout), nbInputs, 0, types));
        return 0;
    });
}

int32_t MoEPlugin::getOutputShapes(const DimsExprs* inputs, int32_t nbInputs, const DimsExprs* /*shapeInputs*/,
                                   int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                                   nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept {
    return guarded(-1, [&] {
        moe::Layout layout{};
        if (!validInputs(nbInputs, nbOutputs, {}, toShapes(inputs, nbInputs), layout)) {
            return -1;
        }
        outputs[0] = inputs[moe::kOutputShapeSource];
        return 0;
    });
}

bool MoEPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                          int32_t nbOutputs) noexcept {
    return guarded(false, [&] {
        moe::Layout layout{};
        if (!moe::layoutFor(params_, nbInputs, nbOutputs, layout) ||
            inOut[pos].desc.format != nvinfer1::TensorFormat::kLINEAR) {
            return false;
        }
        return supportsType(moe::typeRules(params_, layout), pos, toTensorTypes(inOut, pos + 1).data());
    });
}

int32_t MoEPlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nbInputs,
                                   const DynamicPluginTensorDesc* /*out*/, int32_t nbOutputs) noexcept {
    return guarded(-1, [&] {
        return validInputs(nbInputs, nbOutputs, toTensorTypes(in, nbInputs), toShapes(in, nbInputs), layout_) ? 0
                                                                                                              : -1;
    });
}

size_t MoEPlugin::getWorkspaceSize(const DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                   const DynamicPluginTensorDesc* /*outputs*/, int32_t nbOutputs) const noexcept {
    return guarded<size_t>(0, [&]() -> size_t {
        moe::Layout layout{};
        if (!moe::layoutFor(params_, nbInputs, nbOutputs, layout)) {
            return 0;
        }
        const Shape hidden = toShape(inputs[layout.hidden].max);
        const gptoss_moe_desc desc = moe::kernelDesc(params_, hidden.empty() ? 0 : hidden[0],
                                                     toTensorType(inputs[layout.hidden].desc.type),
                                                     toTensorType(inputs[layout.gateUpWeight].desc.type));
        return gptoss_moe_workspace_size(&desc);
    });
}

int32_t MoEPlugin::onShapeChange(const PluginTensorDesc* in, int32_t nbInputs, const PluginTensorDesc* /*out*/,
                                 int32_t nbOutputs) noexcept {
    return guarded(-1, [&] {
        return validInputs(nbInputs, nbOutputs, toTensorTypes(in, nbInputs), toShapes(in, nbInputs), layout_) ? 0
                                                                                                              : -1;
    });
}

int32_t MoEPlugin::enqueue(const PluginTensorDesc* inputDesc, const PluginTensorDesc* /*outputDesc*/,
                           const void* const* inputs, void* const* outputs, void* workspace,
                           cudaStream_t stream) noexcept {
    return guarded(-1, [&] {
        const moe::Layout& at = layout_;
        if (at.nbInputs == 0) {
            fail(std::string(kName) + ": enqueue before the input shapes were set (onShapeChange)",
                 nvinfer1::ErrorCode::kINVALID_STATE);
            return -1;
        }
        const bool mxfp4 = params_.weightFormat == WeightFormat::kMxfp4;
        const gptoss_moe_desc desc =
            moe::kernelDesc(params_, inputDesc[at.hidden].dims.d[0], toTensorType(inputDesc[at.hidden].type),
                            toTensorType(inputDesc[at.gateUpWeight].type));
        const int status = gptoss_moe(
            &desc, inputs[at.hidden], static_cast<const int32_t*>(inputs[at.expertIds]), inputs[at.expertWeights],
            inputs[at.gateUpWeight], mxfp4 ? static_cast<const uint8_t*>(inputs[at.gateUpScales]) : nullptr,
            static_cast<const float*>(inputs[at.gateUpBias]), inputs[at.downWeight],
            mxfp4 ? static_cast<const uint8_t*>(inputs[at.downScales]) : nullptr,
            static_cast<const float*>(inputs[at.downBias]), outputs[0], workspace, stream);
        if (status != 0) {
            fail(kernelFailure(kName, status), nvinfer1::ErrorCode::kFAILED_EXECUTION);
        }
        return status;
    });
}

}  // namespace gptoss
