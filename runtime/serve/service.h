// The API of `husk serve` (runtime/serve/API.md): routes HTTP requests to
// pools, and renders their state and the Prometheus metrics.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "runtime/serve/http.h"
#include "runtime/serve/pool.h"

namespace husk::runtime::serve {

// A pool maker: the real one builds VMs; unit tests and the fuzz target give their own.
using PoolMaker = std::function<Result<std::shared_ptr<Pool>>(const PoolConfig&, const std::string& dir)>;

class Service {
public:
    // Pools live in `root`/<name>.
    Service(std::string root, PoolMaker maker);
    HttpResponse handle(const HttpRequest& request);
    // Refuses new work, drains every pool (at most `drain`), stops its VMs.
    void shutdown(std::chrono::milliseconds drain);
    std::string metrics() const;

private:
    HttpResponse route(const HttpRequest& request);
    HttpResponse create_pool(const HttpRequest& request);
    std::shared_ptr<Pool> find(const std::string& name) const;

    std::string m_root;
    PoolMaker m_maker;
    mutable std::mutex m_lock;
    std::map<std::string, std::shared_ptr<Pool>> m_pools;
    std::set<std::string> m_creating;
    bool m_closing = false;
    uint64_t m_requests = 0, m_bad_requests = 0;
};

// The HTTP status an error's code stands for (pool.h lists them).
int status_for(const Error& error);

}  // namespace husk::runtime::serve
