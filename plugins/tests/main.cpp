// Runs every TEST; prints one line per failed check and a final "N passed, M failed".
#include <cstdio>
#include <utility>
#include <vector>

#include "check.h"

namespace gptoss_test {
namespace {

struct Counts {
    int passed = 0;
    int failed = 0;
};

Counts& counts() {
    static Counts value;
    return value;
}

std::vector<std::pair<const char*, TestFunction>>& tests() {
    static std::vector<std::pair<const char*, TestFunction>> value;
    return value;
}

const char* currentTest = "";

}  // namespace

Registrar::Registrar(const char* name, TestFunction function) {
    tests().emplace_back(name, function);
}

void record(bool ok, const char* what, const char* file, int line, const std::string& detail) {
    if (ok) {
        ++counts().passed;
        return;
    }
    ++counts().failed;
    std::printf("FAIL %s (%s:%d): %s%s%s\n", currentTest, file, line, what, detail.empty() ? "" : ": ",
                detail.c_str());
}

std::string statusText(const gptoss::Status& status) {
    return status.isOk() ? "status ok" : "status error \"" + status.message() + "\"";
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

}  // namespace gptoss_test

int main() {
    using namespace gptoss_test;
    for (const auto& [name, function] : tests()) {
        currentTest = name;
        function();
    }
    std::printf("%d passed, %d failed\n", counts().passed, counts().failed);
    return counts().failed == 0 ? 0 : 1;
}
