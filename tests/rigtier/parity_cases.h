// The parity suite's cases: what a container observes of itself, run under
// runc and under husk through the same engine in the same rig, compared
// (stdout, stderr, exit status). A case whose difference is a documented
// choice says why and what husk gives instead. engines_test.cpp runs them.
#pragma once

#include <string>
#include <vector>

namespace husk::test {

struct ParityCase {
    std::string name;
    std::string options;  // `docker run` options before the image
    std::string script;   // run by the image's sh -c
    std::string input;    // stdin (with -i)
    // A documented difference: why, and husk's own expected stdout.
    std::string differs_because;
    std::string husk_out;
};

// Each script prints fields, not values that differ from run to run, nor
// PIDs after 1: which a new process gets is the runtime's artifact (runc's
// init takes a few in the container's namespace before the process runs).
inline const std::string kStatusFields = "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status";

inline std::vector<ParityCase> parity_cases() {
    return {
        // Processes and signals.
        {"pid 1 and its namespace", "", "echo $$; ps -o user,comm; kill -9 $$; echo still $?", "", "", ""},
        {"exit status and stream separation", "", "echo out; echo err >&2; exit 3", "", "", ""},
        {"a child killed by a signal", "", "sh -c 'kill -KILL $$'; echo $?", "", "", ""},
        {"stdin with -i", "-i", "wc -c; cat /dev/null", std::string(100000, 'x'), "", ""},
        {"--init", "--init", "ps -o pid,comm | head -2", "", "", ""},
        // Identity and environment.
        {"env and cwd", "-e GREETING=hi -w /tmp", "echo $GREETING; pwd; echo $HOME", "", "", ""},
        {"a missing cwd is made", "-w /made/for/you", "pwd; ls -ld . | cut -c1-10", "", "", ""},
        {"user and groups", "-u 1000:1001 --group-add 10 --group-add 2000", "id -u; id -g; id -G", "", "", ""},
        {"hostname", "--hostname box", "hostname; cat /etc/hostname", "", "", ""},
        // Security.
        {"default capabilities and seccomp", "", kStatusFields, "", "", ""},
        {"non-root capabilities", "-u 1000", kStatusFields, "", "", ""},
        {"--cap-drop ALL --cap-add NET_RAW,KILL", "--cap-drop ALL --cap-add NET_RAW --cap-add KILL", kStatusFields, "",
         "", ""},
        {"--cap-add SYS_ADMIN", "--cap-add SYS_ADMIN", kStatusFields, "", "", ""},
        {"--privileged capabilities", "--privileged", kStatusFields, "", "", ""},
        {"no-new-privileges", "--security-opt no-new-privileges", kStatusFields, "", "", ""},
        {"seccomp=unconfined", "--security-opt seccomp=unconfined", kStatusFields, "", "", ""},
        {"the default profile refuses what it must", "", "unshare -U true 2>/dev/null; echo unshare $?", "", "", ""},
        // Filesystems and limits.
        {"--read-only", "--read-only", "touch /x 2>/dev/null; echo $?; touch /tmp/x 2>/dev/null; echo $?", "", "", ""},
        {"--tmpfs", "--read-only --tmpfs /data", "touch /data/x && echo written", "", "", ""},
        {"--ulimit", "--ulimit nofile=100:200", "ulimit -n; ulimit -Hn", "", "", ""},
        {"--shm-size", "--shm-size 8m", "df -k /dev/shm | awk 'NR == 2 {print $2}'; touch /dev/shm/x && echo written", "",
         "", ""},
        // Documented differences: the VM is sized to the limits the engine gives.
        {"--memory", "--memory 256m", "awk '/MemTotal/ {print ($2 <= 262144 ? \"within\" : \"above\")}' /proc/meminfo",
         "", "husk sizes the VM to the memory limit; under runc /proc/meminfo is the host's", "within\n"},
        {"--cpus", "--cpus 1", "nproc", "",
         "husk gives the VM ceil(--cpus) vCPUs; under runc nproc counts the host's CPUs (the quota is in the cgroup)",
         "1\n"},
        {"--sysctl", "--sysctl kernel.shmmax=65536 --sysctl net.ipv4.ip_unprivileged_port_start=80",
         "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_unprivileged_port_start", "", "", ""},
        // Each masked path the kernel has reads empty (which ones exist is the kernel's, not the runtime's).
        {"masked and read-only paths", "",
         "for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/scsi /sys/firmware; do "
         "[ -e $p ] || continue; if [ -d $p ]; then n=$(ls -A $p | wc -c); else n=$(cat $p | wc -c); fi; "
         "[ $n = 0 ] || echo $p has $n; done; "
         "touch /proc/sys/x 2>/dev/null; echo $?",
         "", "", ""},
    };
}

// The same observations through containerd (`ctr run`, the runc v2 shim),
// in ctr's option syntax.
inline std::vector<ParityCase> containerd_parity_cases() {
    return {
        {"pid 1 and its namespace", "", "echo $$; ps -o user,comm; kill -9 $$; echo still $?", "", "", ""},
        {"exit status and stream separation", "", "echo out; echo err >&2; exit 3", "", "", ""},
        {"env, cwd and user", "--env GREETING=hi --cwd /tmp --user 1000:1001",
         "echo $GREETING; pwd; id -u; id -g; " + kStatusFields, "", "", ""},
        {"default capabilities, no seccomp", "", kStatusFields, "", "", ""},
        {"--seccomp", "--seccomp", kStatusFields + "; unshare -U true 2>/dev/null; echo unshare $?", "", "", ""},
        {"--privileged", "--privileged", kStatusFields, "", "", ""},
        {"--read-only", "--read-only", "touch /x 2>/dev/null; echo $?", "", "", ""},
    };
}

}  // namespace husk::test
