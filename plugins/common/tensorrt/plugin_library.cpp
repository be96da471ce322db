// The library's two entry points, as IPluginRegistry::loadLibrary and `trtexec --dynamicPlugins` expect.
#include "moe/moe_plugin.h"
#include "plugin_creator.h"
#include "plugin_logging.h"
#include "sink_attention/sink_attention_plugin.h"

#define GPTOSS_EXPORT extern "C" __attribute__((visibility("default")))

GPTOSS_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    try {
        static gptoss::PluginCreator<gptoss::SinkAttentionPlugin> sinkAttention;
        static gptoss::PluginCreator<gptoss::MoEPlugin> moe;
        static nvinfer1::IPluginCreatorInterface* const creators[] = {&sinkAttention, &moe};
        nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
        return creators;
    } catch (const std::exception& error) {
        gptoss::logMessage(nvinfer1::ILogger::Severity::kERROR, error.what());
    }
    nbCreators = 0;
    return nullptr;
}

GPTOSS_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    gptoss::setPluginLoggerFinder(finder);
}
