// Thread bodies from which no exception escapes. An exception leaving a
// std::thread calls std::terminate: husk-vmm would abort, and a guest could
// provoke that with bytes a library turns into an exception. A guarded body
// logs what it caught as an error and runs `on_failure` (stop the VM,
// answer the caller) instead.
#pragma once

#include <exception>
#include <functional>
#include <utility>

#include "vmm/base/log.h"

namespace husk {

template <typename Body>
void run_guarded(const char* thread_name, Body&& body, const std::function<void()>& on_failure = {}) noexcept {
    try {
        std::forward<Body>(body)();
        return;
    } catch (const std::exception& e) {
        try {
            log::error("{} thread: {}", thread_name, e.what());
        } catch (...) {
        }
    } catch (...) {
        try {
            log::error("{} thread: an unknown exception", thread_name);
        } catch (...) {
        }
    }
    if (on_failure) {
        try {
            on_failure();
        } catch (...) {
        }
    }
}

}  // namespace husk
