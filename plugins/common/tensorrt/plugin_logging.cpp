#include "plugin_logging.h"

#include <atomic>
#include <cstdio>

namespace gptoss {
namespace {

std::atomic<nvinfer1::ILoggerFinder*> gFinder{nullptr};

}  // namespace

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept {
    gFinder.store(finder);
}

void logMessage(nvinfer1::ILogger::Severity severity, const char* message) noexcept {
    nvinfer1::ILoggerFinder* finder = gFinder.load();
    nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
    if (logger != nullptr) {
        logger->log(severity, message);
    } else if (severity <= nvinfer1::ILogger::Severity::kWARNING) {
        std::fprintf(stderr, "gptoss plugins: %s\n", message);
    }
}

void reportError(nvinfer1::IErrorRecorder* recorder, nvinfer1::ErrorCode code, const char* message) noexcept {
    logMessage(nvinfer1::ILogger::Severity::kERROR, message);
    if (recorder != nullptr) {
        recorder->reportError(code, message);
    }
}

std::string kernelFailure(const char* plugin, int status) {
    const auto error = static_cast<cudaError_t>(status);
    return std::string(plugin) + ": kernel failed: " + cudaGetErrorName(error) + " (" + std::to_string(status) +
           "): " + cudaGetErrorString(error);
}

}  // namespace gptoss
