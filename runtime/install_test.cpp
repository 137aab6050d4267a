// husk install / uninstall: the config edits (runtime/install.h), then the
// built husk binary end to end on a temporary /etc (HUSK_INSTALL_ROOT).
#include "runtime/install.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/shell_capture.h"
#include "vmm/base/toml.h"

namespace husk::runtime {
namespace {

namespace fs = std::filesystem;
using OrderedJson = nlohmann::ordered_json;

constexpr const char* kHusk = "/usr/local/bin/husk";

std::string error_of(const Result<std::string>& r) {
    return r ? "(no error)" : r.error().message();
}

// ---- Docker: daemon.json ----

TEST(InstallDocker, AddsHuskAndKeepsEveryOtherKeyInOrder) {
    std::string before =
        R"({"log-driver": "journald", "runtimes": {"crun": {"path": "/usr/bin/crun"}}, "storage-driver": "overlay2"})";
    auto after = docker_with_husk(before, kHusk);
    ASSERT_TRUE(after) << error_of(after);
    auto j = OrderedJson::parse(after.value());
    std::vector<std::string> keys;
    for (auto& [k, v] : j.items()) keys.push_back(k);
    EXPECT_EQ(keys, (std::vector<std::string>{"log-driver", "runtimes", "storage-driver"}));
    EXPECT_EQ(j["log-driver"], "journald");
    EXPECT_EQ(j["storage-driver"], "overlay2");
    EXPECT_EQ(j["runtimes"]["crun"]["path"], "/usr/bin/crun");
    EXPECT_EQ(j["runtimes"]["husk"], (OrderedJson{{"path", kHusk}}));
}

TEST(InstallDocker, NoFileBecomesJustTheRuntime) {
    for (const char* empty : {"", "  \n"}) {
        auto after = docker_with_husk(empty, kHusk);
        ASSERT_TRUE(after) << error_of(after);
        EXPECT_EQ(OrderedJson::parse(after.value()),
                  OrderedJson::parse(R"({"runtimes": {"husk": {"path": ")" + std::string(kHusk) + R"("}}})"));
    }
}

TEST(InstallDocker, IdempotentAndUpdatesAMovedBinary) {
    auto once = docker_with_husk(R"({"debug": true})", kHusk);
    ASSERT_TRUE(once);
    auto twice = docker_with_husk(once.value(), kHusk);
    ASSERT_TRUE(twice);
    EXPECT_EQ(twice.value(), once.value());  // byte for byte: "already registered"
    // A user's runtimeArgs stay; only the path moves.
    auto with_args =
        docker_with_husk(R"({"runtimes": {"husk": {"path": "/old/husk", "runtimeArgs": ["--debug"]}}})", kHusk);
    ASSERT_TRUE(with_args);
    auto j = OrderedJson::parse(with_args.value());
    EXPECT_EQ(j["runtimes"]["husk"]["path"], kHusk);
    EXPECT_EQ(j["runtimes"]["husk"]["runtimeArgs"], OrderedJson::array({"--debug"}));
}

TEST(InstallDocker, MalformedIsRefused) {
    EXPECT_NE(error_of(docker_with_husk("{ \"debug\": tru", kHusk)).find("not valid JSON: parse error at line 1"),
              std::string::npos)
        << error_of(docker_with_husk("{ \"debug\": tru", kHusk));
    EXPECT_NE(error_of(docker_with_husk("[1, 2]", kHusk)).find("not a JSON object"), std::string::npos);
    EXPECT_NE(error_of(docker_with_husk(R"({"runtimes": 3})", kHusk)).find("\"runtimes\" is not an object"),
              std::string::npos);
    EXPECT_NE(error_of(docker_with_husk(R"({"runtimes": {"husk": "/x"}})", kHusk)).find("is not an object"),
              std::string::npos);
    EXPECT_FALSE(docker_without_husk("{ nope"));
}

TEST(InstallDocker, RemoveTakesOutExactlyWhatAddPutIn) {
    std::string original = R"({"debug": true, "runtimes": {"crun": {"path": "/usr/bin/crun"}}})";
    auto added = docker_with_husk(original, kHusk);
    ASSERT_TRUE(added);
    auto removed = docker_without_husk(added.value());
    ASSERT_TRUE(removed) << error_of(removed);
    EXPECT_EQ(OrderedJson::parse(removed.value()), OrderedJson::parse(original));
    // The "runtimes" object husk's entry made goes with it.
    auto only = docker_without_husk(docker_with_husk(R"({"debug": true})", kHusk).value());
    ASSERT_TRUE(only);
    EXPECT_EQ(OrderedJson::parse(only.value()), OrderedJson::parse(R"({"debug": true})"));
    // Nothing to remove: the text comes back as it was.
    for (const std::string& text : {std::string(R"({ "debug" : true })"), std::string(""), original})
        EXPECT_EQ(docker_without_husk(text).value(), text);
    // dockerd would not start with its default runtime gone.
    EXPECT_NE(error_of(docker_without_husk(R"({"default-runtime": "husk", "runtimes": {"husk": {"path": "/h"}}})"))
                  .find("\"default-runtime\" is husk"),
              std::string::npos);
}

// ---- containerd: config.toml ----

constexpr const char* kV2Config =
    "version = 2\n"
    "root = \"/var/lib/containerd\"\n"
    "\n"
    "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
    "  default_runtime_name = \"runc\"\n"
    "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
    "    runtime_type = \"io.containerd.runc.v2\"\n";

std::string binary_name(const std::string& text, const std::string& plugin) {
    auto doc = toml::parse(text);
    return doc["plugins"][plugin]["containerd"]["runtimes"]["husk"]["options"]["BinaryName"].value_or(std::string());
}

TEST(InstallContainerd, BlockAppendedAndTheFileKept) {
    auto after = containerd_with_husk(kV2Config, kHusk);
    ASSERT_TRUE(after) << error_of(after);
    EXPECT_EQ(after.value().substr(0, std::strlen(kV2Config)), kV2Config);
    EXPECT_EQ(after.value().substr(std::strlen(kV2Config)),
              "\n# husk install: begin\n"
              "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.husk]\n"
              "  runtime_type = \"io.containerd.runc.v2\"\n"
              "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.husk.options]\n"
              "    BinaryName = \"/usr/local/bin/husk\"\n"
              "# husk install: end\n");
    EXPECT_EQ(binary_name(after.value(), "io.containerd.grpc.v1.cri"), kHusk);
    auto doc = toml::parse(after.value());
    EXPECT_EQ(doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["husk"]["runtime_type"].value_or(
                  std::string()),
              "io.containerd.runc.v2");
    auto again = containerd_with_husk(after.value(), kHusk);
    ASSERT_TRUE(again);
    EXPECT_EQ(again.value(), after.value());
}

TEST(InstallContainerd, NoFileBecomesVersion2AndTheBlock) {
    auto after = containerd_with_husk("", kHusk);
    ASSERT_TRUE(after) << error_of(after);
    EXPECT_EQ(after.value().rfind("version = 2\n\n# husk install: begin\n", 0), 0u) << after.value();
    EXPECT_EQ(binary_name(after.value(), "io.containerd.grpc.v1.cri"), kHusk);
    EXPECT_EQ(containerd_with_husk(after.value(), kHusk).value(), after.value());
}

TEST(InstallContainerd, BlockReplacedInPlace) {
    std::string first = containerd_with_husk(kV2Config, "/opt/old/husk").value();
    std::string tail = "\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/opt/cni/bin\"\n";
    auto moved = containerd_with_husk(first + tail, kHusk);
    ASSERT_TRUE(moved) << error_of(moved);
    EXPECT_EQ(moved.value(), containerd_with_husk(kV2Config, kHusk).value() + tail);
    EXPECT_EQ(moved.value().find("/opt/old/husk"), std::string::npos);
    EXPECT_EQ(binary_name(moved.value(), "io.containerd.grpc.v1.cri"), kHusk);
}

TEST(InstallContainerd, BlockRemovedRestoresTheFile) {
    std::string added = containerd_with_husk(kV2Config, kHusk).value();
    auto removed = containerd_without_husk(added);
    ASSERT_TRUE(removed) << error_of(removed);
    EXPECT_EQ(removed.value(), kV2Config);
    // In the middle of the file, too; and a file without the block is left as it is.
    std::string tail = "[debug]\n  level = \"info\"\n";
    EXPECT_EQ(containerd_without_husk(added + tail).value(), std::string(kV2Config) + tail);
    EXPECT_EQ(containerd_without_husk(kV2Config).value(), kV2Config);
    EXPECT_EQ(containerd_without_husk("").value(), "");
}

TEST(InstallContainerd, RefusesHusksTableOutsideTheMarkers) {
    std::string table = std::string(kV2Config) +
                        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.husk]\n"
                        "  runtime_type = \"io.containerd.runc.v2\"\n";
    auto r = containerd_with_husk(table, kHusk);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("runtimes.husk] is defined outside husk install's"), std::string::npos)
        << r.error().message();
    // However it is spelled: an inline table under the runtimes table.
    std::string inline_husk =
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\nhusk = { runtime_type = \"x\" }\n";
    EXPECT_NE(error_of(containerd_with_husk(inline_husk, kHusk)).find("defined outside"), std::string::npos);
    // Also when husk's own block is there as well.
    std::string both = containerd_with_husk(kV2Config, kHusk).value() +
                       "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.husk.options]\n  x = 1\n";
    EXPECT_NE(error_of(containerd_with_husk(both, kHusk)).find("defined outside"), std::string::npos);
}

TEST(InstallContainerd, TheConfigVersionNamesThePlugin) {
    // containerd 2.x's default config: version 3, runtimes under cri.v1.runtime.
    std::string v3 =
        "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc'\n";
    auto after3 = containerd_with_husk(v3, kHusk);
    ASSERT_TRUE(after3) << error_of(after3);
    EXPECT_EQ(binary_name(after3.value(), "io.containerd.cri.v1.runtime"), kHusk);
    // No `version`: version 1, as the containerd.io package (Docker's) ships it.
    std::string v1 = "disabled_plugins = [\"cri\"]\n";
    auto after1 = containerd_with_husk(v1, kHusk);
    ASSERT_TRUE(after1) << error_of(after1);
    EXPECT_NE(after1.value().find("[plugins.cri.containerd.runtimes.husk]"), std::string::npos) << after1.value();
    EXPECT_EQ(binary_name(after1.value(), "cri"), kHusk);
    EXPECT_NE(error_of(containerd_with_husk("version = 9\n", kHusk)).find("config version 9"), std::string::npos);
}

TEST(InstallContainerd, RefusesWhatItCannotEditSafely) {
    EXPECT_NE(error_of(containerd_with_husk("version = 2\n[plugins\n", kHusk)).find("not valid TOML: line 2"),
              std::string::npos)
        << error_of(containerd_with_husk("version = 2\n[plugins\n", kHusk));
    // A runtimes table written inline cannot take a [runtimes.husk] table after it.
    std::string inline_runtimes =
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = { runc = { runtime_type = "
        "\"io.containerd.runc.v2\" } }\n";
    EXPECT_NE(error_of(containerd_with_husk(inline_runtimes, kHusk)).find("register husk by hand"), std::string::npos)
        << error_of(containerd_with_husk(inline_runtimes, kHusk));
    EXPECT_NE(error_of(containerd_with_husk(std::string(kV2Config) + "# husk install: begin\n", kHusk))
                  .find("without its end"),
              std::string::npos);
    EXPECT_NE(
        error_of(containerd_without_husk(std::string(kV2Config) + "# husk install: end\n")).find("without its begin"),
        std::string::npos);
    std::string husk_default = containerd_with_husk(
                                   "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
                                   "  default_runtime_name = \"husk\"\n",
                                   kHusk)
                                   .value();
    EXPECT_NE(error_of(containerd_without_husk(husk_default)).find("default_runtime_name is husk"), std::string::npos);
}

TEST(InstallContainerd, PathsAreTomlEscaped) {
    std::string odd = "/opt/a \"b\"\\c/husk";
    auto after = containerd_with_husk(kV2Config, odd);
    ASSERT_TRUE(after) << error_of(after);
    EXPECT_EQ(binary_name(after.value(), "io.containerd.grpc.v1.cri"), odd);
}

// ---- Podman: the drop-in ----

TEST(InstallPodman, DropIn) {
    std::string text = podman_dropin(kHusk);
    EXPECT_NE(text.find("[engine.runtimes]\nhusk = [\"/usr/local/bin/husk\"]\n"), std::string::npos) << text;
    auto doc = toml::parse(text);
    EXPECT_EQ(doc["engine"]["runtimes"]["husk"][0].value_or(std::string()), kHusk);
    auto odd = toml::parse(podman_dropin("/a\"b/husk"));
    EXPECT_EQ(odd["engine"]["runtimes"]["husk"][0].value_or(std::string()), "/a\"b/husk");
}

// ---- The husk binary on a temporary /etc ----

class InstallCli : public ::testing::Test {
protected:
    void SetUp() override {
        const char* bin = std::getenv("HUSK_BIN");  // NOLINT(concurrency-mt-unsafe)
        if (!bin || !*bin) GTEST_SKIP() << "HUSK_BIN names the husk binary (meson test sets it)";
        char tmpl[] = "/tmp/husk-install-test.XXXXXX";
        m_root = ::mkdtemp(tmpl);
        m_husk = fs::canonical(bin).string();
    }
    void TearDown() override {
        if (!m_root.empty()) fs::remove_all(m_root);
    }

    // PATH is emptied so the host's own engines are not found; only what is under m_root is.
    std::pair<int, std::string> husk(const std::string& args) {
        std::string cmd = "HUSK_INSTALL_ROOT=" + m_root + " PATH=/nonexistent " + m_husk + " " + args + " 2>&1";
        return run_captured(cmd);
    }
    std::string read(const std::string& etc_path) {
        std::ifstream in(m_root + etc_path);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }
    void write(const std::string& etc_path, const std::string& text) {
        fs::create_directories(fs::path(m_root + etc_path).parent_path());
        std::ofstream(m_root + etc_path) << text;
    }
    bool exists(const std::string& etc_path) { return fs::exists(m_root + etc_path); }
    mode_t mode(const std::string& etc_path) {
        struct stat st {};
        ::stat((m_root + etc_path).c_str(), &st);
        return st.st_mode & 07777;
    }
    // Every file under m_root, with its text: what a command changed, or that it changed nothing.
    std::map<std::string, std::string> snapshot() {
        std::map<std::string, std::string> files;
        for (auto& entry : fs::recursive_directory_iterator(m_root))
            if (entry.is_regular_file())
                files[entry.path().string()] = read(entry.path().string().substr(m_root.size()));
        return files;
    }

    std::string m_root, m_husk;
};

constexpr const char* kDaemonJson = "/etc/docker/daemon.json";
constexpr const char* kConfigToml = "/etc/containerd/config.toml";
constexpr const char* kDropIn = "/etc/containers/containers.conf.d/husk.conf";

TEST_F(InstallCli, InstallTwiceDryRunAndUninstall) {
    std::string daemon = "{\n  \"log-driver\": \"journald\"\n}\n";
    write(kDaemonJson, daemon);
    ::chmod((m_root + kDaemonJson).c_str(), 0640);
    write(kConfigToml, kV2Config);
    fs::create_directories(m_root + "/etc/containers");
    auto original = snapshot();

    // --dry-run: the new text on stdout, nothing on disk.
    auto [dry_status, dry] = husk("install --dry-run");
    EXPECT_EQ(dry_status, 0) << dry;
    EXPECT_NE(dry.find("docker: would write " + m_root + kDaemonJson + ":\n{"), std::string::npos) << dry;
    EXPECT_NE(dry.find("BinaryName = \"" + m_husk + "\""), std::string::npos) << dry;
    EXPECT_NE(dry.find("podman: would write " + m_root + kDropIn), std::string::npos) << dry;
    EXPECT_EQ(snapshot(), original);

    // Every engine found under the root (no flags); the husk path is the binary's own.
    auto [status, out] = husk("install");
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("docker: registered husk (" + m_husk + ") in " + m_root + kDaemonJson), std::string::npos)
        << out;
    EXPECT_NE(out.find("systemctl restart docker"), std::string::npos) << out;
    EXPECT_NE(out.find("systemctl restart containerd"), std::string::npos) << out;
    EXPECT_NE(out.find("podman: registered husk"), std::string::npos) << out;
    auto j = nlohmann::json::parse(read(kDaemonJson));
    EXPECT_EQ(j["log-driver"], "journald");
    EXPECT_EQ(j["runtimes"]["husk"]["path"], m_husk);
    EXPECT_EQ(mode(kDaemonJson), 0640u);
    EXPECT_EQ(binary_name(read(kConfigToml), "io.containerd.grpc.v1.cri"), m_husk);
    EXPECT_EQ(read(kDropIn), podman_dropin(m_husk));
    EXPECT_EQ(mode(kDropIn), 0644u);
    auto installed = snapshot();
    EXPECT_EQ(installed.size(), original.size() + 1);  // the drop-in; no temporary file left behind

    // Twice: nothing changes, and it says so.
    auto [again_status, again] = husk("install");
    EXPECT_EQ(again_status, 0) << again;
    EXPECT_NE(again.find("docker: husk already registered in"), std::string::npos) << again;
    EXPECT_NE(again.find("containerd: husk already registered in"), std::string::npos) << again;
    EXPECT_NE(again.find("podman: husk already registered in"), std::string::npos) << again;
    EXPECT_EQ(again.find("restart"), std::string::npos) << again;
    EXPECT_EQ(snapshot(), installed);

    EXPECT_EQ(husk("uninstall --dry-run").first, 0);
    EXPECT_EQ(snapshot(), installed);

    auto [un_status, un] = husk("uninstall");
    EXPECT_EQ(un_status, 0) << un;
    EXPECT_NE(un.find("podman: removed " + m_root + kDropIn), std::string::npos) << un;
    EXPECT_EQ(nlohmann::json::parse(read(kDaemonJson)), nlohmann::json::parse(daemon));
    EXPECT_EQ(read(kConfigToml), kV2Config);
    EXPECT_FALSE(exists(kDropIn));
    EXPECT_EQ(mode(kDaemonJson), 0640u);
    auto [un_again_status, un_again] = husk("uninstall");
    EXPECT_EQ(un_again_status, 0) << un_again;
    EXPECT_NE(un_again.find("docker: husk not registered in"), std::string::npos) << un_again;
}

TEST_F(InstallCli, NamedEnginesOnlyAndCreatedWhenMissing) {
    auto [status, out] = husk("install --docker");
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("docker: not found on this host"), std::string::npos) << out;
    EXPECT_EQ(out.find("containerd"), std::string::npos) << out;
    EXPECT_EQ(nlohmann::json::parse(read(kDaemonJson))["runtimes"]["husk"]["path"], m_husk);
    EXPECT_FALSE(exists(kConfigToml));
    auto [c_status, c_out] = husk("install --containerd --path " + m_husk);
    EXPECT_EQ(c_status, 0) << c_out;
    EXPECT_EQ(read(kConfigToml).rfind("version = 2\n", 0), 0u);
    // Nothing here at all and no engine named: an error, not a silent no-op.
    fs::remove_all(m_root + "/etc");
    auto [none_status, none] = husk("install");
    EXPECT_EQ(none_status, 1);
    EXPECT_NE(none.find("no container engine found"), std::string::npos) << none;
    EXPECT_EQ(husk("uninstall").first, 0);
}

TEST_F(InstallCli, MalformedDaemonJsonIsNamedAndLeftAsItIs) {
    write(kDaemonJson, "{ \"debug\": tru");
    write(kConfigToml, kV2Config);
    auto before = snapshot();
    auto [status, out] = husk("install --docker --containerd");
    EXPECT_EQ(status, 1);
    EXPECT_NE(out.find(m_root + kDaemonJson + ": not valid JSON"), std::string::npos) << out;
    EXPECT_NE(out.find("nothing was changed"), std::string::npos) << out;
    EXPECT_EQ(snapshot(), before);  // containerd's config, which was fine, is untouched too
}

TEST_F(InstallCli, PathMustBeAnAbsoluteExecutable) {
    auto [s1, o1] = husk("install --docker --path husk");
    EXPECT_EQ(s1, 1);
    EXPECT_NE(o1.find("--path must be an absolute path"), std::string::npos) << o1;
    auto [s2, o2] = husk("install --docker --path " + m_root + "/nope");
    EXPECT_EQ(s2, 1);
    EXPECT_NE(o2.find("No such file or directory"), std::string::npos) << o2;
    EXPECT_FALSE(exists(kDaemonJson));
    EXPECT_EQ(husk("uninstall --path /x").first, 1);  // uninstall takes no --path
    auto [s3, o3] = husk("install --help");
    EXPECT_EQ(s3, 0);
    EXPECT_NE(o3.find("install   [--docker]"), std::string::npos) << o3;
}

}  // namespace
}  // namespace husk::runtime
