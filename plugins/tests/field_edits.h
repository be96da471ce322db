// Field-list edits for tests: start from a good list, then drop, replace or add one field.
#ifndef GPTOSS_TEST_FIELD_EDITS_H
#define GPTOSS_TEST_FIELD_EDITS_H

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/plugin_fields.h"

namespace gptoss_test {

inline std::vector<gptoss::FieldView> without(std::vector<gptoss::FieldView> fields, const char* name) {
    fields.erase(std::remove_if(fields.begin(), fields.end(),
                                [&](const gptoss::FieldView& f) { return std::strcmp(f.name, name) == 0; }),
                 fields.end());
    return fields;
}

inline std::vector<gptoss::FieldView> with(std::vector<gptoss::FieldView> fields, gptoss::FieldView field) {
    fields.push_back(field);
    return fields;
}

inline std::vector<gptoss::FieldView> replaced(const std::vector<gptoss::FieldView>& fields,
                                               gptoss::FieldView field) {
    return with(without(fields, field.name), field);
}

}  // namespace gptoss_test

#endif  // GPTOSS_TEST_FIELD_EDITS_H
