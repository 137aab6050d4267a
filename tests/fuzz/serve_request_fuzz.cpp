// husk serve's requests: the bytes a client sends, through Beast's parser and
// the API's routing and checks (pools are never made: the maker refuses).
#include <string_view>

#include "runtime/serve/service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace husk::runtime::serve;
    static Service service("/nonexistent",
                           [](const PoolConfig&, const std::string&) -> husk::Result<std::shared_ptr<Pool>> {
                               return husk::Error::from_string("no pools while fuzzing", ENOSYS);
                           });
    auto request = parse_request(std::string_view(reinterpret_cast<const char*>(data), size));
    if (!request) return 0;
    (void)format_response(service.handle(request.value()), request.value().keep_alive);
    return 0;
}
