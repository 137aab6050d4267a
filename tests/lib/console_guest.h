// ConsoleGuestTest: the native tier's fixture for a tiny guest driven over its
// serial console (a command line in; an answer line, then "ready") and over
// husk-vmm's control socket. Each test gets its own temporary directory, and
// husk-vmm logs into it.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/lib/subprocess.h"
#include "vmm/client/api_client.h"

namespace husk::test {

class ConsoleGuestTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/husk-native-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(dir); }

    static std::string vmm() { return env_or("HUSK_VMM"); }
    static std::string guest(const std::string& name) { return env_or("HUSK_GUESTS") + "/" + name + ".elf"; }

    // husk-vmm with console input from the test, its API socket at `api`.
    std::unique_ptr<RunningProcess> start(std::vector<std::string> args, const std::string& api) {
        std::vector<std::string> argv = {vmm(), "--console-input", "stdin", "--api", api, "--log", dir + "/log"};
        argv.insert(argv.end(), args.begin(), args.end());
        auto p = std::make_unique<RunningProcess>(argv, true);
        EXPECT_TRUE(wait_until([&] { return std::filesystem::exists(api); }, 30)) << log();
        return p;
    }
    // Sends one command line; returns the guest's answer line.
    std::string ask(RunningProcess& p, const std::string& line) {
        p.clear_seen();
        p.write_stdin(line + "\n");
        if (!p.wait_for_stdout("ready\n", 60)) return "timeout: " + p.seen();
        std::string out = p.seen();
        return out.substr(0, out.find('\n'));
    }
    nlohmann::json api(const std::string& socket, const nlohmann::json& request) {
        auto r = api_call(socket, request, 30000);
        if (!r) return {{"error", r.error().message()}};
        return r.value();
    }
    std::string log() {
        std::ifstream in(dir + "/log");
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    // The guests here exit 0 on "q".
    void quit(RunningProcess& p) {
        p.write_stdin("q\n");
        EXPECT_EQ(p.wait_exit(30), 0) << log();
    }

    std::string dir;
};

}  // namespace husk::test
