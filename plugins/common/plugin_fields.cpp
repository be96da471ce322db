#include "plugin_fields.h"

#include <algorithm>
#include <cstring>
#include <set>

namespace gptoss {
namespace {

std::string prefix(const char* plugin, const std::string& field) {
    return std::string(plugin) + ": field '" + field + "' ";
}

std::string expectedNames(const std::vector<FieldSpec>& specs) {
    std::string names;
    for (const FieldSpec& spec : specs) {
        names += (names.empty() ? "" : ", ") + std::string(spec.name);
    }
    return names;
}

// A kChar field's text: its bytes up to the first NUL (the ONNX parser appends one, other callers may not).
std::string fieldText(const FieldView& field) {
    const char* text = static_cast<const char*>(field.data);
    return std::string(text, std::find(text, text + field.length, '\0'));
}

Status readOne(const char* plugin, const FieldSpec& spec, const FieldView& field, FieldValues& values) {
    const std::string name = field.name;
    if (field.type != spec.type) {
        return Status::error(prefix(plugin, name) + "must be " + fieldTypeName(spec.type) + ", got " +
                             fieldTypeName(field.type));
    }
    if (field.length < 0 || (field.length > 0 && field.data == nullptr)) {
        return Status::error(prefix(plugin, name) + "has no data (length " + std::to_string(field.length) + ")");
    }
    if (spec.type == FieldType::kChar) {
        values.strings[name] = fieldText(field);
        return Status::ok();
    }
    if (field.length != 1) {
        return Status::error(prefix(plugin, name) + "must hold 1 " + fieldTypeName(spec.type) + " value, got " +
                             std::to_string(field.length));
    }
    if (spec.type == FieldType::kInt32) {
        std::memcpy(&values.ints[name], field.data, sizeof(int32_t));
    } else {
        std::memcpy(&values.floats[name], field.data, sizeof(float));
    }
    return Status::ok();
}

}  // namespace

const char* fieldTypeName(FieldType type) {
    switch (type) {
        case FieldType::kInt8: return "int8";
        case FieldType::kInt16: return "int16";
        case FieldType::kInt32: return "int32";
        case FieldType::kInt64: return "int64";
        case FieldType::kFloat16: return "float16";
        case FieldType::kBFloat16: return "bfloat16";
        case FieldType::kFloat32: return "float32";
        case FieldType::kFloat64: return "float64";
        case FieldType::kChar: return "string";
        case FieldType::kOther: break;
    }
    return "an unsupported type";
}

Status readFields(const char* plugin, const std::vector<FieldSpec>& specs, const std::vector<FieldView>& fields,
                  FieldValues& values) {
    FieldValues read;
    std::set<std::string> seen;
    for (const FieldView& field : fields) {
        if (field.name == nullptr) {
            return Status::error(std::string(plugin) + ": a field has no name");
        }
        auto spec = std::find_if(specs.begin(), specs.end(),
                                 [&](const FieldSpec& s) { return std::strcmp(s.name, field.name) == 0; });
        if (spec == specs.end()) {
            return Status::error(prefix(plugin, field.name) + "is unknown (expected " + expectedNames(specs) + ")");
        }
        if (!seen.insert(field.name).second) {
            return Status::error(prefix(plugin, field.name) + "is given more than once");
        }
        Status status = readOne(plugin, *spec, field, read);
        if (!status) {
            return status;
        }
    }
    for (const FieldSpec& spec : specs) {
        if (seen.count(spec.name) == 0) {
            return Status::error(std::string(plugin) + ": missing field '" + spec.name + "' (" +
                                 fieldTypeName(spec.type) + ")");
        }
    }
    values = std::move(read);
    return Status::ok();
}

void FieldSet::add(const std::string& name, FieldType type, int32_t length, const void* data, size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    entries_.push_back(Entry{name, type, length, std::vector<unsigned char>(bytes, bytes + size)});
}

void FieldSet::addInt32(const std::string& name, int32_t value) {
    add(name, FieldType::kInt32, 1, &value, sizeof(value));
}

void FieldSet::addFloat32(const std::string& name, float value) {
    add(name, FieldType::kFloat32, 1, &value, sizeof(value));
}

void FieldSet::addString(const std::string& name, const std::string& value) {
    add(name, FieldType::kChar, static_cast<int32_t>(value.size() + 1), value.c_str(), value.size() + 1);
}

std::vector<FieldView> FieldSet::views() const {
    std::vector<FieldView> views;
    views.reserve(entries_.size());
    for (const Entry& entry : entries_) {
        views.push_back(FieldView{entry.name.c_str(), entry.type, entry.length, entry.bytes.data()});
    }
    return views;
}

}  // namespace gptoss
