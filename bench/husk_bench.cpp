// husk-bench: runs named scenarios against husk and a peer side by side,
// interleaved and repeated, and writes JSON results.
//
//   husk-bench tiny  [--runs N] [--out FILE]   native: tiny PVH guest, husk-vmm vs QEMU microvm
//   husk-bench boot  [--runs N] [--out FILE]   Linux guest boot to init, husk-vmm vs QEMU microvm
//   husk-bench all   [--runs N] [--results DIR] every scenario, native or in the rig, then the report
//
// Paths come from flags or HUSK_* variables (see --help). Results go to
// --out (default: stdout as one JSON document).
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "bench/common.h"
#include "tests/lib/subprocess.h"
#include "vmm/devices/virtio/block/block.h"
#include "vmm/devices/virtio/mmio/mmio_transport.h"
#include "vmm/devices/virtio/queue/fake_driver.h"
#include "vmm/io/event_loop.h"
#include "vmm/probe/host_probe.h"

namespace po = boost::program_options;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

using namespace husk::bench;

namespace {

// Device-side virtio-blk throughput: a fake guest driver keeps the queue full
// of 4 KiB random reads against an image on tmpfs (/dev/shm); the device runs
// on the real io_uring event loop thread. Measures requests per second.
json blk_device_run(double seconds, uint32_t batch) {
    using namespace husk;
    using namespace husk::virtio;
    constexpr uint64_t kImage = 256ull << 20;
    std::string path = fmt::format("/dev/shm/husk-bench-blk-{}.img", getpid());
    {
        std::ofstream f(path, std::ios::binary);
        std::vector<char> chunk(1 << 20, 'x');
        for (uint64_t i = 0; i < kImage; i += chunk.size()) f.write(chunk.data(), std::streamsize(chunk.size()));
    }
    auto mem = GuestMemory::create(64ull << 20).release_value();
    auto loop = EventLoop::create(1024).release_value();
    auto dev = Block::open({path, true, false, ""}).release_value();
    MmioTransport t(std::move(dev), "drive0", mem, *loop, 5);
    // Notifications as KVM delivers them: an eventfd the loop watches (the ioeventfd path).
    int kick = eventfd(0, EFD_CLOEXEC);
    (void)loop->watch_eventfd(kick, [&t] { t.queue_notify(0); });
    std::thread loop_thread([&] { loop->run(); });
    auto wr32 = [&](uint64_t off, uint32_t v) {
        uint8_t b[4];
        std::memcpy(b, &v, 4);
        t.write(off, b);
    };
    const uint16_t qsize = 256;
    husk::virtio::testing::FakeDriver drv(mem, qsize);
    wr32(0x70, 1 | 2);
    wr32(0x24, 1);
    wr32(0x20, 1);
    wr32(0x70, 1 | 2 | 8);
    Queue shadow(qsize);
    drv.configure(shadow);
    wr32(0x30, 0);
    wr32(0x38, qsize);
    wr32(0x80, uint32_t(shadow.desc_table()));
    wr32(0x90, uint32_t(shadow.avail_ring()));
    wr32(0xa0, uint32_t(shadow.used_ring()));
    wr32(0x44, 1);
    wr32(0x70, 1 | 2 | 8 | 4);
    // One header/data/status triple per slot, reused.
    struct Slot {
        uint64_t hdr, data, status;
    };
    std::vector<Slot> slots(batch);
    for (auto& s : slots) {
        s.hdr = drv.alloc(16);
        s.data = drv.alloc(4096);
        s.status = drv.alloc(1);
    }
    uint64_t x = 88172645463325252ull;
    uint64_t done = 0;
    uint16_t used_seen = 0;
    bool stalled = false;
    auto start = Clock::now();
    auto deadline = start + std::chrono::duration<double>(seconds);
    while (Clock::now() < deadline) {
        for (auto& s : slots) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            struct {
                uint32_t type, reserved;
                uint64_t sector;
            } hdr{0, 0, (x % (kImage / 4096)) * 8};
            (void)mem.write_obj(s.hdr, hdr);
            drv.add_chain({{s.hdr, 16, false}, {s.data, 4096, true}, {s.status, 1, true}});
        }
        uint64_t one = 1;
        [[maybe_unused]] ssize_t kicked = write(kick, &one, sizeof one);  // one notification per batch
        uint16_t target = uint16_t(used_seen + batch);
        // A device that failed (DEVICE_NEEDS_RESET) returns nothing: give up after 5 s, not spin forever.
        auto waited_from = Clock::now();
        while (drv.used_idx() != target && Clock::now() - waited_from < std::chrono::seconds(5)) {
        }
        if (drv.used_idx() != target) {
            stalled = true;
            break;
        }
        used_seen = target;
        done += batch;
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    loop->stop();
    loop_thread.join();
    close(kick);
    unlink(path.c_str());
    return {{"requests", done},
            {"seconds", secs},
            {"requests_per_second", double(done) / secs},
            {"batch", batch},
            {"stalled", stalled},
            {"backend", "raw image on tmpfs (/dev/shm), page cache, io_uring readv"}};
}

// Guest 4 KiB random-read IOPS on the same raw image (page cache on the host),
// husk-vmm's virtio-blk vs QEMU microvm's virtio-blk with aio=io_uring.
json blk_iops(int runs, const std::string& kernel, const std::string& initrd, const std::string& vmm,
              const std::string& qemu, int seconds) {
    std::string image = fmt::format("/tmp/husk-bench-iops-{}.img", getpid());
    {
        std::ofstream f(image, std::ios::binary);
        std::vector<char> chunk(1 << 20);
        for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = char(i * 7);
        for (int i = 0; i < 256; ++i) f.write(chunk.data(), std::streamsize(chunk.size()));
    }
    // acpi=off: QEMU then declares its virtio-mmio devices on the kernel command
    // line, as husk does (the guest kernel has no ACPI).
    const std::string microvm = "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off";
    json out = json::object();
    for (int qd : {1, 32}) {
        std::string cmdline = fmt::format(
            // No " -- ": QEMU appends its virtio_mmio.device= after the command line, which
            // must stay a kernel argument; words without '=' still reach init as arguments.
            "console=ttyS0 reboot=t panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd quiet randread {} {}", qd, seconds);
        std::vector<std::string> husk_cmd = {vmm,   "--kernel", kernel, "--initramfs", initrd, "--memory",
                                             "256", "--drive",  image,  "--cmdline",   cmdline};
        std::vector<std::string> qemu_cmd = {qemu,         "-M",
                                             microvm,      "-accel",
                                             "kvm",        "-cpu",
                                             "host",       "-m",
                                             "256",        "-nodefaults",
                                             "-nographic", "-serial",
                                             "stdio",      "-kernel",
                                             kernel,       "-initrd",
                                             initrd,       "-append",
                                             cmdline,      "-no-reboot",
                                             "-drive",     "id=d0,file=" + image + ",format=raw,if=none,aio=io_uring",
                                             "-device",    "virtio-blk-device,drive=d0"};
        std::vector<double> h, q;
        for (int i = 0; i < runs; ++i) {
            for (int side = 0; side < 2; ++side) {
                husk::test::RunOptions o;
                o.timeout_seconds = 300;
                auto r = husk::test::run_process(side == 0 ? husk_cmd : qemu_cmd, o);
                auto v = parse_ms(r.out, R"(randread qd=[0-9]+ iops=([0-9.]+))");
                fmt::print(
                    stderr, "  qd {} [{}/{}] {:5} {}\n", qd, i + 1, runs, side == 0 ? "husk" : "qemu",
                    v ? fmt::format("{:.0f} IOPS", *v) : "no result: " + r.out.substr(0, 300) + r.err.substr(0, 300));
                if (v) (side == 0 ? h : q).push_back(*v);
            }
        }
        json entry = {
            {"husk_iops", stats(h)}, {"qemu_iops", stats(q)}, {"commands", {{"husk", husk_cmd}, {"qemu", qemu_cmd}}}};
        if (!h.empty() && !q.empty()) {
            double ratio = double(entry["husk_iops"]["median"]) / double(entry["qemu_iops"]["median"]);
            entry["ratio_husk_over_qemu"] = ratio;
            fmt::print(stderr, "blk-iops qd {}: median husk {:.0f} IOPS, qemu {:.0f} IOPS, ratio {:.3f}\n", qd,
                       double(entry["husk_iops"]["median"]), double(entry["qemu_iops"]["median"]), ratio);
        }
        out[fmt::format("qd{}", qd)] = entry;
    }
    unlink(image.c_str());
    return out;
}

int scenario(const std::string& name, int runs, const std::string& out_path, const po::variables_map& vm) {
    const std::string build = env_or("HUSK_BUILD_DIR", "build");
    const std::string vmm = env_or("HUSK_VMM", build + "/vmm/husk-vmm");
    const std::string qemu = env_or("HUSK_QEMU", "qemu-system-x86_64");
    json result = {{"scenario", name}, {"machine", machine()}, {"runs", runs}};
    std::vector<std::string> husk_cmd, qemu_cmd;
    std::string marker;
    const std::string microvm = "microvm,x-option-roms=off,isa-serial=on,rtc=off";

    if (name == "tiny") {
        std::string guests = env_or("HUSK_GUESTS", build + "/tests/guests");
        std::string guest = guests + "/pvh.elf";
        marker = "Hello from a PVH guest";
        husk_cmd = {vmm, "--kernel", guest, "--memory", "32"};
        // PVM needs a CPU model without ARCH_CAPABILITIES; hardware KVM takes host.
        std::string cpu = husk::probe_host().backend == husk::KvmBackend::Pvm ? "qemu64" : "host";
        qemu_cmd = {qemu,         "-M",      microvm,     "-accel",  "kvm",
                    "-cpu",       cpu,       "-m",        "32",      "-nodefaults",
                    "-nographic", "-serial", "stdio",     "-device", "isa-debug-exit,iobase=0x501,iosize=2",
                    "-kernel",    guest,     "-no-reboot"};
        result["guest"] = "tests/guests/pvh.S: PVH entry, prints a line, resets";
        // Memory: the same guest, halted, measured while alive.
        auto halt = guests + "/pvh_halt.elf";
        auto hm = memory_of({vmm, "--kernel", halt, "--memory", "32"}, marker);
        auto qm = memory_of({qemu, "-M", microvm, "-accel", "kvm", "-cpu", cpu, "-m", "32", "-nodefaults", "-nographic",
                             "-serial", "stdio", "-kernel", halt},
                            marker);
        result["memory"] = {{"husk", hm},
                            {"qemu", qm},
                            {"note",
                             "husk guest RAM is a memfd (RssShmem); VMM overhead = RssAnon + RssFile. "
                             "QEMU's guest RAM is anonymous and counted in its RssAnon."}};
    } else if (name == "boot") {
        std::string kernel = vm.count("kernel") ? vm["kernel"].as<std::string>() : env_or("HUSK_VMLINUX", "");
        std::string initrd = env_or("HUSK_INITRAMFS", build + "/tests/guests/linux/test-initramfs.cpio.gz");
        if (kernel.empty()) {
            std::cerr << "husk-bench: boot needs --kernel or HUSK_VMLINUX (kernel-config/build prints it)\n";
            return 2;
        }
        std::string cmdline = "console=ttyS0 reboot=t panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd quiet -- reboot";
        marker = "husk-test-init: init reached";
        husk_cmd = {vmm, "--kernel", kernel, "--initramfs", initrd, "--memory", "256", "--cmdline", cmdline};
        qemu_cmd = {qemu,   "-M",      microvm, "-accel",      "kvm",        "-cpu",      "host",  "-m",
                    "256",  "-smp",    "1",     "-nodefaults", "-nographic", "-serial",   "stdio", "-kernel",
                    kernel, "-initrd", initrd,  "-append",     cmdline,      "-no-reboot"};
        result["guest"] = "kernel-config/ vmlinux (PVH) + tests/guests/linux/init.c initramfs, 256 MiB, 1 vCPU";
    } else if (name == "blk-iops") {
        std::string kernel = vm.count("kernel") ? vm["kernel"].as<std::string>() : env_or("HUSK_VMLINUX", "");
        std::string initrd = env_or("HUSK_INITRAMFS", build + "/tests/guests/linux/test-initramfs.cpio.gz");
        if (kernel.empty()) {
            std::cerr << "husk-bench: blk-iops needs --kernel or HUSK_VMLINUX\n";
            return 2;
        }
        result["husk"] = blk_iops(runs, kernel, initrd, vmm, qemu, 5);
        result["note"] =
            "guest: tests/guests/linux/init.c randread (io_uring, O_DIRECT in the guest, 5 s); "
            "host: the same raw 256 MiB image in the page cache for both";
        write_result(result, out_path);
        return 0;
    } else if (name == "blk-device") {
        std::vector<double> rates;
        json samples = json::array();
        for (int i = 0; i < runs; ++i) {
            auto r = blk_device_run(1.0, 64);
            if (r.value("stalled", false)) {
                fmt::print(stderr, "  [{}/{}] the device stopped answering (see its warning); run left out\n", i + 1,
                           runs);
                result["failures"] = result.value("failures", 0) + 1;
                continue;
            }
            rates.push_back(r["requests_per_second"]);
            samples.push_back(r);
            fmt::print(stderr, "  [{}/{}] {:.0f} requests/s\n", i + 1, runs, rates.back());
        }
        result["husk"] = {{"requests_per_second", stats(rates)}};
        result["runs_detail"] = samples;
        result["note"] =
            "device side only: fake guest driver in-process, 4 KiB random reads, 64 in flight; "
            "the driver thread spins on the used ring, so this uses both cores";
        fmt::print(stderr, "blk-device: median {:.0f} requests/s\n",
                   double(result["husk"]["requests_per_second"]["median"]));
        write_result(result, out_path);
        return 0;
    } else if (name == "agent") {
        std::string kernel = vm.count("kernel") ? vm["kernel"].as<std::string>() : env_or("HUSK_VMLINUX", "");
        if (kernel.empty()) {
            std::cerr << "husk-bench: agent needs --kernel or HUSK_VMLINUX\n";
            return 2;
        }
        result.update(agent_scenario(runs, kernel, vmm));
        write_result(result, out_path);
        return result.value("failures", 0) ? 1 : 0;
    } else if (name == "restore" || name == "reset") {
        std::string guests = env_or("HUSK_GUESTS", build + "/tests/guests");
        result.update(name == "restore" ? restore_scenario(runs, vmm, guests) : reset_scenario(runs, vmm, guests));
        write_result(result, out_path);
        return result.contains("error") || result.value("failures", 0) ? 1 : 0;
    } else if (name == "density") {
        std::string kernel = vm.count("kernel") ? vm["kernel"].as<std::string>() : env_or("HUSK_VMLINUX", "");
        if (kernel.empty()) {
            std::cerr << "husk-bench: density needs --kernel or HUSK_VMLINUX\n";
            return 2;
        }
        std::string agent = env_or("HUSK_AGENT_INITRAMFS", build + "/agent/husk-agent.cpio");
        result.update(density_scenario(runs, vmm, kernel, agent));
        write_result(result, out_path);
        return result.contains("error") ? 1 : 0;
    } else if (name == "balloon-reclaim") {
        std::string kernel = vm.count("kernel") ? vm["kernel"].as<std::string>() : env_or("HUSK_VMLINUX", "");
        std::string initrd = env_or("HUSK_INITRAMFS", build + "/tests/guests/linux/test-initramfs.cpio.gz");
        if (kernel.empty()) {
            std::cerr << "husk-bench: balloon-reclaim needs --kernel or HUSK_VMLINUX\n";
            return 2;
        }
        result.update(balloon_scenario(runs, vmm, qemu, kernel, initrd));
        write_result(result, out_path);
        return result.value("failures", 0) ? 1 : 0;
    } else if (name == "container-start") {
        result.update(container_scenario(runs, env_or("HUSK_RUNTIME", build + "/runtime/husk")));
        write_result(result, out_path);
        return result.value("failures", 0) ? 1 : 0;
    } else if (name == "file-io") {
        result.update(fileio_scenario(runs, env_or("HUSK_RUNTIME", build + "/runtime/husk")));
        write_result(result, out_path);
        return result.contains("error") || result.value("failures", 0) ? 1 : 0;
    } else if (name == "invoke") {
        result.update(invoke_scenario(runs, env_or("HUSK_RUNTIME", build + "/runtime/husk")));
        write_result(result, out_path);
        return result.contains("error") || result.value("failures", 0) ? 1 : 0;
    } else if (name == "network") {
        result.update(network_scenario(runs, env_or("HUSK_RUNTIME", build + "/runtime/husk")));
        write_result(result, out_path);
        return result.contains("error") || result.value("failures", 0) ? 1 : 0;
    } else {
        std::cerr << "husk-bench: unknown scenario `" << name
                  << "` (tiny, boot, blk-device, blk-iops, agent, container-start, network, file-io, invoke, restore, "
                     "reset, density)\n";
        return 2;
    }
    result["commands"] = {{"husk", husk_cmd}, {"qemu", qemu_cmd}};

    std::vector<double> h_exit, h_marker, h_first_run, h_init, q_exit, q_marker;
    int failures = 0;
    for (int i = 0; i < runs; ++i) {
        for (int side = 0; side < 2; ++side) {  // interleaved: husk, qemu, husk, qemu, ...
            husk::test::RunOptions o;
            o.timeout_seconds = 300;
            o.stdout_marker = marker;
            auto s = husk::test::run_process(side == 0 ? husk_cmd : qemu_cmd, o);
            bool ok = s.marker_ms >= 0;
            fmt::print(stderr, "  [{}/{}] {:5} exit {:8.1f} ms  console marker {:8.1f} ms  status {}\n", i + 1, runs,
                       side == 0 ? "husk" : "qemu", s.exit_ms, s.marker_ms, s.exit_status);
            if (!ok) {
                ++failures;
                fmt::print(stderr, "    marker not seen; stderr: {}\n", s.err.substr(0, 400));
                continue;
            }
            if (side == 0) {
                h_exit.push_back(s.exit_ms);
                h_marker.push_back(s.marker_ms);
                if (auto v = parse_ms(s.err, R"(first KVM_RUN at ([0-9.]+) ms)")) h_first_run.push_back(*v);
                if (auto v = parse_ms(s.err, R"(guest init reached ([0-9.]+) ms)")) h_init.push_back(*v);
            } else {
                q_exit.push_back(s.exit_ms);
                q_marker.push_back(s.marker_ms);
            }
        }
    }
    result["husk"] = {{"launch_to_exit_ms", stats(h_exit)},
                      {"launch_to_console_marker_ms", stats(h_marker)},
                      {"vmm_start_to_first_kvm_run_ms", stats(h_first_run)},
                      {"vmm_start_to_boot_timer_ms", stats(h_init)}};
    result["qemu"] = {{"launch_to_exit_ms", stats(q_exit)}, {"launch_to_console_marker_ms", stats(q_marker)}};
    result["failures"] = failures;
    if (!h_marker.empty() && !q_marker.empty()) {
        double hm = result["husk"]["launch_to_console_marker_ms"]["median"];
        double qm = result["qemu"]["launch_to_console_marker_ms"]["median"];
        double he = result["husk"]["launch_to_exit_ms"]["median"];
        double qe = result["qemu"]["launch_to_exit_ms"]["median"];
        result["ratio_husk_over_qemu"] = {{"launch_to_console_marker", hm / qm}, {"launch_to_exit", he / qe}};
        fmt::print(stderr,
                   "{}: median launch->marker husk {:.1f} ms, qemu {:.1f} ms, ratio {:.3f}; "
                   "launch->exit husk {:.1f} ms, qemu {:.1f} ms, ratio {:.3f}\n",
                   name, hm, qm, hm / qm, he, qe, he / qe);
    }
    write_result(result, out_path);
    return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    po::options_description opts("Options");
    opts.add_options()("help,h", "show this help")("runs,n", po::value<int>()->default_value(10), "runs per side")(
        "out,o", po::value<std::string>()->default_value("-"), "result JSON file (- for stdout)")(
        "kernel", po::value<std::string>(), "guest vmlinux for `boot` (default $HUSK_VMLINUX)")(
        "results", po::value<std::string>()->default_value("bench/results"),
        "results directory for `all` and `report`")("only", po::value<std::vector<std::string>>()->composing(),
                                                    "with `all`: only this scenario (repeatable)")(
        "scenario", po::value<std::string>(),
        "tiny | boot | blk-device | blk-iops | agent | container-start | network | restore | reset | density | "
        "balloon-reclaim | "
        "all | report");
    po::positional_options_description pos;
    pos.add("scenario", 1);
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "husk-bench: " << e.what() << "\n";
        return 2;
    }
    if (vm.count("help") || !vm.count("scenario")) {
        std::cout
            << "Usage: husk-bench SCENARIO [options]\n\n"
               "Scenarios (husk and its peer run interleaved, --runs times each):\n"
               "  tiny   native: a tiny PVH guest (tests/guests/pvh.S) under husk-vmm and QEMU microvm:\n"
               "         launch to console line, launch to exit, husk's VMM start to first KVM_RUN,\n"
               "         and resident memory of each VMM\n"
               "  blk-device  virtio-blk request rate on the device side (fake driver, tmpfs image)\n"
               "  blk-iops    guest 4 KiB random-read IOPS at QD 1 and 32, husk-vmm vs QEMU microvm (rig)\n"
               "  restore  native: husk-vmm --restore of the snapshot tiny guest vs its cold boot\n"
               "  reset    native: in-place reset latency after the guest dirtied 0..16384 pages\n"
               "  density  rig: idle VMs restored from one template vs booted; memory per VM (--runs = VMs)\n"
               "  balloon-reclaim  rig: 1 GiB a Linux guest filled and freed goes back to the host, by\n"
               "         inflating the balloon and by free page reporting: seconds and MiB, vs QEMU's balloon\n"
               "  agent  a container's process through husk-vmm + husk-agent, per step (agent ready, create,\n"
               "         start, exit reported), vs runc create/start/exit on the same busybox rootfs (rig)\n"
               "  container-start  `docker run --rm IMAGE true` and `ctr run --rm IMAGE true`, husk vs runc\n"
               "  network      host to container over Docker's bridge: throughput, request latency, run --rm, husk vs "
               "runc\n"
               "         (private dockerd/containerd; needs HUSK_KERNEL for the runtime; rig)\n"
               "  file-io  in a container: 200 MiB written (fsynced) and read back, 10,000 files made, listed and\n"
               "         removed, in the rootfs and in a -v volume: husk (virtio-fs) vs runc (overlayfs, bind) (rig)\n"
               "  invoke   a function (busybox echo) per invocation: husk serve (a warm pool, reset after each)\n"
               "         vs docker run --rm with runc and husk, and husk run booted cold: p50/p99, per second (rig)\n"
               "  all    every scenario above, natively where this host can and through tests/rig/run where it\n"
               "         needs hardware KVM; results into --results, then the report\n"
               "  report  report.html (SVG charts) and summary.md from the newest result of each scenario\n"
               "         in --results (default bench/results), written there or to --out DIR\n"
               "  boot   Linux guest (kernel-config/ vmlinux + test initramfs) boot to init, husk-vmm vs\n"
               "         QEMU microvm; needs hardware KVM (run it inside tests/rig/run on PVM hosts)\n\n"
            << opts
            << "\nEnvironment: HUSK_BUILD_DIR (default build), HUSK_VMM, HUSK_QEMU, HUSK_GUESTS, HUSK_VMLINUX,\n"
               "HUSK_INITRAMFS, HUSK_SOURCE_DIR (for `all`: tests/rig/run, kernel-config/build). bench/run installs\n"
               "what is missing and runs `all` (or the scenarios it is given) into bench/results/.\n";
        return vm.count("help") ? 0 : 2;
    }
    if (vm["scenario"].as<std::string>() == "all")
        return husk::bench::run_all(
            vm["runs"].as<int>(), vm["results"].as<std::string>(),
            vm.count("kernel") ? vm["kernel"].as<std::string>() : std::string(),
            vm.count("only") ? vm["only"].as<std::vector<std::string>>() : std::vector<std::string>());
    if (vm["scenario"].as<std::string>() == "report") {
        std::string results = vm["results"].as<std::string>();
        std::string out = vm["out"].as<std::string>();
        return husk::bench::report(results, out == "-" ? results : out);
    }
    // vmm-overhead: the tiny scenario's figures (VMM start to first KVM_RUN, resident memory beside guest RAM).
    std::string name = vm["scenario"].as<std::string>() == "vmm-overhead" ? "tiny" : vm["scenario"].as<std::string>();
    return scenario(name, vm["runs"].as<int>(), vm["out"].as<std::string>(), vm);
}
