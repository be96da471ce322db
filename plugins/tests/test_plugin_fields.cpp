// Generic field reading: types, lengths, strings, unknown/duplicate/missing fields.
#include <cstdint>

#include "check.h"
#include "common/plugin_fields.h"
#include "field_edits.h"

using gptoss::FieldSet;
using gptoss::FieldSpec;
using gptoss::FieldType;
using gptoss::FieldValues;
using gptoss::FieldView;
using gptoss::readFields;
using namespace gptoss_test;

namespace {

const std::vector<FieldSpec> kSpecs = {{"count", FieldType::kInt32}, {"gain", FieldType::kFloat32},
                                       {"mode", FieldType::kChar}};

FieldSet goodFields() {
    FieldSet fields;
    fields.addInt32("count", 3);
    fields.addFloat32("gain", 0.5F);
    fields.addString("mode", "fast");
    return fields;
}

}  // namespace

TEST(reads_good_fields) {
    const FieldSet set = goodFields();
    FieldValues values;
    CHECK_OK(readFields("Op", kSpecs, set.views(), values));
    CHECK_EQ(values.ints.at("count"), 3);
    CHECK(values.floats.at("gain") == 0.5F);
    CHECK(values.strings.at("mode") == "fast");
}

TEST(field_set_views_hold_names_types_and_lengths) {
    const FieldSet set = goodFields();
    const std::vector<FieldView> fields = set.views();
    CHECK_EQ(static_cast<int>(fields.size()), 3);
    CHECK(std::string(fields[0].name) == "count" && fields[0].type == FieldType::kInt32 && fields[0].length == 1);
    CHECK(std::string(fields[2].name) == "mode" && fields[2].type == FieldType::kChar);
    CHECK_EQ(fields[2].length, 5);  // "fast" and its NUL, as the ONNX parser passes strings
}

TEST(strings_with_or_without_nul) {
    const FieldSet set = goodFields();
    const char noNul[] = {'s', 'l', 'o', 'w'};
    FieldValues values;
    CHECK_OK(readFields("Op", kSpecs, replaced(set.views(), {"mode", FieldType::kChar, 4, noNul}), values));
    CHECK(values.strings.at("mode") == "slow");
    CHECK_OK(readFields("Op", kSpecs, replaced(set.views(), {"mode", FieldType::kChar, 0, nullptr}), values));
    CHECK(values.strings.at("mode").empty());
}

TEST(rejects_unknown_field) {
    const FieldSet set = goodFields();
    const int32_t one = 1;
    FieldValues values;
    CHECK_ERROR(readFields("Op", kSpecs, with(set.views(), {"colour", FieldType::kInt32, 1, &one}), values),
                "Op: field 'colour' is unknown (expected count, gain, mode)");
}

TEST(rejects_wrong_types) {
    const FieldSet set = goodFields();
    const float half = 0.5F;
    const double wide = 0.5;
    const int32_t number = 7;
    FieldValues values;
    CHECK_ERROR(readFields("Op", kSpecs, replaced(set.views(), {"count", FieldType::kFloat32, 1, &half}), values),
                "Op: field 'count' must be int32, got float32");
    CHECK_ERROR(readFields("Op", kSpecs, replaced(set.views(), {"gain", FieldType::kFloat64, 1, &wide}), values),
                "Op: field 'gain' must be float32, got float64");
    CHECK_ERROR(readFields("Op", kSpecs, replaced(set.views(), {"mode", FieldType::kInt32, 1, &number}), values),
                "Op: field 'mode' must be string, got int32");
    CHECK_ERROR(readFields("Op", kSpecs, replaced(set.views(), {"count", FieldType::kOther, 1, &number}), values),
                "Op: field 'count' must be int32, got an unsupported type");
}

TEST(rejects_bad_lengths_and_missing_data) {
    const FieldSet set = goodFields();
    const int32_t pair[] = {1, 2};
    FieldValues values;
    CHECK_ERROR(readFields("Op", kSpecs, replaced(set.views(), {"count", FieldType::kInt32, 2, pair}), values),
                "Op: field 'count' must hold 1 int32 value, got 2");
    CHECK_ERROR(readFields("Op", kSpecs, replaced(set.views(), {"count", FieldType::kInt32, 0, pair}), values),
                "Op: field 'count' must hold 1 int32 value, got 0");
    CHECK_ERROR(readFields("Op", kSpecs, replaced(set.views(), {"gain", FieldType::kFloat32, 1, nullptr}), values),
                "Op: field 'gain' has no data");
}

TEST(rejects_missing_duplicate_and_nameless_fields) {
    const FieldSet set = goodFields();
    const int32_t four = 4;
    FieldValues values;
    CHECK_ERROR(readFields("Op", kSpecs, without(set.views(), "gain"), values),
                "Op: missing field 'gain' (float32)");
    CHECK_ERROR(readFields("Op", kSpecs, with(set.views(), {"count", FieldType::kInt32, 1, &four}), values),
                "Op: field 'count' is given more than once");
    CHECK_ERROR(readFields("Op", kSpecs, with(set.views(), {nullptr, FieldType::kInt32, 1, &four}), values),
                "Op: a field has no name");
}

TEST(failed_read_leaves_values_untouched) {
    const FieldSet set = goodFields();
    FieldValues values;
    values.ints["count"] = 99;
    CHECK(!readFields("Op", kSpecs, without(set.views(), "mode"), values).isOk());
    CHECK_EQ(values.ints.at("count"), 99);
}
