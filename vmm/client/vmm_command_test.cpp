#include "vmm/client/vmm_command.h"

#include <gtest/gtest.h>

namespace husk {
namespace {

using Argv = std::vector<std::string>;

TEST(VmmCommand, ABootNamesKernelSizesAndDevices) {
    VmmCommand c;
    c.vmm = "husk-vmm";
    c.kernel = "/k";
    c.initramfs = "/i";
    c.memory_mib = 128;
    c.vcpus = 2;
    c.drives = {"/d"};
    c.vsock_socket = "/v";
    c.console = VmmCommand::Console::None;
    c.snapshot_on_ready = "/s";
    EXPECT_EQ(c.argv(), (Argv{"husk-vmm", "--kernel", "/k", "--initramfs", "/i", "--memory", "128", "--vcpus", "2",
                              "--drive", "/d", "--vsock", "/v", "--snapshot-on-ready", "/s", "--console", "none"}));
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
    c.ready_fd = 3;
    c.log = "/l";
    c.log_format = VmmCommand::LogFormat::Json;
    c.debug = true;
    EXPECT_EQ(c.argv(), (Argv{"husk-vmm", "--restore", "/t", "--drive", "/rootfs.img", "--api", "/a", "--container",
                              "/b/container.specs", "--wait-for-start", "--ready-fd", "3", "--log", "/l",
                              "--log-format", "json", "--debug"}));
}

}  // namespace
}  // namespace husk
