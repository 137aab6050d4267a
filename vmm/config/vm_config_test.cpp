#include "vmm/config/vm_config.h"

#include <arpa/inet.h>
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
    EXPECT_EQ(c.value().entry, BootEntry::Pvh);
    EXPECT_EQ(c.value().vcpus, 2u);
    EXPECT_EQ(c.value().memory_mib, 256u);
    EXPECT_TRUE(c.value().hugepages);
    EXPECT_EQ(c.value().console_output.kind, ConsoleOutput::Kind::None);
    EXPECT_FALSE(validate(c.value()).is_error());
}

TEST(VmConfig, Drives) {
    auto c = parse_vm_toml(R"(
[[drive]]
path = "/img/root.ext4"
read_only = true
id = "rootfs"
[[drive]]
path = "/img/data.raw"
direct = true
[devices]
rng = false
)",
                           "vm.toml");
    ASSERT_FALSE(c.is_error()) << c.error().message();
    ASSERT_EQ(c.value().drives.size(), 2u);
    EXPECT_EQ(c.value().drives[0].path, "/img/root.ext4");
    EXPECT_TRUE(c.value().drives[0].read_only);
    EXPECT_EQ(c.value().drives[0].id, "rootfs");
    EXPECT_TRUE(c.value().drives[1].direct);
    EXPECT_FALSE(c.value().rng);
    auto bad = parse_vm_toml("[[drive]]\npath = \"x\"\nreadonly = true\n", "vm.toml");
    ASSERT_TRUE(bad.is_error());
    EXPECT_NE(bad.error().message().find("unknown key `drive.readonly`"), std::string::npos);
    auto nopath = parse_vm_toml("[[drive]]\nid = \"x\"\n", "vm.toml");
    ASSERT_TRUE(nopath.is_error());
    EXPECT_NE(nopath.error().message().find("needs a path"), std::string::npos);
}

TEST(VmConfig, DriveFlag) {
    auto d = parse_drive_flag("/a/b.img,ro,direct,id=disk0").release_value();
    EXPECT_EQ(d.path, "/a/b.img");
    EXPECT_TRUE(d.read_only);
    EXPECT_TRUE(d.direct);
    EXPECT_EQ(d.id, "disk0");
    EXPECT_TRUE(parse_drive_flag("/a,rw").is_error());
    EXPECT_TRUE(parse_drive_flag(",ro").is_error());
}

TEST(VmConfig, SharesTurnOnTheFsDeviceAndAreChecked) {
    auto c = parse_vm_toml(R"(
[[share]]
name = "0"
path = "/srv/data"
[[share]]
name = "cfg"
path = "/etc/app"
read_only = true
)",
                           "vm.toml");
    ASSERT_FALSE(c.is_error()) << c.error().message();
    EXPECT_TRUE(c.value().fs);
    ASSERT_EQ(c.value().shares.size(), 2u);
    EXPECT_EQ(c.value().shares[0].path, "/srv/data");
    EXPECT_FALSE(c.value().shares[0].read_only);
    EXPECT_EQ(c.value().shares[1].name, "cfg");
    EXPECT_TRUE(c.value().shares[1].read_only);
    // The device alone, for a template that serves its restores' shares.
    auto alone = parse_vm_toml("[fs]\nenabled = true\n", "vm.toml");
    ASSERT_FALSE(alone.is_error());
    EXPECT_TRUE(alone.value().fs);
    EXPECT_TRUE(alone.value().shares.empty());

    auto unknown = parse_vm_toml("[[share]]\nname = \"a\"\npath = \"/x\"\nro = true\n", "vm.toml");
    ASSERT_TRUE(unknown.is_error());
    EXPECT_NE(unknown.error().message().find("unknown key `share.ro`"), std::string::npos);
    auto nopath = parse_vm_toml("[[share]]\nname = \"a\"\n", "vm.toml");
    ASSERT_TRUE(nopath.is_error());
    EXPECT_NE(nopath.error().message().find("needs a name and a path"), std::string::npos);

    VmConfig v;
    v.kernel = "/k";
    v.fs = true;
    for (const char* bad : {"..", ".", "a/b"}) {
        v.shares = {{bad, "/x", false}};
        auto r = validate(v);
        ASSERT_TRUE(r.is_error()) << bad;
        EXPECT_NE(r.error().message().find("one path component"), std::string::npos);
    }
    v.shares = {{"a", "/x", false}, {"a", "/y", false}};
    EXPECT_TRUE(validate(v).is_error());
    v.shares = {{"a", "/x", false}};
    EXPECT_FALSE(validate(v).is_error());
    v.fs = false;
    EXPECT_TRUE(validate(v).is_error());
}

TEST(VmConfig, ShareFlag) {
    auto s = parse_share_flag("data=/srv/data,ro").release_value();
    EXPECT_EQ(s.name, "data");
    EXPECT_EQ(s.path, "/srv/data");
    EXPECT_TRUE(s.read_only);
    auto rw = parse_share_flag("0=/a=b").release_value();
    EXPECT_EQ(rw.path, "/a=b");
    EXPECT_FALSE(rw.read_only);
    EXPECT_TRUE(parse_share_flag("/srv/data").is_error());
    EXPECT_TRUE(parse_share_flag("=/srv/data").is_error());
    EXPECT_TRUE(parse_share_flag("a=").is_error());
    EXPECT_TRUE(parse_share_flag("a=/x,rw").is_error());
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

// Inputs the fuzz target found, each once a crash: now a parse error that names the file.
TEST(VmConfig, KeysTheParserChokesOnAreErrors) {
    for (const char* text : {"[+achine]\nvcpus = 0\n", "[machine]\n+vcpus = 2\n", "a.+b = 1\n"}) {
        auto c = parse_vm_toml(text, "vm.toml");
        ASSERT_TRUE(c.is_error()) << text;
        EXPECT_EQ(c.error().message().rfind("vm.toml", 0), 0u) << c.error().message();
    }
}

TEST(VmConfig, NonAsciiOnlyInComments) {
    // U+00C3 where toml++ 3.3 would ask whether it is whitespace (undefined behaviour there).
    auto c = parse_vm_toml("[machine]\nvcpus \xc3\x83s]\n", "vm.toml");
    ASSERT_TRUE(c.is_error());
    EXPECT_EQ(c.error().message(),
              "vm.toml:2:7: a non-ASCII character outside a comment (husk reads its TOML files as ASCII)");
    c = parse_vm_toml("[boot]\nkernel = \"/k\xc3\xa9rnel\"\n", "vm.toml");
    ASSERT_TRUE(c.is_error());
    EXPECT_NE(c.error().message().find("vm.toml:2:13:"), std::string::npos) << c.error().message();
    // In comments they are fine, and a '#' inside a string is no comment.
    c = parse_vm_toml("# caf\xc3\xa9\n[boot] # \xc3\xa9\nkernel = \"/a#b\" # \xe3\x80\x80\n", "vm.toml");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c.value().kernel, "/a#b");
    c = parse_vm_toml("[boot]\nkernel = \"/a#\xc3\xa9\"\n", "vm.toml");
    EXPECT_TRUE(c.is_error());
    c = parse_vm_toml("[boot]\ncmdline = \"\"\"a\n#b\xc3\xa9\"\"\"\n", "vm.toml");
    EXPECT_TRUE(c.is_error()) << "inside a multi-line string";
}

TEST(VmConfig, UnknownTableIsNamed) {
    auto c = parse_vm_toml("[disk]\npath = \"x\"\n", "vm.toml");
    ASSERT_TRUE(c.is_error());
    EXPECT_NE(c.error().message().find("unknown key `disk.path`"), std::string::npos);
}

TEST(VmConfig, WrongTypeIsNamed) {
    auto c = parse_vm_toml("[machine]\nvcpus = \"two\"\n", "vm.toml");
    ASSERT_TRUE(c.is_error());
    EXPECT_NE(c.error().message().find("`machine.vcpus` must be an integer"), std::string::npos);
    // A float is not an integer, however large (the fuzzer found -2e60 converted, undefined behaviour).
    for (const char* number : {"1.5", "-2e60", "2e60", "nan", "inf"}) {
        auto f = parse_vm_toml(std::string("[machine]\nmemory_mib = ") + number + "\n", "vm.toml");
        ASSERT_TRUE(f.is_error()) << number;
        EXPECT_NE(f.error().message().find("`machine.memory_mib` must be an integer"), std::string::npos)
            << f.error().message();
    }
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
}

// Words with a fixed set of values are types: an unknown one is refused where
// it is read (with the file position in vm.toml), never compared later.
TEST(VmConfig, EnumeratedValuesAreParsedOnceAndRefusedByKey) {
    EXPECT_EQ(parse_boot_entry("linux64").value(), BootEntry::Linux64);
    EXPECT_EQ(parse_boot_entry("efi").error().message(), "boot.entry must be auto, pvh or linux64, not `efi`");
    EXPECT_EQ(parse_cpu_template("baseline").value(), CpuTemplate::Baseline);
    EXPECT_EQ(std::string(to_string(CpuTemplate::Baseline)), "baseline");
    EXPECT_NE(parse_cpu_template("max").error().message().find("machine.cpu_template"), std::string::npos);
    EXPECT_EQ(parse_console_input("stdin").value(), ConsoleInput::Stdin);
    EXPECT_NE(parse_console_input("tty").error().message().find("console.input"), std::string::npos);
    EXPECT_EQ(parse_console_output("unix:/run/c.sock").value(),
              (ConsoleOutput{ConsoleOutput::Kind::UnixSocket, "/run/c.sock"}));
    EXPECT_EQ(parse_console_output("/var/log/c").value(), (ConsoleOutput{ConsoleOutput::Kind::File, "/var/log/c"}));
    EXPECT_FALSE(parse_console_output(""));
    EXPECT_FALSE(parse_console_output("unix:"));
    auto bad = parse_vm_toml("[boot]\nkernel = \"/k\"\nentry = \"efi\"\n", "vm.toml");
    ASSERT_TRUE(bad.is_error());
    EXPECT_NE(bad.error().message().find("vm.toml:3:"), std::string::npos) << bad.error().message();
    EXPECT_NE(bad.error().message().find("boot.entry must be"), std::string::npos) << bad.error().message();
}

// Drive ids name the devices' states in a snapshot: they must tell drives apart.
TEST(VmConfig, DriveIdsAreUniqueAndNotAnotherDevicesName) {
    VmConfig c;
    c.kernel = "/k";
    c.drives = {{"/a", false, false, "root"}, {"/b", false, false, ""}, {"/c", false, false, ""}};
    EXPECT_FALSE(validate(c).is_error());
    c.drives[2].id = "root";
    EXPECT_EQ(validate(c).error().message(), "two drives have the id `root`");
    c.drives[2].id = "vsock";
    EXPECT_EQ(validate(c).error().message(), "drive.id `vsock` is the name of another device");
    c.drives[2].id = "drive1";
    EXPECT_EQ(validate(c).error().message(), "drive.id `drive1` is the name of drive 1, which has no id of its own");
    c.drives[2].id = "drive2";
    EXPECT_FALSE(validate(c).is_error());
}

}  // namespace
}  // namespace husk

#include "vmm/devices/virtio/net/net.h"

namespace husk {
namespace {

TEST(VmConfig, NetAndVsockFlags) {
    VmConfig c;
    ASSERT_FALSE(parse_net_flag("tap0,mac=02:00:00:00:00:01", c).is_error());
    ASSERT_EQ(c.nics.size(), 1u);
    EXPECT_EQ(c.nics[0].tap, "tap0");
    EXPECT_EQ(c.nics[0].mac, "02:00:00:00:00:01");
    EXPECT_TRUE(parse_net_flag("tap0,speed=10", c).is_error());
    ASSERT_FALSE(parse_vsock_flag("/run/v.sock,cid=42", c).is_error());
    EXPECT_EQ(c.vsock_socket, "/run/v.sock");
    EXPECT_EQ(c.vsock_cid, 42u);
    EXPECT_TRUE(parse_vsock_flag("/run/v.sock,cid=abc", c).is_error());
    c.kernel = "/k";
    c.vsock_cid = 2;
    EXPECT_NE(validate(c).error().message().find("vsock.cid"), std::string::npos);
}

// [net] is one NIC, [[net]] several (the guest's eth0, eth1, ... in order).
// net.unplugged: a NIC the guest finds only after plug_net. A restore takes
// the NICs' MACs and whether each is unplugged from the snapshot (whether
// the guest probed it then), their TAPs from its own description.
TEST(VmConfig, NicsAreOneOrSeveralAndFollowTheSnapshot) {
    auto one = parse_vm_toml("[net]\ntap = \"husk0\"\nunplugged = true\n", "vm.toml");
    ASSERT_TRUE(one) << one.error().message();
    ASSERT_EQ(one.value().nics.size(), 1u);
    EXPECT_TRUE(one.value().nics[0].unplugged);
    auto two = parse_vm_toml(
        "[[net]]\ntap = \"husk0\"\nmac = \"02:00:00:00:00:01\"\n[[net]]\ntap = \"husk1\"\nunplugged = true\n",
        "vm.toml");
    ASSERT_TRUE(two) << two.error().message();
    ASSERT_EQ(two.value().nics.size(), 2u);
    EXPECT_EQ(two.value().nics[0].mac, "02:00:00:00:00:01");
    EXPECT_FALSE(two.value().nics[0].unplugged);
    EXPECT_EQ(two.value().nics[1].tap, "husk1");
    EXPECT_TRUE(two.value().nics[1].unplugged);
    VmConfig v = two.value();
    v.kernel = "/k";
    EXPECT_FALSE(validate(v).is_error());
    v.nics[1].tap = "husk0";
    EXPECT_EQ(validate(v).error().message(), "two NICs have the TAP `husk0`");
    v.nics[1].tap.clear();
    EXPECT_EQ(validate(v).error().message(), "a NIC needs its TAP (net.tap)");
    v.nics.assign(kMaxNics + 1, NicConfig{});
    for (size_t i = 0; i < v.nics.size(); ++i) v.nics[i].tap = "t" + std::to_string(i);
    EXPECT_EQ(validate(v).error().message(), "too many NICs (at most 4)");
    EXPECT_NE(parse_vm_toml("[[net]]\nmac = \"02:00:00:00:00:01\"\n", "vm.toml")
                  .error()
                  .message()
                  .find("[[net]] needs a tap"),
              std::string::npos);
    EXPECT_TRUE(parse_vm_toml("[net]\nunplugged = \"yes\"\n", "vm.toml").is_error());

    auto json = machine_to_json(two.value());
    VmConfig restored;
    restored.nics = {{"other0", "", false}, {"other1", "", false}};
    ASSERT_FALSE(machine_from_json(json, restored).is_error());
    EXPECT_EQ(restored.nics[0].tap, "other0");
    EXPECT_EQ(restored.nics[0].mac, "02:00:00:00:00:01");
    EXPECT_TRUE(restored.nics[1].unplugged);
    restored.nics.pop_back();
    EXPECT_NE(machine_from_json(json, restored).error().message().find("has 2 network device(s)"), std::string::npos);
    // A snapshot from before [[net]]: one NIC, plugged.
    json.erase("nics");
    json["net_tap"] = "husk0";
    json["net_mac"] = "02:00:00:00:00:02";
    ASSERT_FALSE(machine_from_json(json, restored).is_error());
    EXPECT_EQ(restored.nics[0].mac, "02:00:00:00:00:02");
    EXPECT_FALSE(restored.nics[0].unplugged);
}

TEST(VmConfig, DnsForwardIsAnIpv4EndpointBesideTheVsockDevice) {
    auto c = parse_vm_toml("[vsock]\nsocket = \"/v\"\ndns_forward = \"127.0.0.11:53\"\n", "vm.toml");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c.value().vsock_dns_forward, "127.0.0.11:53");
    c.value().kernel = "/k";
    EXPECT_FALSE(validate(c.value()).is_error());
    auto a = parse_ipv4_endpoint("127.0.0.11:53");
    ASSERT_TRUE(a);
    EXPECT_EQ(ntohs(a.value().sin_port), 53);
    EXPECT_EQ(ntohl(a.value().sin_addr.s_addr), 0x7f00000bu);
    for (const char* bad : {"127.0.0.11", "127.0.0.11:", "127.0.0.11:0", "127.0.0.11:65536", "localhost:53", "[::1]:53",
                            "127.0.0.11:5x", ":53"})
        EXPECT_FALSE(parse_ipv4_endpoint(bad)) << bad;
    VmConfig v = c.value();
    v.vsock_dns_forward = "nowhere";
    EXPECT_NE(validate(v).error().message().find("vsock.dns_forward"), std::string::npos);
    v.vsock_dns_forward = "127.0.0.11:53";
    v.vsock_socket.clear();
    EXPECT_EQ(validate(v).error().message(), "vsock.dns_forward needs the vsock device (vsock.socket)");
}

TEST(Mac, ParsesAndRejects) {
    auto m = virtio::parse_mac("02:aa:bb:cc:dd:0e").release_value();
    EXPECT_EQ(m[1], 0xaa);
    EXPECT_EQ(m[5], 0x0e);
    EXPECT_TRUE(virtio::parse_mac("02:aa:bb:cc:dd").is_error());
    EXPECT_TRUE(virtio::parse_mac("02:aa:bb:cc:dd:0e:ff").is_error());
    EXPECT_TRUE(virtio::parse_mac("01:00:5e:00:00:01").is_error());  // multicast
    EXPECT_TRUE(virtio::parse_mac("02:aa:bb:cc:dd:100").is_error());
}

}  // namespace
}  // namespace husk
