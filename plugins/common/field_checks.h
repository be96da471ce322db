// Value checks shared by the plugins' field parsers; errors read "<plugin>: field '<name>' must ..., got ...".
#ifndef GPTOSS_FIELD_CHECKS_H
#define GPTOSS_FIELD_CHECKS_H

#include <cstdint>
#include <string>

#include "status.h"

namespace gptoss {

Status fieldError(const char* plugin, const char* field, const std::string& expectation, const std::string& got);

Status checkPositive(const char* plugin, const char* field, int32_t value);
Status checkPositive(const char* plugin, const char* field, float value);
Status checkFinite(const char* plugin, const char* field, float value);

}  // namespace gptoss

#endif  // GPTOSS_FIELD_CHECKS_H
