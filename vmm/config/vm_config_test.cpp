#include "vmm/config/vm_config.h"

#include <gtest/gtest.h>

namespace husk {
namespace {

TEST(VmConfig, ParsesAllKeys) {
    auto c = parse_vm_toml(R"(
[boot]
kernel = "/k/vmlinux"
initramfs = "/k/initrd"
cmdline = "console=ttyS0"
entry = "pvh"
[machine]
vcpus = 2
memory_mib = 256
hugepages = true
[console]
output = "none"
input = "stdin"
)",
                           "vm.toml");
    ASSERT_FALSE(c.is_error()) << c.error().message();
    EXPECT_EQ(c.value().kernel, "/k/vmlinux");
    EXPECT_EQ(c.value().initramfs, "/k/initrd");
    EXPECT_EQ(c.value().entry, "pvh");
    EXPECT_EQ(c.value().vcpus, 2u);
    EXPECT_EQ(c.value().memory_mib, 256u);
    EXPECT_TRUE(c.value().hugepages);
    EXPECT_EQ(c.value().console_output, "none");
    EXPECT_FALSE(validate(c.value()).is_error());
}

TEST(VmConfig, DefaultsAreSane) {
    VmConfig c;
    c.kernel = "/k";
    EXPECT_FALSE(validate(c).is_error());
    EXPECT_EQ(c.vcpus, 1u);
    EXPECT_NE(c.cmdline.find("console=ttyS0"), std::string::npos);
}

TEST(VmConfig, UnknownKeyIsNamedWithLocation) {
    auto c = parse_vm_toml("[machine]\nvcpu = 2\n", "vm.toml");
    ASSERT_TRUE(c.is_error());
    EXPECT_EQ(c.error().message(), "vm.toml:2:8: unknown key `machine.vcpu` (see husk-vmm --help)");
}

TEST(VmConfig, UnknownTableIsNamed) {
    auto c = parse_vm_toml("[disk]\npath = \"x\"\n", "vm.toml");
    ASSERT_TRUE(c.is_error());
    EXPECT_NE(c.error().message().find("unknown key `disk.path`"), std::string::npos);
}

TEST(VmConfig, WrongTypeIsNamed) {
    auto c = parse_vm_toml("[machine]\nvcpus = \"two\"\n", "vm.toml");
    ASSERT_TRUE(c.is_error());
    EXPECT_NE(c.error().message().find("`machine.vcpus` must be a integer"), std::string::npos);
}

TEST(VmConfig, SyntaxErrorHasLineAndColumn) {
    auto c = parse_vm_toml("[boot\nkernel = 1\n", "bad.toml");
    ASSERT_TRUE(c.is_error());
    EXPECT_EQ(c.error().message().rfind("bad.toml:1:", 0), 0u) << c.error().message();
}

TEST(VmConfig, NegativeIsOutOfRange) {
    auto c = parse_vm_toml("[machine]\nmemory_mib = -5\n", "vm.toml");
    ASSERT_TRUE(c.is_error());
    EXPECT_NE(c.error().message().find("out of range"), std::string::npos);
}

TEST(VmConfig, ValidationMessagesNameTheKey) {
    VmConfig c;
    EXPECT_NE(validate(c).error().message().find("boot.kernel"), std::string::npos);
    c.kernel = "/k";
    c.vcpus = 0;
    EXPECT_NE(validate(c).error().message().find("machine.vcpus"), std::string::npos);
    c.vcpus = 1;
    c.memory_mib = 8;
    EXPECT_NE(validate(c).error().message().find("machine.memory_mib"), std::string::npos);
    c.memory_mib = 64;
    c.entry = "efi";
    EXPECT_NE(validate(c).error().message().find("boot.entry"), std::string::npos);
}

}  // namespace
}  // namespace husk
