#include "runtime/serve/service.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "vmm/base/log.h"

namespace husk::runtime::serve {

namespace {

using Json = nlohmann::json;

std::string dump(const Json& j) {
    // Output a guest wrote need not be UTF-8: invalid bytes read as U+FFFD.
    return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

HttpResponse json_response(int status, const Json& body) {
    return {status, dump(body)};
}

HttpResponse error_response(const Error& e) {
    return json_response(status_for(e), {{"error", e.message()}});
}

HttpResponse error_response(int status, const std::string& message) {
    return json_response(status, {{"error", message}});
}

Result<Json> parse_body(const HttpRequest& request) {
    if (request.body.empty()) return Json::object();
    Json body = Json::parse(request.body, nullptr, false);
    if (body.is_discarded()) return Error::from_string("the body is not JSON", EINVAL);
    return body;
}

std::vector<std::string> split_path(const std::string& target) {
    std::string path = target.substr(0, target.find('?'));
    std::vector<std::string> parts;
    size_t at = 0;
    while (at < path.size()) {
        size_t next = path.find('/', at);
        if (next == std::string::npos) next = path.size();
        if (next > at) parts.push_back(path.substr(at, next - at));
        at = next + 1;
    }
    return parts;
}

// A Prometheus label value.
std::string label(const std::string& value) {
    std::string out;
    for (char c : value) {
        if (c == '\\' || c == '"') out += '\\';
        out += c == '\n' ? ' ' : c;
    }
    return out;
}

// How many leading bytes of `data` end on a whole UTF-8 character: a
// character split between two reads is sent whole with the second.
size_t whole_utf8(std::string_view data) {
    size_t n = data.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        unsigned char c = static_cast<unsigned char>(data[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
        size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return want > back ? n - back : n;
    }
    return n;
}

// POST /pools/NAME/invoke with "stream": NDJSON lines as output comes, then
// the result (or the error) as the last line.
HttpResponse stream_invocation(std::shared_ptr<Pool> pool, InvokeRequest request) {
    HttpResponse response{200, "", "application/x-ndjson"};
    response.stream = [pool = std::move(pool), request = std::move(request)](const ChunkWriter& write) {
        std::string held[3];
        OutputSink sink = [&](int channel, std::string_view data) {
            std::string& text = held[channel];
            text.append(data);
            size_t whole = whole_utf8(text);
            if (whole == 0) return true;
            bool ok = write(dump({{channel == 1 ? "stdout" : "stderr", text.substr(0, whole)}}));
            text.erase(0, whole);
            return ok;
        };
        auto result = pool->invoke(request, &sink);
        for (int channel : {1, 2})
            if (!held[channel].empty()) write(dump({{channel == 1 ? "stdout" : "stderr", held[channel]}}));
        if (!result) {
            write(dump({{"error", result.error().message()}, {"status", status_for(result.error())}}));
            return;
        }
        Json last = to_json(result.value());
        last.erase("stdout");
        last.erase("stderr");
        write(dump(last));
    };
    return response;
}

}  // namespace

int status_for(const Error& error) {
    switch (error.code()) {
        case EINVAL:
            return 400;
        case ENOENT:
            return 404;
        case EEXIST:
            return 409;
        case EAGAIN:
            return 429;
        case ETIMEDOUT:
            return 504;
        case EMSGSIZE:
        case ENOMEM:
        case EPIPE:
            return 502;
        case ESHUTDOWN:
            return 503;
        default:
            return 500;
    }
}

Service::Service(std::string root, PoolMaker maker) : m_root(std::move(root)), m_maker(std::move(maker)) {}

HttpResponse Service::handle(const HttpRequest& request) {
    auto started = std::chrono::steady_clock::now();
    HttpResponse response = route(request);
    {
        std::lock_guard lock(m_lock);
        m_requests++;
        if (response.status == 400) m_bad_requests++;
    }
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    if (response.status >= 400)
        log::warn("{} {}: {} in {:.1f} ms: {}", request.method, request.target, response.status, ms,
                  response.body.substr(0, 300));
    else
        log::info("{} {}: {} in {:.1f} ms", request.method, request.target, response.status, ms);
    return response;
}

HttpResponse Service::route(const HttpRequest& request) {
    auto parts = split_path(request.target);
    const std::string& m = request.method;
    if (parts.size() == 1 && parts[0] == "metrics") {
        if (m != "GET") return error_response(405, "GET /metrics");
        return {200, metrics(), "text/plain; version=0.0.4"};
    }
    if (parts.size() == 1 && parts[0] == "health") {
        if (m != "GET") return error_response(405, "GET /health");
        return json_response(200, {{"status", "ok"}});
    }
    if (parts.empty() || parts[0] != "pools") return error_response(404, "no such resource: " + request.target);
    if (parts.size() == 1) {
        if (m == "POST") return create_pool(request);
        if (m != "GET") return error_response(405, "GET or POST /pools");
        std::lock_guard lock(m_lock);
        Json names = Json::array();
        for (const auto& [name, pool] : m_pools) names.push_back(name);
        return json_response(200, {{"pools", names}});
    }
    const std::string& name = parts[1];
    if (parts.size() == 2) {
        if (m == "GET") {
            auto pool = find(name);
            if (!pool) return error_response(404, "no pool `" + name + "`");
            return json_response(200, pool->status());
        }
        if (m == "DELETE") {
            std::shared_ptr<Pool> pool;
            {
                std::lock_guard lock(m_lock);
                auto it = m_pools.find(name);
                if (it == m_pools.end()) return error_response(404, "no pool `" + name + "`");
                pool = std::move(it->second);
                m_pools.erase(it);
            }
            pool->shutdown(std::chrono::seconds(60));
            return json_response(200, {{"deleted", name}});
        }
        return error_response(405, "GET or DELETE /pools/{name}");
    }
    if (parts.size() == 3 && parts[2] == "invoke") {
        if (m != "POST") return error_response(405, "POST /pools/{name}/invoke");
        auto body = parse_body(request);
        if (!body) return error_response(body.error());
        auto invoke = parse_invoke_request(body.value());
        if (!invoke) return error_response(invoke.error());
        auto pool = find(name);
        if (!pool) return error_response(404, "no pool `" + name + "`");
        if (invoke.value().stream) return stream_invocation(pool, invoke.release_value());
        auto result = pool->invoke(invoke.value());
        if (!result) return error_response(result.error());
        return json_response(200, to_json(result.value()));
    }
    return error_response(404, "no such resource: " + request.target);
}

HttpResponse Service::create_pool(const HttpRequest& request) {
    auto body = parse_body(request);
    if (!body) return error_response(body.error());
    auto config = parse_pool_config(body.value());
    if (!config) return error_response(config.error());
    const std::string name = config.value().name;
    {
        std::lock_guard lock(m_lock);
        if (m_closing) return error_response(503, "the server is shutting down");
        if (m_pools.count(name) || m_creating.count(name)) return error_response(409, "pool `" + name + "` exists");
        m_creating.insert(name);
    }
    auto made = m_maker(config.value(), m_root + "/" + name);
    std::lock_guard lock(m_lock);
    m_creating.erase(name);
    if (!made) {
        // The caller's mistake (400, 409), or a build that failed here (500), whatever errno it carried.
        int code = made.error().code();
        return error_response(code == EINVAL || code == EEXIST ? status_for(made.error()) : 500,
                              made.error().message());
    }
    if (m_closing) {
        made.value()->shutdown(std::chrono::milliseconds(0));
        return error_response(503, "the server is shutting down");
    }
    m_pools[name] = made.value();
    return json_response(201, made.value()->status());
}

std::shared_ptr<Pool> Service::find(const std::string& name) const {
    std::lock_guard lock(m_lock);
    auto it = m_pools.find(name);
    return it == m_pools.end() ? nullptr : it->second;
}

void Service::shutdown(std::chrono::milliseconds drain) {
    std::map<std::string, std::shared_ptr<Pool>> pools;
    {
        std::lock_guard lock(m_lock);
        m_closing = true;
        pools = std::move(m_pools);
        m_pools.clear();
    }
    for (auto& [name, pool] : pools) pool->shutdown(drain);
}

std::string Service::metrics() const {
    std::map<std::string, PoolStats> stats;
    uint64_t requests, bad;
    {
        std::lock_guard lock(m_lock);
        for (const auto& [name, pool] : m_pools) stats[name] = pool->stats();
        requests = m_requests;
        bad = m_bad_requests;
    }
    std::string out;
    auto family = [&](const char* name, const char* type, const char* help) {
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    };
    auto each = [&](const char* name, auto value) {
        for (const auto& [pool, s] : stats) out += fmt::format("{}{{pool=\"{}\"}} {}\n", name, label(pool), value(s));
    };
    family("husk_serve_requests_total", "counter", "HTTP requests served");
    out += fmt::format("husk_serve_requests_total {}\nhusk_serve_bad_requests_total {}\n", requests, bad);
    family("husk_serve_invocations_total", "counter", "Invocations run, failed ones included");
    each("husk_serve_invocations_total", [](const PoolStats& s) { return s.invocations; });
    family("husk_serve_invocation_failures_total", "counter", "Invocations that failed");
    for (const auto& [pool, s] : stats) {
        std::string p = label(pool);
        out += fmt::format("husk_serve_invocation_failures_total{{pool=\"{}\",kind=\"timeout\"}} {}\n", p, s.timeouts);
        out += fmt::format("husk_serve_invocation_failures_total{{pool=\"{}\",kind=\"output\"}} {}\n", p,
                           s.output_overflows);
        out +=
            fmt::format("husk_serve_invocation_failures_total{{pool=\"{}\",kind=\"memory\"}} {}\n", p, s.memory_kills);
        out += fmt::format("husk_serve_invocation_failures_total{{pool=\"{}\",kind=\"vm\"}} {}\n", p, s.vm_losses);
        out += fmt::format("husk_serve_invocation_failures_total{{pool=\"{}\",kind=\"other\"}} {}\n", p,
                           s.failures - s.timeouts - s.output_overflows - s.memory_kills - s.vm_losses);
    }
    family("husk_serve_refused_total", "counter", "Invocations refused with 429: the queue was full");
    each("husk_serve_refused_total", [](const PoolStats& s) { return s.refused; });
    family("husk_serve_resets_total", "counter", "In-place resets after an invocation");
    each("husk_serve_resets_total", [](const PoolStats& s) { return s.resets; });
    family("husk_serve_reset_seconds_sum", "counter", "Time spent in resets");
    each("husk_serve_reset_seconds_sum", [](const PoolStats& s) { return double(s.reset_us_total) / 1e6; });
    family("husk_serve_vms_replaced_total", "counter", "VMs killed and restored afresh");
    each("husk_serve_vms_replaced_total", [](const PoolStats& s) { return s.replaced; });
    family("husk_serve_vms_scaled_up_total", "counter", "VMs restored beyond the pool's size for waiting invocations");
    each("husk_serve_vms_scaled_up_total", [](const PoolStats& s) { return s.scaled_up; });
    family("husk_serve_vms_scaled_down_total", "counter",
           "VMs beyond the pool's size stopped after scale_down_ms idle");
    each("husk_serve_vms_scaled_down_total", [](const PoolStats& s) { return s.scaled_down; });
    family("husk_serve_vms", "gauge", "The pool's VMs by state");
    for (const auto& [pool, s] : stats) {
        std::string p = label(pool);
        out += fmt::format("husk_serve_vms{{pool=\"{}\",state=\"idle\"}} {}\n", p, s.idle);
        out += fmt::format("husk_serve_vms{{pool=\"{}\",state=\"busy\"}} {}\n", p, s.busy);
        out += fmt::format("husk_serve_vms{{pool=\"{}\",state=\"starting\"}} {}\n", p, s.starting);
    }
    family("husk_serve_queued", "gauge", "Invocations waiting for a VM");
    each("husk_serve_queued", [](const PoolStats& s) { return s.queued; });
    return out;
}

}  // namespace husk::runtime::serve
