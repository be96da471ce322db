// What both IPluginV3 plugins share: capability interfaces, identity, cloning, context attachment,
// serialization of their fields, and error reporting that never lets an exception cross the ABI.
#ifndef GPTOSS_PLUGIN_BASE_H
#define GPTOSS_PLUGIN_BASE_H

#include <cstdio>
#include <exception>
#include <string>

#include "NvInferRuntime.h"
#include "plugin_logging.h"
#include "trt_conversions.h"

namespace gptoss {

constexpr const char* kPluginVersion = "1";
constexpr const char* kPluginNamespace = "";

// Derived provides kName, `FieldSet fields() const` and the build/runtime methods of its op.
template <typename Derived>
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuildV2,
                   public nvinfer1::IPluginV3OneRuntime {
public:
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override {
        switch (type) {
            case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
            case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuildV2*>(this);
            case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override { return cloneDerived(); }

    const char* getPluginName() const noexcept override { return Derived::kName; }
    const char* getPluginVersion() const noexcept override { return kPluginVersion; }
    const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // Outputs are not declared aliased: the runtime binds kv_cache_out to kv_cache's memory and the kernel
    // updates in place (a declared alias can make TensorRT insert a per-layer copy of the cache).
    int32_t getAliasedInput(int32_t /*outputIndex*/) noexcept override { return -1; }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override {
        Derived* copy = cloneDerived();
        if (copy != nullptr && context != nullptr) {
            static_cast<PluginBase*>(copy)->errorRecorder_ = context->getErrorRecorder();
        }
        return copy;
    }

    const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override {
        return guarded<const nvinfer1::PluginFieldCollection*>(
            nullptr, [&] { return serialized_.assign(static_cast<const Derived*>(this)->fields()); });
    }

protected:
    void fail(const std::string& message, nvinfer1::ErrorCode code = nvinfer1::ErrorCode::kINVALID_ARGUMENT) const
        noexcept {
        reportError(errorRecorder_, code, message.c_str());
    }

    // Runs `body`; an exception it throws (an allocation failure) is reported and turns into `onError`.
    template <typename Result, typename Body>
    Result guarded(Result onError, Body&& body) const noexcept {
        try {
            return body();
        } catch (const std::exception& error) {
            reportException(error.what());
        } catch (...) {
            reportException("unknown exception");
        }
        return onError;
    }

private:
    void reportException(const char* what) const noexcept {
        char message[512];
        std::snprintf(message, sizeof(message), "%s: internal error: %s", Derived::kName, what);
        reportError(errorRecorder_, nvinfer1::ErrorCode::kINTERNAL_ERROR, message);
    }

    Derived* cloneDerived() const noexcept {
        return guarded<Derived*>(nullptr, [&] { return new Derived(static_cast<const Derived&>(*this)); });
    }

    nvinfer1::IErrorRecorder* errorRecorder_ = nullptr;
    SerializedFields serialized_;
};

}  // namespace gptoss

#endif  // GPTOSS_PLUGIN_BASE_H
