// Scenario "balloon-reclaim": 1 GiB given back to the host by a Linux guest,
// husk-vmm's virtio-balloon against QEMU microvm's, the same kernel and
// initramfs (tests/guests/linux/init.c "memory" mode), interleaved.
//
//   inflate    the guest fills and frees 1 GiB (free page reporting off), then
//              the balloon's target moves to 1 GiB: the time until the driver
//              reports it reached, and how much the VMM's RSS fell.
//   reporting  the same fill and free with free page reporting on and no
//              target: the time until the RSS stopped falling, and how far it fell.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "bench/common.h"
#include "tests/lib/subprocess.h"
#include "vmm/client/api_client.h"

namespace husk::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using husk::test::RunningProcess;

constexpr int kGuestMib = 1536, kReclaimMib = 1024;

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

// A QMP connection: one command at a time, events skipped.
class Qmp {
public:
    bool connect(const std::string& path) {
        if (!husk::test::wait_until([&] { return fs::exists(path); }, 60)) return false;
        m_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
        if (::connect(m_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return false;
        if (line().empty()) return false;  // the greeting
        return !execute({{"execute", "qmp_capabilities"}}).contains("error");
    }
    ~Qmp() {
        if (m_fd >= 0) ::close(m_fd);
    }
    json execute(const json& command) {
        std::string text = command.dump() + "\n";
        if (::write(m_fd, text.data(), text.size()) != ssize_t(text.size())) return {{"error", "write"}};
        for (;;) {
            std::string l = line();
            if (l.empty()) return {{"error", "QMP closed"}};
            json reply = json::parse(l, nullptr, false);
            if (reply.is_discarded() || reply.contains("event")) continue;
            return reply;
        }
    }

private:
    std::string line() {
        for (;;) {
            if (auto nl = m_buf.find('\n'); nl != std::string::npos) {
                std::string l = m_buf.substr(0, nl);
                m_buf.erase(0, nl + 1);
                return l;
            }
            char chunk[4096];
            ssize_t n = ::read(m_fd, chunk, sizeof chunk);
            if (n <= 0) return {};
            m_buf.append(chunk, size_t(n));
        }
    }
    int m_fd = -1;
    std::string m_buf;
};

struct Sample {
    double seconds = 0, returned_mib = 0;
    uint64_t discard_calls = 0;
};

long rss_kib(pid_t pid) {
    return status_kib(pid, "VmRSS");
}

// One run of one side; nullopt (with a note on stderr) when the guest misbehaves.
std::optional<Sample> run_once(bool husk, bool reporting, const std::string& vmm, const std::string& qemu,
                               const std::string& kernel, const std::string& initrd) {
    std::string dir = fmt::format("/tmp/husk-bench-balloon-{}", ::getpid());
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::string sock = dir + "/control.sock";
    // QEMU appends its virtio_mmio.device= after the command line: no " -- ",
    // init still gets the words without '=' as arguments.
    std::string cmdline = "console=ttyS0 reboot=t panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd quiet memory";
    std::vector<std::string> argv;
    if (husk) {
        std::ofstream(dir + "/vm.toml") << "[balloon]\nfree_page_reporting = " << (reporting ? "true" : "false")
                                        << "\n";
        argv = {vmm,         "--config", dir + "/vm.toml",
                "--kernel",  kernel,     "--initramfs",
                initrd,      "--memory", std::to_string(kGuestMib),
                "--cmdline", cmdline,    "--console-input",
                "stdin",     "--api",    sock};
    } else {
        argv = {qemu,
                "-M",
                "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off",
                "-accel",
                "kvm",
                "-cpu",
                "host",
                "-m",
                std::to_string(kGuestMib),
                "-smp",
                "1",
                "-nodefaults",
                "-nographic",
                "-serial",
                "stdio",
                "-kernel",
                kernel,
                "-initrd",
                initrd,
                "-append",
                cmdline,
                "-no-reboot",
                "-qmp",
                "unix:" + sock + ",server=on,wait=off",
                "-device",
                std::string("virtio-balloon-device") + (reporting ? ",free-page-reporting=on" : "")};
    }
    RunningProcess p(argv, true);
    auto fail = [&](const std::string& why) -> std::optional<Sample> {
        fmt::print(stderr, "  {} {}: {}: {}\n", husk ? "husk" : "qemu", reporting ? "reporting" : "inflate", why,
                   p.seen().substr(p.seen().size() > 400 ? p.seen().size() - 400 : 0));
        p.write_stdin("exit\n");
        p.wait_exit(60);
        fs::remove_all(dir);
        return std::nullopt;
    };
    if (!p.wait_for_stdout("memory ready", 300)) return fail("the guest did not come up");
    Qmp qmp;
    if (!husk && !qmp.connect(sock)) return fail("no QMP");
    p.clear_seen();
    p.write_stdin(fmt::format("fill {}\n", kReclaimMib));
    if (!p.wait_for_stdout(fmt::format("filled {}", kReclaimMib), 900)) return fail("fill did not finish");
    p.clear_seen();
    p.write_stdin("free\n");
    if (!p.wait_for_stdout("freed", 120)) return fail("free did not finish");
    long peak = rss_kib(p.pid());
    Sample s;
    auto t0 = Clock::now();
    if (!reporting) {
        bool done = false;
        if (husk) {
            auto r = api_call(sock, {{"cmd", "balloon"}, {"target_mib", kReclaimMib}, {"stats", false}});
            if (!r || r.value().contains("error")) return fail("the balloon target was refused");
        } else {
            auto r = qmp.execute(
                {{"execute", "balloon"}, {"arguments", {{"value", uint64_t(kGuestMib - kReclaimMib) << 20}}}});
            if (r.contains("error")) return fail("QMP balloon: " + r.dump());
        }
        while (!done && seconds_since(t0) < 900) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            if (husk) {
                auto r = api_call(sock, {{"cmd", "balloon"}, {"stats", false}});
                done = r && r.value().value("actual_mib", 0.0) >= kReclaimMib;
                if (done) s.discard_calls = r.value().value("discard_calls", uint64_t(0));
            } else {
                auto r = qmp.execute({{"execute", "query-balloon"}});
                done = r.contains("return") &&
                       r["return"].value("actual", uint64_t(~0ull)) <= (uint64_t(kGuestMib - kReclaimMib) << 20);
            }
        }
        if (!done) return fail("the balloon did not reach its target");
        s.seconds = seconds_since(t0);
    } else {
        // Reporting runs on the guest's schedule: wait until the RSS stops falling for 10 s.
        long low = peak;
        auto last_drop = t0;
        while (seconds_since(t0) < 600 && seconds_since(last_drop) < 10) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            long now = rss_kib(p.pid());
            if (now < low - 1024) low = now, last_drop = Clock::now();
        }
        s.seconds = std::chrono::duration<double>(last_drop - t0).count();
    }
    s.returned_mib = double(peak - rss_kib(p.pid())) / 1024;
    p.write_stdin("exit\n");
    if (p.wait_exit(120) != 0) fmt::print(stderr, "  note: the guest did not exit cleanly\n");
    fs::remove_all(dir);
    return s;
}

}  // namespace

json balloon_scenario(int runs, const std::string& vmm, const std::string& qemu, const std::string& kernel,
                      const std::string& initrd) {
    json out = {{"guest", fmt::format("kernel-config/ vmlinux + test initramfs, {} MiB, 1 vCPU; 1 GiB filled and "
                                      "freed by a guest process, then reclaimed",
                                      kGuestMib)},
                {"measure",
                 "seconds: target set (inflate) or memory freed (reporting) until done; returned: VmRSS "
                 "before minus after"}};
    bool have_qemu = husk::test::run_process({qemu, "--version"}, {}).exit_status == 0;
    if (!have_qemu) out["note"] = "QEMU (" + qemu + ") is not installed: husk only";
    int failures = 0;
    for (bool reporting : {false, true}) {
        std::vector<double> secs[2], mib[2], calls;
        for (int i = 0; i < runs; ++i) {
            for (int side = 0; side < (have_qemu ? 2 : 1); ++side) {
                auto s = run_once(side == 0, reporting, vmm, qemu, kernel, initrd);
                if (!s) {
                    ++failures;
                    continue;
                }
                fmt::print(stderr, "  {} [{}/{}] {:5} {:.2f} s, {:.0f} MiB returned\n",
                           reporting ? "reporting" : "inflate", i + 1, runs, side == 0 ? "husk" : "qemu", s->seconds,
                           s->returned_mib);
                secs[side].push_back(s->seconds * 1000);
                mib[side].push_back(s->returned_mib);
                if (side == 0 && !reporting) calls.push_back(double(s->discard_calls));
            }
        }
        json entry = {{"husk", {{"reclaim_ms", stats(secs[0])}, {"returned_mib", stats(mib[0])}}}};
        if (have_qemu) entry["qemu"] = {{"reclaim_ms", stats(secs[1])}, {"returned_mib", stats(mib[1])}};
        if (!calls.empty()) entry["husk_discard_calls"] = stats(calls);
        if (!secs[0].empty() && !secs[1].empty()) {
            entry["ratio_husk_over_qemu"] = {{"reclaim_time", double(entry["husk"]["reclaim_ms"]["median"]) /
                                                                  double(entry["qemu"]["reclaim_ms"]["median"])},
                                             {"returned", double(entry["husk"]["returned_mib"]["median"]) /
                                                              double(entry["qemu"]["returned_mib"]["median"])}};
            fmt::print(stderr, "balloon-reclaim {}: median husk {:.2f} s / {:.0f} MiB, qemu {:.2f} s / {:.0f} MiB\n",
                       reporting ? "reporting" : "inflate", double(entry["husk"]["reclaim_ms"]["median"]) / 1000,
                       double(entry["husk"]["returned_mib"]["median"]),
                       double(entry["qemu"]["reclaim_ms"]["median"]) / 1000,
                       double(entry["qemu"]["returned_mib"]["median"]));
        }
        out[reporting ? "reporting" : "inflate"] = entry;
    }
    out["failures"] = failures;
    return out;
}

}  // namespace husk::bench
