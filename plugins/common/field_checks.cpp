#include "field_checks.h"

#include <cmath>
#include <sstream>

namespace gptoss {
namespace {

std::string floatText(float value) {
    std::ostringstream text;
    text << value;
    return text.str();
}

}  // namespace

Status fieldError(const char* plugin, const char* field, const std::string& expectation, const std::string& got) {
    return Status::error(std::string(plugin) + ": field '" + field + "' must " + expectation + ", got " + got);
}

Status checkPositive(const char* plugin, const char* field, int32_t value) {
    return value > 0 ? Status::ok() : fieldError(plugin, field, "be positive", std::to_string(value));
}

Status checkPositive(const char* plugin, const char* field, float value) {
    return std::isfinite(value) && value > 0.0F ? Status::ok()
                                                : fieldError(plugin, field, "be finite and positive", floatText(value));
}

Status checkFinite(const char* plugin, const char* field, float value) {
    return std::isfinite(value) ? Status::ok() : fieldError(plugin, field, "be finite", floatText(value));
}

}  // namespace gptoss
