// husk-bench report: turns a results directory into report.html (tables and
// SVG bar charts, self-contained: no network needed to view it) and
// summary.md (one Markdown table), from the newest result of each scenario.
//
// Figures are paired generically: a median at a path naming a side (husk,
// qemu, runc, crun) is matched with the same path naming another side —
// /husk/create_ms with /runc/create_ms, /docker_husk with /docker_runc,
// /husk/qd1/husk_iops with /husk/qd1/qemu_iops.
#include <dirent.h>
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "bench/common.h"

namespace husk::bench {

namespace {

// "cold_boot": husk itself booting where the figure is of a restored VM.
const std::vector<std::string> kSides = {"husk", "qemu", "runc", "crun", "cold_boot"};

struct Figure {
    std::string name;                      // the path with the side replaced by {}
    std::map<std::string, double> median;  // side → value
    std::map<std::string, double> p90;
};

struct Scenario {
    std::string name, file, date, machine;
    bool in_rig = false;
    std::vector<Figure> figures;
};

// The last path component that names a side, and the path with it replaced.
std::optional<std::pair<std::string, std::string>> side_of(const std::vector<std::string>& path) {
    for (size_t i = path.size(); i-- > 0;) {
        for (const auto& side : kSides) {
            auto at = path[i].find(side);
            if (at == std::string::npos) continue;
            std::string norm;
            for (size_t j = 0; j < path.size(); ++j) {
                std::string part = path[j];
                if (j == i) part.replace(at, side.size(), "{}");
                norm += "/" + part;
            }
            return std::pair(side, norm);
        }
    }
    return std::nullopt;
}

void collect(const json& node, std::vector<std::string>& path, std::map<std::string, Figure>& out) {
    if (!node.is_object()) return;
    if (node.contains("median") && node["median"].is_number()) {
        if (auto s = side_of(path)) {
            auto& f = out[s->second];
            f.name = s->second;
            f.median[s->first] = node["median"].get<double>();
            if (node.contains("p90") && node["p90"].is_number()) f.p90[s->first] = node["p90"].get<double>();
        }
        return;
    }
    for (const auto& [key, value] : node.items()) {
        if (key == "machine" || key == "commands" || key == "samples" || key == "runs_detail") continue;
        path.push_back(key);
        // Plain numbers that are figures in their own right: memory and IOPS.
        if (value.is_number() &&
            (key.ends_with("_kib") || key.ends_with("_iops") || key.ends_with("_mib") || key.ends_with("_vms"))) {
            if (auto s = side_of(path)) {
                auto& f = out[s->second];
                f.name = s->second;
                f.median[s->first] = value.get<double>();
            }
        }
        collect(value, path, out);
        path.pop_back();
    }
}

std::string unit_of(const std::string& name) {
    if (name.find("_ms") != std::string::npos || name.find("docker") != std::string::npos ||
        name.find("ctr") != std::string::npos)
        return "ms";
    if (name.ends_with("_us")) return "µs";
    if (name.find("_kib") != std::string::npos) return "KiB";
    if (name.ends_with("_mib")) return "MiB";
    if (name.ends_with("_vms")) return "VMs";
    if (name.find("iops") != std::string::npos) return "IOPS";
    if (name.find("per_second") != std::string::npos) return "req/s";
    return "";
}

bool higher_is_better(const std::string& unit, const std::string& name) {
    return unit == "IOPS" || unit == "req/s" || unit == "VMs" || name.find("returned") != std::string::npos;
}

std::string pretty(std::string name) {
    // "/husk/qd1/{}_iops" → "qd1 iops"; "/{}/create_ms" → "create"; the unit has its own column.
    if (name.rfind("/husk/", 0) == 0 && name.find("{}") > 5) name.erase(0, 5);
    if (auto at = name.find("{}"); at != std::string::npos) name.erase(at, 2);
    for (const char* suffix : {"_ms", "_kib", "_us", "_mib", "_vms"})
        if (name.ends_with(suffix)) name.erase(name.size() - std::string(suffix).size());
    std::string out;
    for (char ch : name) out += (ch == '_' || ch == '/') ? ' ' : ch;
    while (out.find("  ") != std::string::npos) out.replace(out.find("  "), 2, " ");
    while (!out.empty() && out.front() == ' ') out.erase(0, 1);
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out.empty() ? "value" : out;
}

std::string html_escape(const std::string& s) {
    std::string o;
    for (char ch : s) {
        if (ch == '<')
            o += "&lt;";
        else if (ch == '>')
            o += "&gt;";
        else if (ch == '&')
            o += "&amp;";
        else
            o += ch;
    }
    return o;
}

std::string number(double v) {
    return v >= 100 ? fmt::format("{:.0f}", v) : fmt::format("{:.3g}", v);
}

// One horizontal bar pair per figure, each row scaled to its own largest value.
std::string svg_chart(const Scenario& s) {
    const int row_h = 34, label_w = 300, bar_w = 420;
    int rows = 0;
    for (const auto& f : s.figures) rows += f.median.size() > 1 ? 1 : 0;
    if (rows == 0) return "";
    std::string svg = fmt::format(
        R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12">)",
        label_w + bar_w + 160, rows * row_h + 10);
    int y = 5;
    for (const auto& f : s.figures) {
        if (f.median.size() < 2) continue;
        double max = 0;
        for (const auto& [side, v] : f.median) max = std::max(max, v);
        svg += fmt::format(R"(<text x="0" y="{}">{}</text>)", y + 18, html_escape(pretty(f.name)));
        int i = 0;
        for (const auto& [side, v] : f.median) {
            int w = max > 0 ? int(v / max * bar_w) : 0;
            const char* color = side == "husk" ? "#2b7bb9" : "#b0b0b0";
            svg += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="13" fill="{}"/>)", label_w, y + i * 15,
                               std::max(w, 1), color);
            svg += fmt::format(R"(<text x="{}" y="{}">{} {} {}</text>)", label_w + std::max(w, 1) + 4, y + i * 15 + 11,
                               side, number(v), unit_of(f.name));
            if (++i == 2) break;
        }
        y += row_h;
    }
    return svg + "</svg>";
}

std::vector<Scenario> load(const std::string& dir) {
    std::map<std::string, std::string> newest;  // scenario → newest file (names sort by date)
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d)) {
            std::string name = e->d_name;
            if (!name.ends_with(".json")) continue;
            std::ifstream f(dir + "/" + name);
            json j;
            try {
                j = json::parse(f);
            } catch (...) {
                continue;
            }
            if (!j.is_object() || !j.contains("scenario")) continue;
            std::string scenario = j["scenario"];
            if (newest[scenario] < name) newest[scenario] = name;
        }
        ::closedir(d);
    }
    std::vector<Scenario> out;
    for (const auto& [scenario, file] : newest) {
        std::ifstream f(dir + "/" + file);
        json j = json::parse(f);
        Scenario s;
        s.name = scenario;
        s.file = file;
        s.date = j["machine"].value("date", "");
        // The result says where it ran; results from before it did were rig runs for these scenarios.
        s.in_rig = j["machine"].contains("in_rig")
                       ? j["machine"].value("in_rig", false)
                       : (scenario == "boot" || scenario == "blk-iops" || scenario == "agent" ||
                          scenario == "container-start" || scenario == "density");
        s.machine = fmt::format("{} ({}, {} CPUs, kernel {}, KVM {})", j["machine"].value("hostname", ""),
                                j["machine"].value("cpu", ""), j["machine"].value("cpus", 0),
                                j["machine"].value("kernel", ""), j["machine"].value("kvm_backend", ""));
        std::map<std::string, Figure> figures;
        std::vector<std::string> path;
        collect(j, path, figures);
        for (auto& [name, fig] : figures) s.figures.push_back(fig);
        out.push_back(std::move(s));
    }
    return out;
}

}  // namespace

int report(const std::string& dir, const std::string& out_dir) {
    auto scenarios = load(dir);
    if (scenarios.empty()) {
        fmt::print(stderr, "husk-bench report: no results in {}\n", dir);
        return 1;
    }
    std::string md =
        "| scenario | figure | husk | peer | peer's figure | husk / peer | where |\n|---|---|---|---|---|---|---|\n";
    std::string html =
        "<!doctype html><meta charset=\"utf-8\"><title>husk benchmark report</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style>"
        "<h1>husk benchmark report</h1><p>Newest result of each scenario in <code>" +
        html_escape(dir) +
        "</code>. Rig figures (nested TCG) are meaningful as ratios only. "
        "Bars: medians, each row scaled to its larger value; blue is husk.</p>";
    for (const auto& s : scenarios) {
        html += fmt::format("<h2>{}</h2><p>{} — {}{}</p>", html_escape(s.name), html_escape(s.file),
                            html_escape(s.machine), s.in_rig ? " — inside the nested rig" : "");
        html += svg_chart(s);
        html += "<table><tr><th>figure</th><th>husk</th><th>peer</th><th>peer's figure</th><th>husk / peer</th></tr>";
        for (const auto& f : s.figures) {
            std::string unit = unit_of(f.name);
            auto husk = f.median.find("husk");
            std::string husk_text = husk == f.median.end() ? "—" : number(husk->second) + " " + unit;
            bool any_peer = false;
            for (const auto& [side, v] : f.median) {
                if (side == "husk") continue;
                any_peer = true;
                std::string ratio = husk == f.median.end() || v == 0 ? "—" : fmt::format("{:.2f}", husk->second / v);
                if (husk != f.median.end() && higher_is_better(unit, f.name)) ratio += " (higher is better)";
                md += fmt::format("| {} | {} | {} | {} | {} {} | {} | {} |\n", s.name, pretty(f.name), husk_text, side,
                                  number(v), unit, ratio, s.in_rig ? "rig" : "native");
                html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>",
                                    html_escape(pretty(f.name)), husk_text, side, number(v), unit, ratio);
            }
            if (!any_peer) {
                md += fmt::format("| {} | {} | {} | — | — | — | {} |\n", s.name, pretty(f.name), husk_text,
                                  s.in_rig ? "rig" : "native");
                html += fmt::format("<tr><td>{}</td><td>{}</td><td>—</td><td>—</td><td>—</td></tr>",
                                    html_escape(pretty(f.name)), husk_text);
            }
        }
        html += "</table>";
    }
    std::ofstream(out_dir + "/report.html") << html << "\n";
    std::ofstream(out_dir + "/summary.md") << md;
    fmt::print("{}", md);
    fmt::print(stderr, "wrote {0}/report.html and {0}/summary.md\n", out_dir);
    return 0;
}

}  // namespace husk::bench
