// ApiServer: husk-vmm's control socket. One JSON object per line in, one per
// line out (vmm/api/API.md). A thread accepts clients one at a time; requests
// are short, and a client may send several on one connection.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk {

class ApiServer {
public:
    // Returns the reply; {"error": "..."} for a failed request.
    using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

    // Binds and listens; clients wait in the backlog until start().
    static Result<std::unique_ptr<ApiServer>> create(const std::string& path, Handler handler);
    // Starts the thread that serves them.
    void start();
    ~ApiServer();  // stops the thread and removes the socket

private:
    ApiServer(std::string path, UniqueFd listener, UniqueFd stop, Handler handler);
    void serve();
    void serve_client(int fd);

    std::string m_path;
    UniqueFd m_listener;
    UniqueFd m_stop;
    Handler m_handler;
    std::thread m_thread;
};

}  // namespace husk
