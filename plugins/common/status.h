// Result of a check: ok, or an error message for the user (plugin, field or input, what was expected).
#ifndef GPTOSS_STATUS_H
#define GPTOSS_STATUS_H

#include <string>
#include <utility>

namespace gptoss {

class Status {
public:
    static Status ok() { return Status(); }
    static Status error(std::string message) { return Status(std::move(message)); }

    bool isOk() const { return message_.empty(); }
    explicit operator bool() const { return isOk(); }
    const std::string& message() const { return message_; }

private:
    Status() = default;
    explicit Status(std::string message) : message_(message.empty() ? "unspecified error" : std::move(message)) {}

    std::string message_;
};

}  // namespace gptoss

#endif  // GPTOSS_STATUS_H
