#include "agent/seccomp_filter.h"

#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "vmm/base/unique_fd.h"

namespace husk::agent {

namespace {

uint32_t libseccomp_action(SeccompAction action, uint32_t errno_ret) {
    switch (action) {
        case SeccompAction::KillThread:
            return SCMP_ACT_KILL_THREAD;
        case SeccompAction::KillProcess:
            return SCMP_ACT_KILL_PROCESS;
        case SeccompAction::Trap:
            return SCMP_ACT_TRAP;
        case SeccompAction::Errno:
            return SCMP_ACT_ERRNO(errno_ret);
        case SeccompAction::Trace:
            return SCMP_ACT_TRACE(errno_ret);
        case SeccompAction::Allow:
            return SCMP_ACT_ALLOW;
        case SeccompAction::Log:
            return SCMP_ACT_LOG;
    }
    return SCMP_ACT_KILL_PROCESS;
}

scmp_arg_cmp libseccomp_arg(const SeccompArg& a) {
    return scmp_arg_cmp{a.index, scmp_compare(a.op), a.value, a.value_two};
}

Result<void> check(int rc, const std::string& what) {
    if (rc < 0) return Error::from_errno(-rc, "seccomp: " + what);
    return {};
}

}  // namespace

Result<SeccompProgram> compile_seccomp(const Seccomp& spec) {
    const uint32_t default_action = libseccomp_action(spec.default_action, spec.default_errno);
    std::unique_ptr<void, void (*)(scmp_filter_ctx)> ctx(seccomp_init(default_action), seccomp_release);
    if (!ctx) return Error::from_string("seccomp: the default action is not valid", EINVAL);
    // Loaded by the container's processes themselves, each as the spec says (spawn.cpp).
    TRY(check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "leave no_new_privs to the process"));
    for (const auto& name : spec.architectures) {
        uint32_t arch = seccomp_arch_resolve_name(name.c_str());
        if (arch == 0) return Error::from_string("seccomp: unknown architecture `" + name + "`", EINVAL);
        int rc = seccomp_arch_add(ctx.get(), arch);
        if (rc != -EEXIST) TRY(check(rc, "add architecture " + name));
    }
    SeccompProgram program;
    program.flags = spec.flags;
    for (const auto& rule : spec.rules) {
        uint32_t action = libseccomp_action(rule.action, rule.errno_ret);
        if (action == default_action) continue;  // libseccomp refuses it; it changes nothing
        bool repeated = false;
        for (size_t i = 0; i < rule.args.size(); ++i)
            for (size_t j = i + 1; j < rule.args.size(); ++j) repeated |= rule.args[i].index == rule.args[j].index;
        for (const auto& name : rule.names) {
            int nr = seccomp_syscall_resolve_name(name.c_str());
            if (nr == __NR_SCMP_ERROR) {
                program.unknown_syscalls.push_back(name);
                continue;
            }
            const std::string what = "a rule for " + name;
            if (rule.args.empty()) {
                TRY(check(seccomp_rule_add(ctx.get(), action, nr, 0), what));
            } else if (repeated) {
                for (const auto& a : rule.args) {
                    scmp_arg_cmp cmp = libseccomp_arg(a);
                    TRY(check(seccomp_rule_add_array(ctx.get(), action, nr, 1, &cmp), what));
                }
            } else {
                std::vector<scmp_arg_cmp> cmps;
                for (const auto& a : rule.args) cmps.push_back(libseccomp_arg(a));
                TRY(check(seccomp_rule_add_array(ctx.get(), action, nr, unsigned(cmps.size()), cmps.data()), what));
            }
        }
    }
    // libseccomp 2.5 exports to an fd only.
    UniqueFd memory(int(::syscall(SYS_memfd_create, "seccomp", MFD_CLOEXEC)));
    if (!memory) return Error::from_errno(errno, "seccomp: memfd_create");
    TRY(check(seccomp_export_bpf(ctx.get(), memory.get()), "export the filter"));
    off_t size = ::lseek(memory.get(), 0, SEEK_END);
    if (size <= 0 || size % sizeof(sock_filter) != 0 || size > off_t(BPF_MAXINSNS * sizeof(sock_filter)))
        return Error::from_string("seccomp: the compiled filter has " + std::to_string(size) + " bytes", E2BIG);
    program.instructions.resize(size_t(size) / sizeof(sock_filter));
    if (::pread(memory.get(), program.instructions.data(), size_t(size), 0) != size)
        return Error::from_errno(errno, "seccomp: read the compiled filter");
    return program;
}

Result<void> load_seccomp(const SeccompProgram& program) {
    sock_fprog prog{uint16_t(program.instructions.size()), const_cast<sock_filter*>(program.instructions.data())};
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, program.flags, &prog) < 0)
        return Error::from_errno(errno, "load the seccomp filter");
    return {};
}

}  // namespace husk::agent
