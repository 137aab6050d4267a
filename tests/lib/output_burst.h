// A container command whose output is easy to lose and easy to check: a burst
// of stdout, stdout and stderr lines interleaved, a second burst, and a last
// word written right before exit. The end-to-end tests run it through husk-vmm
// and the engines and compare what arrived with what was written.
#pragma once

#include <string>

namespace husk::test {

struct OutputBurst {
    size_t first_mib = 2;
    size_t second_mib = 0;
    int lines = 200;

    // A busybox sh script.
    std::string script() const {
        std::string s = "dd if=/dev/zero bs=65536 count=" + std::to_string(first_mib * 16) + " 2>/dev/null; ";
        s += "i=0; while [ $i -lt " + std::to_string(lines) +
             " ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done; ";
        if (second_mib) s += "dd if=/dev/zero bs=65536 count=" + std::to_string(second_mib * 16) + " 2>/dev/null; ";
        s += "printf last";
        return s;
    }
    std::string expected_stdout() const {
        std::string s(first_mib << 20, '\0');
        for (int i = 0; i < lines; ++i) s += "out " + std::to_string(i) + "\n";
        s.append(second_mib << 20, '\0');
        return s + "last";
    }
    std::string expected_stderr() const {
        std::string s;
        for (int i = 0; i < lines; ++i) s += "err " + std::to_string(i) + "\n";
        return s;
    }
    // "" when `out` and `err` are what the script wrote; else what differs, briefly.
    std::string compare(const std::string& out, const std::string& err) const {
        std::string want_out = expected_stdout(), want_err = expected_stderr();
        std::string why;
        if (out != want_out)
            why += "stdout: " + std::to_string(out.size()) + " bytes, want " + std::to_string(want_out.size()) + "; ";
        if (err != want_err)
            why += "stderr: " + std::to_string(err.size()) + " bytes, want " + std::to_string(want_err.size()) + "; ";
        return why;
    }
};

}  // namespace husk::test
