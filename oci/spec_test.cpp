#include "oci/spec.h"

#include <gtest/gtest.h>

namespace husk::oci {
namespace {

constexpr const char* kDocker = R"({
  "ociVersion": "1.0.2-dev",
  "process": {
    "terminal": true, "consoleSize": {"height": 40, "width": 120},
    "user": {"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [10, 11]},
    "args": ["sh", "-c", "echo hi"],
    "env": ["PATH=/usr/bin:/bin", "HOSTNAME=box"],
    "cwd": "/work",
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1024}],
    "noNewPrivileges": true, "oomScoreAdj": 0,
    "capabilities": {"bounding": ["CAP_CHOWN"]}
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "box",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/docker/containers/x/hosts", "options": ["rbind", "rprivate"]}
  ],
  "hooks": {"prestart": [{"path": "/usr/bin/hook", "args": ["hook", "prestart"], "timeout": 5}]},
  "annotations": {"io.husk.vcpus": "2"},
  "linux": {
    "resources": {"memory": {"limit": 268435456}, "cpu": {"quota": 150000, "period": 100000, "cpus": "0-3"},
                  "pids": {"limit": 100}},
    "cgroupsPath": "/docker/x",
    "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
    "namespaces": [{"type": "pid"}]
  }
})";

TEST(Spec, ParsesWhatDockerWrites) {
    auto s = parse_spec(kDocker);
    ASSERT_TRUE(s) << s.error().message();
    const Spec& spec = s.value();
    ASSERT_TRUE(spec.process);
    EXPECT_TRUE(spec.process->terminal);
    EXPECT_EQ(spec.process->console_height, 40);
    EXPECT_EQ(spec.process->user.uid, 1000u);
    EXPECT_EQ(spec.process->user.umask, 18u);
    EXPECT_EQ(spec.process->user.additional_gids, (std::vector<uint32_t>{10, 11}));
    EXPECT_EQ(spec.process->args.size(), 3u);
    EXPECT_EQ(spec.process->cwd, "/work");
    EXPECT_EQ(spec.process->rlimits[0].soft, 1024u);
    EXPECT_TRUE(spec.process->no_new_privileges);
    EXPECT_EQ(spec.process->oom_score_adj, 0);
    EXPECT_TRUE(spec.root.readonly);
    EXPECT_EQ(spec.mounts.size(), 2u);
    EXPECT_EQ(spec.mounts[1].options[0], "rbind");
    EXPECT_EQ(spec.hooks.prestart[0].timeout, 5);
    EXPECT_EQ(spec.annotations.at("io.husk.vcpus"), "2");
    EXPECT_EQ(spec.linux_.resources.memory_limit, 268435456);
    EXPECT_EQ(spec.linux_.resources.pids_limit, 100);
    EXPECT_EQ(vcpus_for(spec.linux_.resources), 2u);
    EXPECT_EQ(spec.linux_.masked_paths[0], "/proc/kcore");
    ASSERT_EQ(spec.linux_.namespaces.size(), 1u);
    EXPECT_EQ(spec.linux_.namespaces[0].type, "pid");
}

std::string error_of(const std::string& json) {
    auto s = parse_spec(json);
    return s ? "" : s.error().message();
}

TEST(Spec, ErrorsNameTheFieldAndFile) {
    EXPECT_EQ(error_of("{"), error_of("{"));  // stable
    EXPECT_NE(error_of("{").find("config.json: not valid JSON"), std::string::npos) << error_of("{");
    EXPECT_EQ(error_of("[]"), "config.json: expected a JSON object");
    // A number no double holds is refused like any other bad JSON (the fuzzer found it aborting husk).
    EXPECT_NE(error_of(R"({"ociVersion": 1e999999})").find("config.json: not valid JSON: number overflow"),
              std::string::npos)
        << error_of(R"({"ociVersion": 1e999999})");
    EXPECT_EQ(error_of(R"({"root": {"path": "r"}})"), "config.json: ociVersion: is required");
    EXPECT_EQ(error_of(R"({"ociVersion": "2.0.0", "root": {"path": "r"}})"),
              "config.json: ociVersion: `2.0.0` is not supported (husk implements runtime-spec 1.x)");
    EXPECT_EQ(error_of(R"({"ociVersion": "1.0.0"})"), "config.json: root: is required");
    const std::string base = R"({"ociVersion": "1.0.0", "root": {"path": "r"}, )";
    EXPECT_EQ(error_of(base + R"("process": {"user": {"uid": 0, "gid": 0}, "args": [], "cwd": "/"}})"),
              "config.json: process.args: must not be empty");
    EXPECT_EQ(error_of(base + R"("process": {"user": {"uid": 0, "gid": 0}, "args": ["a", 3], "cwd": "/"}})"),
              "config.json: process.args[1]: expected a string");
    EXPECT_EQ(error_of(base + R"("process": {"user": {"uid": -1, "gid": 0}, "args": ["a"], "cwd": "/"}})"),
              "config.json: process.user.uid: out of range");
    EXPECT_EQ(error_of(base + R"("process": {"user": {"uid": 0, "gid": 0}, "args": ["a"], "cwd": "rel"}})"),
              "config.json: process.cwd: must be an absolute path");
    EXPECT_EQ(error_of(base + R"("mounts": [{"destination": "tmp"}]})"),
              "config.json: mounts[0].destination: must be an absolute path");
    EXPECT_EQ(error_of(base + R"("linux": {"resources": {"cpu": {"cpus": "3-1"}}}})"),
              "config.json: linux.resources.cpu.cpus: malformed cpuset `3-1`");
    EXPECT_EQ(error_of(base + R"("linux": {"namespaces": [{"type": "bogus"}]}})"),
              "config.json: linux.namespaces[0].type: `bogus` is not a namespace type");
    EXPECT_EQ(error_of(base + R"("hooks": {"poststop": [{"path": "hook"}]}})"),
              "config.json: hooks.poststop[0].path: must be an absolute path");
}

TEST(Spec, ProcessJsonForExec) {
    auto p = parse_process(R"({"user": {"uid": 0, "gid": 0}, "args": ["ls"], "cwd": "/"})");
    ASSERT_TRUE(p) << p.error().message();
    EXPECT_EQ(p.value().args[0], "ls");
    auto bad = parse_process(R"({"args": ["ls"], "cwd": "/"})");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message(), "process.json: user: is required");
}

TEST(Spec, CpusetSizes) {
    EXPECT_EQ(cpuset_size("0-3,6").value(), 5u);
    EXPECT_EQ(cpuset_size("2").value(), 1u);
    EXPECT_FALSE(cpuset_size("a"));
    EXPECT_FALSE(cpuset_size("1,"));
    EXPECT_FALSE(cpuset_size(""));
    Resources none;
    EXPECT_FALSE(vcpus_for(none));
    Resources quota;
    quota.cpu_quota = 50000;
    EXPECT_EQ(vcpus_for(quota), 1u);
}

}  // namespace
}  // namespace husk::oci
