// VcpuKicker: gets vCPU threads out of KVM_RUN from any thread — a vCPU
// asking the VM to stop, the API thread pausing it, the main thread at exit —
// while those threads are still being started or already ending.
//
// Each vCPU thread registers itself when it starts and unregisters before it
// returns; a kick sets the vCPU's immediate_exit (so a KVM_RUN not yet entered
// returns at once) and signals the thread if it is registered. Its slots are
// fixed at construction: nothing a kick reads is reallocated under it, and a
// thread that has ended (and may be joined) is never signalled.
#pragma once

#include <linux/kvm.h>
#include <pthread.h>

#include <cstddef>
#include <mutex>
#include <vector>

namespace husk {

class VcpuKicker {
public:
    // `run_data[i]`: vCPU i's kvm_run page; `signal`: the signal that interrupts KVM_RUN.
    VcpuKicker(std::vector<kvm_run*> run_data, int signal);

    // Called by vCPU thread `index` itself, first and last.
    void register_self(size_t index);
    void unregister_self(size_t index);

    void kick(size_t index);
    void kick_all();
    size_t size() const { return m_slots.size(); }

private:
    struct Slot {
        kvm_run* run = nullptr;
        pthread_t thread{};
        bool live = false;
    };
    int m_signal;
    std::mutex m_lock;  // a kick and a thread's (un)registration never interleave
    std::vector<Slot> m_slots;
};

}  // namespace husk
