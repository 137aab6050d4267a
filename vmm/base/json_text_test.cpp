// Guest bytes that are not UTF-8 in a log line or an API reply.
#include "vmm/base/json_text.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "vmm/base/guarded_thread.h"
#include "vmm/base/log.h"

namespace husk {
namespace {

TEST(JsonText, InvalidUtf8IsReplacedNotThrown) {
    std::string guest = "console \xff\xfe tail \xc3";
    nlohmann::json reply = {{"error", guest}};
    EXPECT_THROW(
        {
            auto t = reply.dump();
            (void)t;
        },
        nlohmann::json::type_error);  // what aborted a thread before
    std::string text;
    ASSERT_NO_THROW(text = json_text(reply));
    EXPECT_NE(text.find("console \xef\xbf\xbd\xef\xbf\xbd tail \xef\xbf\xbd"), std::string::npos) << text;
    EXPECT_TRUE(nlohmann::json::accept(text));
}

TEST(JsonText, JsonLogLinesTakeGuestBytes) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    log::configure("test", log::Level::Info, log::Format::Json);
    log::set_output(p[1]);
    EXPECT_NO_THROW(log::error("the guest console's last lines:\n{}", std::string("\x80\x81 panic")));
    log::set_output(STDERR_FILENO);
    log::configure("test", log::Level::Info, log::Format::Text);
    char buf[512] = {};
    ASSERT_GT(::read(p[0], buf, sizeof buf - 1), 0);
    EXPECT_TRUE(nlohmann::json::accept(std::string(buf))) << buf;
    ::close(p[0]);
    ::close(p[1]);
}

TEST(GuardedThread, AnExceptionIsLoggedAndReportedNotFatal) {
    bool failed = false;
    std::thread t([&] {
        run_guarded(
            "test",
            [] {
                auto j = nlohmann::json::parse("{not json");
                (void)j;
            },
            [&] { failed = true; });
    });
    t.join();
    EXPECT_TRUE(failed);
}

}  // namespace
}  // namespace husk
