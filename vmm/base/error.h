// Error: an errno plus a chain of context strings, outermost first.
//
// Every fallible call in husk returns Result<T> (result.h). An Error reads as
// one sentence: "open `config.json`: No such file or directory".
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <vector>

namespace husk {

class Error {
public:
    // An error from a failed system call: errno plus what was being done.
    static Error from_errno(int code, std::string_view context);
    // An error with no errno (bad input, protocol violation): the message says it all.
    static Error from_string(std::string_view message, int code = EINVAL);

    // Wraps the error in one more layer of context: "what we were doing".
    Error&& with_context(std::string_view context) &&;
    Error& with_context(std::string_view context) &;

    int code() const { return m_code; }
    bool has_errno_text() const { return m_errno_text; }
    // "outer: inner: strerror(code)".
    std::string message() const;

private:
    Error(int code, bool errno_text) : m_code(code), m_errno_text(errno_text) {}

    int m_code;
    bool m_errno_text;
    std::vector<std::string> m_context;  // innermost last
};

}  // namespace husk
