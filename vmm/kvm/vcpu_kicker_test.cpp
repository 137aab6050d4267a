// VcpuKicker against threads that start, run and end while other threads
// kick them: the race the vCPU thread vector had (kick iterating it while
// the main thread was still filling it).
#include "vmm/kvm/vcpu_kicker.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <memory>
#include <thread>

namespace husk {
namespace {

std::atomic<int> g_kicks{0};
void count_kick(int) {
    g_kicks.fetch_add(1);
}

TEST(VcpuKicker, KicksWhileThreadsStartAndEndNeitherCrashNorGetLost) {
    const int kSignal = SIGRTMIN + 3;
    struct sigaction sa {};
    sa.sa_handler = count_kick;
    ASSERT_EQ(::sigaction(kSignal, &sa, nullptr), 0);
    constexpr size_t kVcpus = 16;
    for (int round = 0; round < 50; ++round) {
        std::vector<kvm_run> pages(kVcpus);
        std::vector<kvm_run*> run;
        for (auto& p : pages) {
            p = kvm_run{};
            run.push_back(&p);
        }
        VcpuKicker kicker(run, kSignal);
        std::atomic<bool> go{false};
        std::atomic<size_t> saw_immediate_exit{0};
        // A kicker from another thread (the API's pause, a vCPU's exit request) from the start.
        std::thread other([&] {
            while (!go) kicker.kick_all();
            kicker.kick_all();
        });
        std::vector<std::thread> threads;
        for (size_t i = 0; i < kVcpus; ++i)
            threads.emplace_back([&, i] {
                kicker.register_self(i);
                // As a vCPU thread checks immediate_exit before KVM_RUN.
                while (!std::atomic_ref<__u8>(pages[i].immediate_exit).load()) std::this_thread::yield();
                saw_immediate_exit.fetch_add(1);
                kicker.unregister_self(i);
            });
        go = true;
        other.join();
        for (auto& t : threads) t.join();
        // Every thread saw its kick, whenever it started; kicks after the joins signal nobody.
        EXPECT_EQ(saw_immediate_exit.load(), kVcpus);
        kicker.kick_all();
    }
    EXPECT_GT(g_kicks.load(), 0);
    sa.sa_handler = SIG_DFL;
    ::sigaction(kSignal, &sa, nullptr);
}

}  // namespace
}  // namespace husk
