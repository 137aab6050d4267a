#include "vmm/base/system.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

namespace husk {
namespace {

namespace fs = std::filesystem;

// A fresh directory for one test, removed with it however the test ends.
struct ScratchDir {
    explicit ScratchDir(const std::string& name)
        : path(fs::temp_directory_path() / ("husk-system-test-" + std::to_string(::getpid()) + "-" + name)) {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~ScratchDir() { fs::remove_all(path); }
    std::string path;
};

// A client that connects the moment the socket file appears is never refused:
// the file appears only once the socket listens (a daemon's clients, and the
// tests, wait for the file). Bound in place, bind() made the file before
// listen(), and a client spinning on it could land in between.
TEST(System, AUnixSocketFileAppearsOnlyOnceItListens) {
    ScratchDir scratch("appears");
    const std::string& dir = scratch.path;
    for (int round = 0; round < 2000; ++round) {
        std::string path = dir + "/s" + std::to_string(round) + ".sock";
        std::atomic<bool> go{false};
        int refused = 0;
        std::thread client([&] {
            go = true;
            while (::access(path.c_str(), F_OK) != 0) {
            }
            auto c = sys::connect_unix(path);
            if (!c) refused = c.error().code();
        });
        while (!go) std::this_thread::yield();
        auto listening = sys::listen_unix(path, 4);
        client.join();
        ASSERT_TRUE(listening) << listening.error().message();
        ASSERT_EQ(refused, 0) << "round " << round << ": connect failed: " << std::strerror(refused);
    }
    // Nothing but the sockets is left in the directory (no temporary names).
    size_t files = 0;
    for (const auto& entry : fs::directory_iterator(dir)) {
        EXPECT_EQ(entry.path().extension(), ".sock") << entry.path();
        EXPECT_EQ(entry.path().filename().string().rfind("s", 0), 0u) << entry.path();
        ++files;
    }
    EXPECT_EQ(files, 2000u);
}

// A stale socket file (its server gone) is replaced; a path with no room for
// a temporary name beside it in sun_path is bound in place; a mode is set.
TEST(System, AUnixSocketReplacesAStaleOneAndFitsALongPath) {
    ScratchDir scratch("stale");
    const std::string& dir = scratch.path;
    std::string path = dir + "/api.sock";
    {
        auto gone = sys::listen_unix(path, 1);
        ASSERT_TRUE(gone);
    }
    ASSERT_TRUE(fs::exists(path));
    EXPECT_FALSE(sys::connect_unix(path));
    auto again = sys::listen_unix(path, 1);
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_TRUE(sys::connect_unix(path));

    std::string longest = dir + "/" + std::string(107 - dir.size() - 1, 'x');  // sun_path holds 107 and a NUL
    auto full = sys::listen_unix(longest, 1);
    ASSERT_TRUE(full) << full.error().message();
    EXPECT_TRUE(sys::connect_unix(longest));
    EXPECT_FALSE(sys::listen_unix(longest + "y", 1));

    // The mode asked for is the file's from the moment it appears.
    std::string moded = dir + "/moded.sock";
    auto with_mode = sys::listen_unix(moded, 1, 0660);
    ASSERT_TRUE(with_mode) << with_mode.error().message();
    struct stat st {};
    ASSERT_EQ(::stat(moded.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 3);
}

}  // namespace
}  // namespace husk
