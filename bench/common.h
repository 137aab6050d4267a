// Helpers shared by husk-bench's scenarios.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tests/lib/subprocess.h"

namespace husk::bench {

using json = nlohmann::json;
using husk::test::env_or;

// The first capture group of `pattern` in `text`, as milliseconds.
std::optional<double> parse_ms(const std::string& text, const std::string& pattern);
// min/median/p90/p99/max and the samples.
json stats(std::vector<double> v);
// The host: name, kernel, CPU, KVM backend, whether inside the rig, date.
json machine();
long status_kib(pid_t pid, const std::string& field);
json memory_of(const std::vector<std::string>& argv, const std::string& marker);
void write_result(const json& result, const std::string& out_path);
// A private dockerd in `dir` with `runtime` (made absolute: the engine runs it
// from its own directories) registered as "husk" and busybox imported. False,
// with the error in out["error"] and out["failures"] = 1, when it did not start.
bool start_docker_with_busybox(husk::test::Engines& engines, const std::string& dir, const std::string& runtime,
                               json& out);

// Scenario "agent" (agent_scenario.cpp).
json agent_scenario(int runs, const std::string& kernel, const std::string& vmm);
// `husk-bench all` (all.cpp): every scenario into `results_dir`, then the report.
// `only`: the scenarios to run (empty: every one); an unknown name is an error (exit 2).
int run_all(int runs, const std::string& results_dir, const std::string& kernel, const std::vector<std::string>& only);
// `husk-bench report`: report.html and summary.md from the newest result of each scenario in `dir`.
int report(const std::string& dir, const std::string& out_dir);
// Scenarios "restore", "reset" (native, tiny guest) and "density" (rig) (snapshot_scenario.cpp).
json restore_scenario(int runs, const std::string& vmm, const std::string& guests);
json reset_scenario(int runs, const std::string& vmm, const std::string& guests);
json density_scenario(int count, const std::string& vmm, const std::string& kernel, const std::string& agent);
// Scenario "balloon-reclaim" (balloon_scenario.cpp).
json balloon_scenario(int runs, const std::string& vmm, const std::string& qemu, const std::string& kernel,
                      const std::string& initrd);
// Scenario "container-start" (container_scenario.cpp).
json container_scenario(int runs, const std::string& runtime);
// Scenario "network" (network_scenario.cpp).
json network_scenario(int runs, const std::string& runtime);
// Scenario "file-io" (fileio_scenario.cpp).
json fileio_scenario(int runs, const std::string& runtime);
// Scenario "invoke" (invoke_scenario.cpp): husk serve against a container per invocation.
json invoke_scenario(int runs, const std::string& runtime);

}  // namespace husk::bench
