// A small parser for the subcommands' flags, runc style: `--flag value`,
// `--flag=value`, short aliases, boolean flags, then positionals.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk::runtime {

class ArgParser {
public:
    explicit ArgParser(std::string command) : m_command(std::move(command)) {}
    ArgParser& value(const std::string& name, const std::string& alias = "");
    ArgParser& flag(const std::string& name, const std::string& alias = "");
    // Flags accepted for compatibility and ignored.
    ArgParser& ignored_value(const std::string& name);
    ArgParser& ignored_flag(const std::string& name);

    Result<void> parse(const std::vector<std::string>& args);
    std::string get(const std::string& name, const std::string& fallback = "") const;
    // Every value of a repeatable option (--env A --env B), in order.
    std::vector<std::string> all(const std::string& name) const;
    bool has(const std::string& name) const { return m_values.count(name) > 0; }
    const std::vector<std::string>& positionals() const { return m_positionals; }
    // The one positional ID, or an error naming the command.
    Result<std::string> id() const;

private:
    std::string m_command;
    std::map<std::string, bool> m_known;  // name → takes a value
    std::map<std::string, std::string> m_aliases;
    std::set<std::string> m_ignored;
    std::map<std::string, std::string> m_values;
    std::map<std::string, std::vector<std::string>> m_all;
    std::vector<std::string> m_positionals;
};

}  // namespace husk::runtime
