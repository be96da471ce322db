// IPluginCreatorV3One for a plugin class: advertises its fields and builds it from a checked field list.
#ifndef GPTOSS_PLUGIN_CREATOR_H
#define GPTOSS_PLUGIN_CREATOR_H

#include <string>
#include <vector>

#include "NvInferRuntime.h"
#include "plugin_base.h"
#include "plugin_logging.h"
#include "trt_conversions.h"

namespace gptoss {

template <typename Plugin>
class PluginCreator final : public nvinfer1::IPluginCreatorV3One {
public:
    PluginCreator() {
        for (const FieldSpec& spec : Plugin::fieldSpecs()) {
            fieldNames_.emplace_back(spec.name, nullptr, toPluginFieldType(spec.type), 1);
        }
        collection_.nbFields = static_cast<int32_t>(fieldNames_.size());
        collection_.fields = fieldNames_.data();
    }

    // The fields the ONNX parser copies from the node's attributes (plugin_version/plugin_namespace excluded).
    const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &collection_; }

    // Same fields in both phases; nullptr (after logging why) when they are bad.
    nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                      nvinfer1::TensorRTPhase /*phase*/) noexcept override {
        try {
            typename Plugin::Params params;
            const Status status = Plugin::parse(toFieldViews(fc), params);
            if (!status) {
                const std::string layer = name != nullptr ? name : "";
                logMessage(nvinfer1::ILogger::Severity::kERROR,
                           (status.message() + " (layer '" + layer + "')").c_str());
                return nullptr;
            }
            return new Plugin(params);
        } catch (const std::exception& error) {
            logMessage(nvinfer1::ILogger::Severity::kERROR, error.what());
        }
        return nullptr;
    }

    const char* getPluginName() const noexcept override { return Plugin::kName; }
    const char* getPluginVersion() const noexcept override { return kPluginVersion; }
    const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

private:
    std::vector<nvinfer1::PluginField> fieldNames_;
    nvinfer1::PluginFieldCollection collection_{};
};

}  // namespace gptoss

#endif  // GPTOSS_PLUGIN_CREATOR_H
