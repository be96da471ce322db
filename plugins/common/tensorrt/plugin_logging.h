// Where the plugins' messages go: the ILogger of the TensorRT process (setLoggerFinder), else stderr.
#ifndef GPTOSS_PLUGIN_LOGGING_H
#define GPTOSS_PLUGIN_LOGGING_H

#include <string>

#include "NvInferRuntime.h"

namespace gptoss {

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

void logMessage(nvinfer1::ILogger::Severity severity, const char* message) noexcept;

// An error: logged, and also reported to `recorder` when the execution context gave one.
void reportError(nvinfer1::IErrorRecorder* recorder, nvinfer1::ErrorCode code, const char* message) noexcept;

// "<plugin>: kernel failed: <CUDA error name> (<code>): <description>" for a non-zero kernel status.
std::string kernelFailure(const char* plugin, int status);

}  // namespace gptoss

#endif  // GPTOSS_PLUGIN_LOGGING_H
