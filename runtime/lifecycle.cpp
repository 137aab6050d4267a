// start and destroy: the steps `start`, `run` and `delete` share.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "oci/spec.h"
#include "runtime/cgroup.h"
#include "runtime/create.h"
#include "runtime/hooks.h"
#include "runtime/netns.h"
#include "vmm/base/system.h"
#include "vmm/client/api_client.h"

namespace husk::runtime {

Result<void> start_container(ContainerState& state) {
    std::string status = live_status(state);
    if (status != "created")
        return Error::from_string("container `" + state.id + "` is " + status + ", not created", EINVAL);
    if (state.network_pending) {
        // The engine's interface may have come since create (husk-vmm lives in the container's namespace).
        auto netns = TRY(sys::open("/proc/" + std::to_string(state.pid) + "/ns/net", O_RDONLY | O_CLOEXEC)
                             .context("the container's network namespace"));
        auto network = TRY(net::read_network_of(netns.get()).context("read the container's network namespace"));
        if (!net::engine_interfaces(network).empty()) {
            TRY(api_call(state.api_socket, {{"cmd", "plug_net"}}).context("start `" + state.id + "`"));
            TRY(connect_network(state, netns.get()).context("start `" + state.id + "`"));
        }
        state.network_pending = false;
        TRY(save_state(state));
    }
    auto spec = oci::load_spec(state.bundle);
    if (spec) TRY(run_hooks(spec.value().hooks.start_container, state.oci_json("created"), "startContainer"));
    TRY(api_call(state.api_socket, {{"cmd", "start"}}).context("start `" + state.id + "`"));
    state.status = "running";
    TRY(save_state(state));
    // poststart failures are warnings (runtime-spec runtime.md "Lifecycle" step 9).
    if (spec)
        if (auto r = run_hooks(spec.value().hooks.poststart, state.oci_json("running"), "poststart"); !r)
            std::fprintf(stderr, "husk: warning: %s\n", r.error().message().c_str());
    return {};
}

Result<void> destroy_container(ContainerState& state) {
    if (vmm_alive(state)) {
        ::kill(state.pid, SIGKILL);
        // Not our child (the shim or init reaps it): wait until it is gone.
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (vmm_alive(state) && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (vmm_alive(state))
            return Error::from_string("husk-vmm (pid " + std::to_string(state.pid) + ") did not die", EBUSY);
    }
    for (pid_t p : state.exec_pids) ::kill(p, SIGKILL);
    auto spec = oci::load_spec(state.bundle);
    std::error_code ec;
    // husk-vmm removes its sockets when it exits; not when it is killed.
    std::filesystem::remove(state.api_socket, ec);
    std::filesystem::remove(state.vsock_socket, ec);
    std::filesystem::remove_all(state.dir, ec);
    if (ec) return Error::from_errno(ec.value(), "remove " + state.dir);
    // An exited husk-vmm leaves its cgroup a moment after it is gone from /proc.
    for (int tries = 0; tries < 100 && !state.cgroup.empty(); ++tries) {
        remove_cgroup(state.cgroup);
        if (!cgroup_exists(state.cgroup)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (spec)
        if (auto r = run_hooks(spec.value().hooks.poststop, state.oci_json("stopped"), "poststop"); !r)
            std::fprintf(stderr, "husk: warning: %s\n", r.error().message().c_str());
    return {};
}

}  // namespace husk::runtime
