#include "vmm/kvm/vcpu_kicker.h"

#include <signal.h>

#include <atomic>

namespace husk {

VcpuKicker::VcpuKicker(std::vector<kvm_run*> run_data, int signal) : m_signal(signal), m_slots(run_data.size()) {
    for (size_t i = 0; i < run_data.size(); ++i) m_slots[i].run = run_data[i];
}

void VcpuKicker::register_self(size_t index) {
    std::lock_guard guard(m_lock);
    m_slots[index].thread = pthread_self();
    m_slots[index].live = true;
}

void VcpuKicker::unregister_self(size_t index) {
    std::lock_guard guard(m_lock);
    m_slots[index].live = false;
}

void VcpuKicker::kick(size_t index) {
    std::lock_guard guard(m_lock);
    Slot& s = m_slots[index];
    // KVM reads immediate_exit on entry (api.rst, "immediate_exit"): set
    // before the signal, a kick that lands just before KVM_RUN is not lost.
    if (s.run) std::atomic_ref<__u8>(s.run->immediate_exit).store(1, std::memory_order_seq_cst);
    if (s.live) pthread_kill(s.thread, m_signal);
}

void VcpuKicker::kick_all() {
    for (size_t i = 0; i < m_slots.size(); ++i) kick(i);
}

}  // namespace husk
