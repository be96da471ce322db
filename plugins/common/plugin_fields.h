// Plugin fields without TensorRT: the (name, type, length, data) list TensorRT passes to a plugin creator,
// checked against a fixed list of required scalar fields, and built back for serialization.
#ifndef GPTOSS_PLUGIN_FIELDS_H
#define GPTOSS_PLUGIN_FIELDS_H

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "status.h"

namespace gptoss {

// The field types a caller may pass; only kInt32, kFloat32 and kChar are accepted (the ONNX parser turns
// INT attributes into kInt32, FLOAT into kFloat32 and STRING into kChar with a trailing NUL).
enum class FieldType { kInt8, kInt16, kInt32, kInt64, kFloat16, kBFloat16, kFloat32, kFloat64, kChar, kOther };

const char* fieldTypeName(FieldType type);

// One field as passed in; `data` is borrowed. `length` counts elements (bytes for kChar).
struct FieldView {
    const char* name;
    FieldType type;
    int32_t length;
    const void* data;
};

// A required field: scalar int32 / float32, or a string.
struct FieldSpec {
    const char* name;
    FieldType type;
};

// Values of fields that passed `readFields`, by name.
struct FieldValues {
    std::map<std::string, int32_t> ints;
    std::map<std::string, float> floats;
    std::map<std::string, std::string> strings;
};

// Checks that `fields` holds exactly the `specs` (each once, of its type, scalars of length 1) and reads them.
// Errors start with "<plugin>: " and name the field.
Status readFields(const char* plugin, const std::vector<FieldSpec>& specs, const std::vector<FieldView>& fields,
                  FieldValues& values);

// Owned fields for serialization; `views()` stay valid until the set is changed or destroyed.
class FieldSet {
public:
    void addInt32(const std::string& name, int32_t value);
    void addFloat32(const std::string& name, float value);
    void addString(const std::string& name, const std::string& value);  // stored with a trailing NUL
    std::vector<FieldView> views() const;

private:
    struct Entry {
        std::string name;
        FieldType type;
        int32_t length;
        std::vector<unsigned char> bytes;
    };
    void add(const std::string& name, FieldType type, int32_t length, const void* data, size_t size);
    std::vector<Entry> entries_;
};

}  // namespace gptoss

#endif  // GPTOSS_PLUGIN_FIELDS_H
