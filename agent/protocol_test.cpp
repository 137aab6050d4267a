#include "agent/protocol.h"

#include <gtest/gtest.h>

#include <random>

namespace husk::agent {
namespace {

ProcessSpec sample_process() {
    ProcessSpec s;
    s.exec_id = "init";
    s.args = {"sh", "-c", "echo out; exit 3"};
    s.env = {"PATH=/bin", "HOME=/root"};
    s.cwd = "/tmp";
    s.uid = 1000;
    s.gid = 100;
    s.additional_gids = {10, 20};
    s.umask = 022;
    s.rlimits = {{"RLIMIT_NOFILE", 1024, 4096}};
    s.no_new_privileges = true;
    s.oom_score_adj = -500;
    s.terminal = true;
    s.rows = 24;
    s.cols = 80;
    s.attach = kAttachStdin | kAttachStdout;
    s.capabilities = Capabilities{0xa80425fb, 0xa80425fb, 0, 0xa80425fb, 1 << 10};
    return s;
}

ContainerSpec sample_container() {
    ContainerSpec c;
    c.readonly = true;
    c.hostname = "box";
    c.mounts = {{"/proc", "proc", "proc", {"nosuid", "noexec"}},
                {"/etc/hosts", "bind", "/.husk/hosts", {"rbind", "ro"}}};
    c.masked_paths = {"/proc/kcore"};
    c.readonly_paths = {"/proc/sys"};
    c.namespaces = kNamespacePid | kNamespaceUts;
    c.sysctls = {{"net.ipv4.ip_unprivileged_port_start", "0"}};
    Seccomp filter;
    filter.default_action = SeccompAction::Errno;
    filter.default_errno = 1;
    filter.architectures = {"x86_64", "x86"};
    filter.flags = 4;
    filter.rules = {{{"read", "write"}, SeccompAction::Allow, 1, {}},
                    {{"personality"}, SeccompAction::Allow, 1, {{0, 0xffffffff, 0, SeccompOp::Equal}}},
                    {{"clone"}, SeccompAction::Allow, 1, {{0, 0x7e020000, 0, SeccompOp::MaskedEqual}}}};
    c.seccomp = filter;
    c.pids_limit = 100;
    c.serverless = true;
    return c;
}

TEST(Protocol, ProcessSpecRoundTrips) {
    ProcessSpec s = sample_process();
    auto back = decode_process_spec(encode(s));
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back.value(), s);
    ProcessSpec plain;
    plain.exec_id = "e1";
    plain.args = {"true"};
    auto back2 = decode_process_spec(encode(plain));
    ASSERT_TRUE(back2);
    EXPECT_FALSE(back2.value().umask);
    EXPECT_FALSE(back2.value().oom_score_adj);
    EXPECT_EQ(back2.value(), plain);
}

TEST(Protocol, ContainerSpecRoundTrips) {
    ContainerSpec c = sample_container();
    auto back = decode_container_spec(encode(c));
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back.value(), c);
    ContainerSpec plain;
    auto back2 = decode_container_spec(encode(plain));
    ASSERT_TRUE(back2) << back2.error().message();
    EXPECT_FALSE(back2.value().pids_limit);
    EXPECT_FALSE(back2.value().serverless);
    EXPECT_EQ(back2.value(), plain);
}

TEST(Protocol, EveryTruncationIsRefused) {
    std::string full = encode(sample_process());
    for (size_t n = 0; n < full.size(); ++n)
        EXPECT_FALSE(decode_process_spec(full.substr(0, n))) << "prefix of " << n << " bytes decoded";
    std::string c = encode(sample_container());
    for (size_t n = 0; n < c.size(); ++n) EXPECT_FALSE(decode_container_spec(c.substr(0, n)));
}

// husk-vmm's --container file: what the runtime translated, whole or refused.
TEST(Protocol, SpecsFileRoundTripsAndRefusesAnythingElse) {
    Specs specs{sample_container(), sample_process(), {"/data (bind of a host path)"}};
    std::string file = encode_specs_file(specs);
    auto back = decode_specs_file(file);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back.value(), specs);
    for (size_t n = 0; n < file.size(); ++n) EXPECT_FALSE(decode_specs_file(file.substr(0, n))) << n;
    EXPECT_FALSE(decode_specs_file(file + "x"));
    auto oci = decode_specs_file(R"({"ociVersion": "1.0.2", "process": {"args": ["sh"]}})");
    ASSERT_FALSE(oci);
    EXPECT_NE(oci.error().message().find("not a container specs file"), std::string::npos);
    std::string future = file;
    future[kSpecsFileMagic.size()] = 9;  // the format version's low byte
    auto newer = decode_specs_file(future);
    ASSERT_FALSE(newer);
    EXPECT_NE(newer.error().message().find("format 9"), std::string::npos) << newer.error().message();
}

TEST(Protocol, TrailingBytesAndLyingLengthsAreRefused) {
    EXPECT_FALSE(decode_process_spec(encode(sample_process()) + "x"));
    // A string length far past the payload.
    std::string s = Writer().u32(0xffffffff).take();
    EXPECT_FALSE(decode_process_spec(s));
    // A list count no payload could hold.
    std::string l = Writer().str("id").u32(0x10000000).take();
    auto r = decode_process_spec(l);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("malformed"), std::string::npos) << r.error().message();
}

TEST(Protocol, SemanticChecks) {
    ProcessSpec s = sample_process();
    s.args.clear();
    EXPECT_FALSE(decode_process_spec(encode(s)));
    s = sample_process();
    s.exec_id.clear();
    EXPECT_FALSE(decode_process_spec(encode(s)));
    s = sample_process();
    s.umask = 01000;
    EXPECT_FALSE(decode_process_spec(encode(s)));
    ContainerSpec c = sample_container();
    c.mounts[0].destination = "relative";
    EXPECT_FALSE(decode_container_spec(encode(c)));
    c = sample_container();
    c.namespaces = 1 << 7;
    EXPECT_FALSE(decode_container_spec(encode(c)));
    for (const char* name : {"", "../../etc/passwd", "/abs", "net/../../x"}) {
        c = sample_container();
        c.sysctls = {{name, "1"}};
        EXPECT_FALSE(decode_container_spec(encode(c))) << name;
    }
    c = sample_container();
    c.seccomp->rules[1].args[0].op = SeccompOp(9);
    EXPECT_FALSE(decode_container_spec(encode(c)));
    c = sample_container();
    c.seccomp->rules[1].args[0].index = 6;
    EXPECT_FALSE(decode_container_spec(encode(c)));
    c = sample_container();
    c.seccomp->default_action = SeccompAction(42);
    EXPECT_FALSE(decode_container_spec(encode(c)));
}

TEST(Protocol, FrameHeaderChecks) {
    std::string f = encode_frame(MessageType::Hello, 7, "ab");
    ASSERT_EQ(f.size(), kHeaderSize + 2);
    auto h = decode_header(std::span(reinterpret_cast<const uint8_t*>(f.data()), f.size()));
    ASSERT_TRUE(h);
    EXPECT_EQ(h.value().type, uint16_t(MessageType::Hello));
    EXPECT_EQ(h.value().id, 7u);
    EXPECT_EQ(h.value().length, 2u);

    std::string bad_magic = f;
    bad_magic[0] = 'X';
    EXPECT_FALSE(decode_header(std::span(reinterpret_cast<const uint8_t*>(bad_magic.data()), kHeaderSize)));
    std::string bad_version = f;
    bad_version[4] = 9;
    auto v = decode_header(std::span(reinterpret_cast<const uint8_t*>(bad_version.data()), kHeaderSize));
    ASSERT_FALSE(v);
    EXPECT_NE(v.error().message().find("version 9"), std::string::npos);
    std::string huge = Writer().u32(kMagic).u16(kVersion).u16(1).u32(1).u32(kMaxPayload + 1).take();
    EXPECT_FALSE(decode_header(std::span(reinterpret_cast<const uint8_t*>(huge.data()), kHeaderSize)));
}

TEST(Protocol, FrameBufferReassemblesPieces) {
    std::string stream = encode_frame(MessageType::Start, 1, Writer().str("init").take()) +
                         encode_frame(MessageType::Shutdown, 2, "") + "tail";
    FrameBuffer b;
    std::vector<FrameBuffer::Frame> frames;
    for (char ch : stream) {
        b.append(std::span(reinterpret_cast<const uint8_t*>(&ch), 1));
        for (;;) {
            auto next = b.next();
            ASSERT_TRUE(next);
            if (!next.value()) break;
            frames.push_back(*next.value());
        }
    }
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_EQ(frames[0].type, MessageType::Start);
    EXPECT_EQ(frames[1].id, 2u);
    EXPECT_EQ(b.take_rest(), "tail");
}

TEST(Protocol, ShellStatus) {
    EXPECT_EQ(shell_status(3 << 8), 3);
    EXPECT_EQ(shell_status(9), 137);  // killed by SIGKILL
}

// The fuzz target's body, run over deterministic mutations so every build checks it.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

TEST(Protocol, MutatedInputsNeverCrash) {
    std::mt19937 rng(1234);
    std::vector<std::string> seeds = {encode(sample_process()), encode(sample_container()),
                                      encode_frame(MessageType::Hello, 1, Writer().u16(1).take())};
    for (int i = 0; i < 20000; ++i) {
        std::string s = seeds[size_t(i) % seeds.size()];
        int edits = 1 + int(rng() % 4);
        for (int e = 0; e < edits && !s.empty(); ++e) {
            size_t at = rng() % s.size();
            switch (rng() % 3) {
                case 0:
                    s[at] = char(rng());
                    break;
                case 1:
                    s.erase(at, 1 + rng() % 8);
                    break;
                default:
                    s.insert(at, 1, char(rng()));
                    break;
            }
        }
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    }
}

}  // namespace
}  // namespace husk::agent
