#include "vmm/client/agent_specs.h"

#include <gtest/gtest.h>
#include <linux/seccomp.h>

#include <algorithm>

namespace husk {
namespace {

oci::Spec parse(const std::string& linux_json, const std::string& process_extra = "") {
    std::string json = R"({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0})" +
                       process_extra + R"(}, "linux": )" + linux_json + "}";
    auto spec = oci::parse_spec(json);
    EXPECT_TRUE(spec) << spec.error().message();
    return spec ? spec.value() : oci::Spec{};
}

bool mentions(const std::vector<std::string>& lines, const std::string& text) {
    return std::any_of(lines.begin(), lines.end(), [&](const auto& l) { return l.find(text) != std::string::npos; });
}

TEST(AgentSpecs, NamespacesInTheGuestAndWhatCannotBeJoined) {
    auto specs = agent_specs_for(parse(
        R"({"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"},
                           {"type": "network", "path": "/run/netns/x"}, {"type": "user"}]})"));
    ASSERT_TRUE(specs) << specs.error().message();
    EXPECT_EQ(specs.value().container.namespaces,
              agent::kNamespacePid | agent::kNamespaceIpc | agent::kNamespaceUts | agent::kNamespaceCgroup);
    EXPECT_TRUE(mentions(specs.value().ignored, "the user namespace"));
    auto plain = agent_specs_for(parse(R"({"namespaces": [{"type": "mount"}]})"));
    ASSERT_TRUE(plain);
    EXPECT_EQ(plain.value().container.namespaces, 0u);
    // Another container's PID namespace is in another VM.
    auto joined = agent_specs_for(parse(R"({"namespaces": [{"type": "pid", "path": "/proc/42/ns/pid"}]})"));
    ASSERT_FALSE(joined);
    EXPECT_NE(joined.error().message().find("the pid namespace at `/proc/42/ns/pid` cannot be joined"),
              std::string::npos)
        << joined.error().message();
}

// Docker's default set for root is 0xa80425fb; unknown names are left out and logged.
TEST(AgentSpecs, CapabilityNamesBecomeBitsAndUnknownOnesAreLogged) {
    const std::string docker = R"(["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"])";
    auto specs = agent_specs_for(parse("{}", R"(, "capabilities": {"bounding": )" + docker + R"(, "effective": )" +
                                                 docker + R"(, "permitted": ["CAP_KILL", "CAP_FROBNICATE"]})"));
    ASSERT_TRUE(specs) << specs.error().message();
    ASSERT_TRUE(specs.value().process.capabilities);
    const agent::Capabilities& caps = *specs.value().process.capabilities;
    EXPECT_EQ(caps.bounding, 0xa80425fbu);
    EXPECT_EQ(caps.effective, 0xa80425fbu);
    EXPECT_EQ(caps.permitted, 1u << 5);
    EXPECT_EQ(caps.inheritable, 0u);
    EXPECT_EQ(caps.ambient, 0u);
    EXPECT_TRUE(mentions(specs.value().ignored, "capability CAP_FROBNICATE"));
    // Without process.capabilities, nothing is changed.
    auto none = agent_specs_for(parse("{}"));
    ASSERT_TRUE(none);
    EXPECT_FALSE(none.value().process.capabilities);
}

// As runc reads linux.resources.pids.limit: 0 sets nothing, a negative limit is none.
TEST(AgentSpecs, APositivePidsLimitGoesToTheGuestOnly) {
    auto limited = agent_specs_for(parse(R"({"resources": {"pids": {"limit": 8}}})"));
    ASSERT_TRUE(limited) << limited.error().message();
    EXPECT_EQ(limited.value().container.pids_limit, 8u);
    for (const char* none : {R"({"resources": {"pids": {"limit": 0}}})", R"({"resources": {"pids": {"limit": -1}}})",
                             R"({"resources": {}})"}) {
        auto specs = agent_specs_for(parse(none));
        ASSERT_TRUE(specs) << specs.error().message();
        EXPECT_FALSE(specs.value().container.pids_limit) << none;
    }
}

TEST(AgentSpecs, SeccompIsResolvedToNumbers) {
    auto specs = agent_specs_for(parse(R"({"seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"], "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                     {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}})"));
    ASSERT_TRUE(specs) << specs.error().message();
    ASSERT_TRUE(specs.value().container.seccomp);
    const agent::Seccomp& f = *specs.value().container.seccomp;
    EXPECT_EQ(f.default_action, agent::SeccompAction::Errno);
    EXPECT_EQ(f.default_errno, 1u);  // EPERM unless defaultErrnoRet says
    EXPECT_EQ(f.architectures, (std::vector<std::string>{"x86_64", "x32"}));
    EXPECT_EQ(f.flags, uint32_t(SECCOMP_FILTER_FLAG_SPEC_ALLOW));
    ASSERT_EQ(f.rules.size(), 3u);
    EXPECT_EQ(f.rules[1].errno_ret, 38u);
    ASSERT_EQ(f.rules[2].args.size(), 1u);
    EXPECT_EQ(f.rules[2].args[0].op, agent::SeccompOp::Equal);
    EXPECT_EQ(f.rules[2].args[0].value, 8u);
}

TEST(AgentSpecs, WhatCannotWorkInAVmIsRefusedByName) {
    auto notify = agent_specs_for(parse(R"({"seccomp": {"defaultAction": "SCMP_ACT_NOTIFY"}})"));
    ASSERT_FALSE(notify);
    EXPECT_NE(notify.error().message().find("SCMP_ACT_NOTIFY is not supported"), std::string::npos);
    auto listener =
        agent_specs_for(parse(R"({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/x.sock"}})"));
    ASSERT_FALSE(listener);
    EXPECT_NE(listener.error().message().find("listenerPath"), std::string::npos);
    auto sysctl = agent_specs_for(parse(R"({"sysctl": {"../../etc/passwd": "x"}})"));
    ASSERT_FALSE(sysctl);
    EXPECT_NE(sysctl.error().message().find("`../../etc/passwd` is not a sysctl name"), std::string::npos);
    EXPECT_FALSE(oci::parse_spec(R"({"ociVersion": "1.0.2", "root": {"path": "r"},
        "linux": {"seccomp": {"defaultAction": "SCMP_ACT_MAYBE"}}})"));
}

TEST(AgentSpecs, SysctlsPassAndSecurityLabelsAreLogged) {
    auto specs = agent_specs_for(parse(R"({"sysctl": {"net.ipv4.ip_unprivileged_port_start": "0",
                                                      "kernel.shmmax": "65536"}})",
                                       R"(, "apparmorProfile": "docker-default", "selinuxLabel": "system_u:x")"));
    ASSERT_TRUE(specs) << specs.error().message();
    EXPECT_EQ(specs.value().container.sysctls,
              (std::vector<agent::Sysctl>{{"kernel.shmmax", "65536"}, {"net.ipv4.ip_unprivileged_port_start", "0"}}));
    EXPECT_TRUE(mentions(specs.value().ignored, "process.apparmorProfile `docker-default`"));
    EXPECT_TRUE(mentions(specs.value().ignored, "process.selinuxLabel `system_u:x`"));
}

}  // namespace
}  // namespace husk
