#include "vmm/client/vmm_command.h"

#include <gtest/gtest.h>

#include "vmm/config/vm_config.h"

namespace husk {
namespace {

using Argv = std::vector<std::string>;

// What the runtime writes is what husk-vmm reads: every vm.toml goes back
// through husk-vmm's own parser.
VmConfig parsed(const VmmCommand& c) {
    auto text = c.vm_toml();
    EXPECT_TRUE(text) << text.error().message();
    auto config = parse_vm_toml(text.value(), "vm.toml");
    EXPECT_TRUE(config) << config.error().message() << "\n" << text.value();
    return config ? config.value() : VmConfig{};
}

TEST(VmmCommand, ABootNamesKernelSizesAndDevices) {
    VmmCommand c;
    c.vmm = "husk-vmm";
    c.kernel = "/k";
    c.initramfs = "/i";
    c.memory_mib = 128;
    c.vcpus = 2;
    c.drives = {"/d", "/e"};
    c.vsock_socket = "/v";
    c.vsock_dns_forward = "127.0.0.11:53";
    c.console = VmmCommand::Console::None;
    c.snapshot_on_ready = "/s";
    c.nics = {{"husk0", "02:00:00:00:00:01", false}, {"husk1", "", true}};
    VmConfig v = parsed(c);
    ASSERT_EQ(v.nics.size(), 2u);
    EXPECT_EQ(v.nics[0].tap, "husk0");
    EXPECT_EQ(v.nics[0].mac, "02:00:00:00:00:01");
    EXPECT_FALSE(v.nics[0].unplugged);
    EXPECT_EQ(v.nics[1].tap, "husk1");
    EXPECT_TRUE(v.nics[1].unplugged);
    EXPECT_EQ(v.kernel, "/k");
    EXPECT_EQ(v.initramfs, "/i");
    EXPECT_EQ(v.memory_mib, 128u);
    EXPECT_EQ(v.vcpus, 2u);
    ASSERT_EQ(v.drives.size(), 2u);
    EXPECT_EQ(v.drives[1].path, "/e");
    EXPECT_FALSE(v.drives[1].read_only);
    c.drives_read_only = true;
    EXPECT_TRUE(parsed(c).drives[0].read_only);
    EXPECT_EQ(v.vsock_socket, "/v");
    EXPECT_EQ(v.vsock_dns_forward, "127.0.0.11:53");
    EXPECT_EQ(v.console_output.kind, ConsoleOutput::Kind::None);
    EXPECT_EQ(v.snapshot_on_ready, "/s");
    EXPECT_EQ(c.argv("/run/vm.toml"), (Argv{"husk-vmm", "--config", "/run/vm.toml"}));
}

TEST(VmmCommand, ARestoreLeavesTheMachineToTheSnapshot) {
    VmmCommand c;
    c.vmm = "husk-vmm";
    c.kernel = "/k";  // ignored: the snapshot names the machine
    c.memory_mib = 128;
    c.restore = "/t";
    c.drives = {"/rootfs.img"};
    c.api_socket = "/a";
    c.container_specs = "/b/container.specs";
    c.wait_for_start = true;
    c.fs = true;
    c.shares = {{"0", "/vol/a", false}, {"1", "/vol/\"b\"", true}};
    c.ready_fd = 3;
    c.log = "/l";
    c.log_format = VmmCommand::LogFormat::Json;
    c.debug = true;
    VmConfig v = parsed(c);
    EXPECT_EQ(v.restore, "/t");
    EXPECT_EQ(v.kernel, "");
    EXPECT_EQ(v.api_socket, "/a");
    EXPECT_EQ(v.container_specs, "/b/container.specs");
    EXPECT_TRUE(v.container_wait_for_start);
    EXPECT_TRUE(v.fs);
    ASSERT_EQ(v.shares.size(), 2u);
    EXPECT_EQ(v.shares[0].path, "/vol/a");
    EXPECT_EQ(v.shares[1].name, "1");
    EXPECT_EQ(v.shares[1].path, "/vol/\"b\"");
    EXPECT_TRUE(v.shares[1].read_only);
    // Not in vm.toml: the ready fd and the log.
    EXPECT_EQ(c.argv("/s/vm.toml"), (Argv{"husk-vmm", "--config", "/s/vm.toml", "--ready-fd", "3", "--log", "/l",
                                          "--log-format", "json", "--debug"}));
}

TEST(VmmCommand, AnyUtf8PathRoundTripsAndOtherBytesAreRefused) {
    VmmCommand c;
    c.kernel = "/k";
    c.drives = {"/tmp/qu\"ote\\back\tslash", "/tmp/caf\xc3\xa9/\xf0\x9f\x93\xa6.img"};
    VmConfig v = parsed(c);
    ASSERT_EQ(v.drives.size(), 2u);
    EXPECT_EQ(v.drives[0].path, c.drives[0]);
    EXPECT_EQ(v.drives[1].path, c.drives[1]);
    for (const char* bad : {"/tmp/\xff", "/tmp/\xc3", "/tmp/\xc0\xaf", "/tmp/\xed\xa0\x80"}) {
        c.drives = {bad};
        auto text = c.vm_toml();
        ASSERT_FALSE(text) << bad;
        EXPECT_NE(text.error().message().find("is not UTF-8"), std::string::npos);
    }
}

}  // namespace
}  // namespace husk
