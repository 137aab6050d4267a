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

// Each masked path the kernel has reads empty (which ones exist is the
// kernel's, not the runtime's), and /proc/sys is read-only.
inline const std::string kMaskedPaths =
    "for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/scsi /sys/firmware; do "
    "[ -e $p ] || continue; if [ -d $p ]; then n=$(ls -A $p | wc -c); else n=$(cat $p | wc -c); fi; "
    "[ $n = 0 ] || echo $p has $n; done; touch /proc/sys/x 2>/dev/null; echo proc/sys $?";

// Cases that need no option of their own share one container (a docker run
// costs seconds in the rig); each line of output names what it shows.
inline std::vector<ParityCase> parity_cases() {
    return {
        // Processes, signals, streams and exit status; the default capabilities, seccomp and masks; HOME.
        {"defaults", "",
         "echo pid $$; ps -o user,comm; kill -9 $$; echo kill -9 of pid 1: $?; sh -c 'kill -KILL $$'; "
         "echo child killed: $?; " +
             kStatusFields + "; " + kMaskedPaths + "; echo home $HOME; echo out; echo err >&2; exit 3",
         "", "", ""},
        {"stdin with -i", "-i", "wc -c; cat /dev/null", std::string(100000, 'x'), "", ""},
        // Identity, environment and limits.
        {"env, cwd, hostname, ulimit, sysctl, shm-size",
         "-e GREETING=hi -w /tmp --hostname box --ulimit nofile=100:200 --shm-size 8m "
         "--sysctl kernel.shmmax=65536 --sysctl net.ipv4.ip_unprivileged_port_start=80",
         "echo $GREETING; pwd; hostname; cat /etc/hostname; ulimit -n; ulimit -Hn; "
         "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_unprivileged_port_start; "
         "df -k /dev/shm | awk 'NR == 2 {print $2}'; touch /dev/shm/x && echo shm written",
         "", "", ""},
        {"user and groups", "-u 1000:1001 --group-add 10 --group-add 2000",
         "id -u; id -g; id -G; echo home $HOME; " + kStatusFields, "", "", ""},
        // Security options.
        {"--cap-drop ALL --cap-add NET_RAW,KILL", "--cap-drop ALL --cap-add NET_RAW --cap-add KILL", kStatusFields, "",
         "", ""},
        {"--cap-add SYS_ADMIN", "--cap-add SYS_ADMIN", kStatusFields + "; unshare -m true 2>/dev/null; echo unshare $?",
         "", "", ""},
        {"--privileged", "--privileged", kStatusFields, "", "", ""},
        {"no-new-privileges", "--security-opt no-new-privileges", kStatusFields, "", "", ""},
        {"seccomp=unconfined", "--security-opt seccomp=unconfined", kStatusFields, "", "", ""},
        // Filesystems.
        {"--read-only and --tmpfs", "--read-only --tmpfs /data",
         "touch /x 2>/dev/null; echo root $?; touch /tmp/x 2>/dev/null; echo tmp $?; touch /data/x && echo data "
         "written",
         "", "", ""},
        // The pids limit, in the container's own cgroup (the root of its cgroup namespace): the ninth process
        // cannot be forked, and the shell says so.
        {"--pids-limit", "--pids-limit 8",
         "cat /proc/self/cgroup /sys/fs/cgroup/pids.max; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; "
         "echo not reached",
         "", "", ""},
        // The engine's init (Docker's docker-init, Podman's catatonit, which tests/setup installs) as PID 1.
        // Only PID 1's line: runc's own threads take PIDs in the new namespace before its init execs.
        {"--init", "--init", "ps -o pid,comm | head -2", "", "", ""},
        // Differences on purpose: the VM is sized to the limits the engine gives.
        {"--memory and --cpus", "--memory 256m --cpus 1",
         "awk '/MemTotal/ {print ($2 <= 262144 ? \"within\" : \"above\")}' /proc/meminfo; nproc", "",
         "husk sizes the VM to the limits: its RAM to --memory and ceil(--cpus) vCPUs; under runc /proc/meminfo and "
         "nproc are the host's (the limits are in the cgroup)",
         "within\n1\n"},
    };
}

// The same observations through containerd (`ctr run`, the runc v2 shim),
// in ctr's option syntax.
inline std::vector<ParityCase> containerd_parity_cases() {
    return {
        {"pid 1 and its namespace", "", "echo $$; ps -o user,comm; kill -9 $$; echo still $?", "", "", ""},
        {"exit status and stream separation", "", "echo out; echo err >&2; exit 3", "", "", ""},
        // ctr 1.6's `run` has no user option (Docker's and Podman's cases cover -u).
        {"env and cwd", "--env GREETING=hi --cwd /tmp", "echo $GREETING; pwd; id -u; id -g; " + kStatusFields, "", "",
         ""},
        {"default capabilities, no seccomp", "", kStatusFields, "", "", ""},
        {"--seccomp", "--seccomp", kStatusFields + "; unshare -U true 2>/dev/null; echo unshare $?", "", "", ""},
        {"--privileged", "--privileged", kStatusFields, "", "", ""},
        {"--read-only", "--read-only", "touch /x 2>/dev/null; echo $?", "", "", ""},
    };
}

}  // namespace husk::test
