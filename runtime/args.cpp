#include "runtime/args.h"

namespace husk::runtime {

ArgParser& ArgParser::value(const std::string& name, const std::string& alias) {
    m_known[name] = true;
    if (!alias.empty()) m_aliases[alias] = name;
    return *this;
}
ArgParser& ArgParser::flag(const std::string& name, const std::string& alias) {
    m_known[name] = false;
    if (!alias.empty()) m_aliases[alias] = name;
    return *this;
}
ArgParser& ArgParser::ignored_value(const std::string& name) {
    m_ignored.insert(name);
    return value(name);
}
ArgParser& ArgParser::ignored_flag(const std::string& name) {
    m_ignored.insert(name);
    return flag(name);
}

Result<void> ArgParser::parse(const std::vector<std::string>& args) {
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--") {
            m_positionals.insert(m_positionals.end(), args.begin() + long(i) + 1, args.end());
            break;
        }
        // Once the ID is seen, the rest are positionals (exec's command and its args).
        if (a.size() < 2 || a[0] != '-' || !m_positionals.empty()) {
            m_positionals.push_back(a);
            continue;
        }
        std::string name = a, inline_value;
        bool has_inline = false;
        if (auto eq = a.find('='); eq != std::string::npos) {
            name = a.substr(0, eq);
            inline_value = a.substr(eq + 1);
            has_inline = true;
        }
        // runc accepts -flag and --flag alike.
        std::string key = name.rfind("--", 0) == 0 ? name.substr(2) : name.substr(1);
        if (auto al = m_aliases.find(key); al != m_aliases.end()) key = al->second;
        auto known = m_known.find(key);
        if (known == m_known.end())
            return Error::from_string(m_command + ": unknown option " + name + " (see husk " + m_command + " --help)");
        std::string v = "true";
        if (known->second) {
            if (has_inline)
                v = inline_value;
            else if (i + 1 < args.size())
                v = args[++i];
            else
                return Error::from_string(m_command + ": " + name + " needs a value");
        } else if (has_inline) {
            v = inline_value;
            if (v != "true" && v != "false")
                return Error::from_string(m_command + ": " + name + " takes true or false");
        }
        if (!m_ignored.count(key)) {
            m_values[key] = v;
            m_all[key].push_back(v);
        }
    }
    return {};
}

std::string ArgParser::get(const std::string& name, const std::string& fallback) const {
    auto it = m_values.find(name);
    return it == m_values.end() ? fallback : it->second;
}

std::vector<std::string> ArgParser::all(const std::string& name) const {
    auto it = m_all.find(name);
    return it == m_all.end() ? std::vector<std::string>{} : it->second;
}

Result<std::string> ArgParser::id() const {
    if (m_positionals.empty()) return Error::from_string(m_command + ": a container ID is required");
    if (m_positionals.size() > 1)
        return Error::from_string(m_command + ": unexpected argument `" + m_positionals[1] + "`");
    return m_positionals[0];
}

}  // namespace husk::runtime
