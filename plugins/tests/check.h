// A tiny test harness: TEST(name) registers a function, CHECK* macros count passes and print each failure.
#ifndef GPTOSS_TEST_CHECK_H
#define GPTOSS_TEST_CHECK_H

#include <string>

#include "common/status.h"

namespace gptoss_test {

using TestFunction = void (*)();

struct Registrar {
    Registrar(const char* name, TestFunction function);
};

void record(bool ok, const char* what, const char* file, int line, const std::string& detail);
std::string statusText(const gptoss::Status& status);
bool contains(const std::string& text, const std::string& part);

}  // namespace gptoss_test

#define TEST(name)                                                             \
    static void name();                                                        \
    static const ::gptoss_test::Registrar name##_registrar(#name, &name);      \
    static void name()

#define CHECK(condition) ::gptoss_test::record((condition), #condition, __FILE__, __LINE__, "")

#define CHECK_EQ(actual, expected)                                                                     \
    ::gptoss_test::record((actual) == (expected), #actual " == " #expected, __FILE__, __LINE__,        \
                          "got " + std::to_string(actual) + ", expected " + std::to_string(expected))

#define CHECK_OK(status_expr)                                                                  \
    do {                                                                                       \
        const ::gptoss::Status check_status_ = (status_expr);                                  \
        ::gptoss_test::record(check_status_.isOk(), #status_expr " is ok", __FILE__, __LINE__, \
                              ::gptoss_test::statusText(check_status_));                       \
    } while (0)

// The status is an error whose message contains `part`.
#define CHECK_ERROR(status_expr, part)                                                                   \
    do {                                                                                                 \
        const ::gptoss::Status check_status_ = (status_expr);                                            \
        ::gptoss_test::record(!check_status_.isOk() && ::gptoss_test::contains(check_status_.message(), part), \
                              #status_expr " fails with \"" part "\"", __FILE__, __LINE__,               \
                              ::gptoss_test::statusText(check_status_));                                 \
    } while (0)

#endif  // GPTOSS_TEST_CHECK_H
