#include "vmm/api/api_command.h"

#include <gtest/gtest.h>
#include <signal.h>

namespace husk::api {
namespace {

Command ok(const char* text) {
    auto c = parse_command(nlohmann::json::parse(text));
    EXPECT_FALSE(c.is_error()) << text << ": " << c.error().message();
    return c.is_error() ? Command{} : c.value();
}

std::string refused(const char* text) {
    auto c = parse_command(nlohmann::json::parse(text));
    EXPECT_TRUE(c.is_error()) << text << " was accepted";
    return c.is_error() ? c.error().message() : std::string();
}

TEST(ApiCommand, EveryCommandParsesWithItsDefaults) {
    for (const char* name : {"state", "pause", "resume", "stats", "reset", "start"}) {
        auto c = ok((std::string(R"({"cmd":")") + name + "\"}").c_str());
        EXPECT_STREQ(command_name(c), name);
    }
    auto kill = std::get<Kill>(ok(R"({"cmd":"kill"})"));
    EXPECT_EQ(kill.signal, SIGTERM);
    EXPECT_FALSE(kill.all);
    kill = std::get<Kill>(ok(R"({"cmd":"kill","signal":9,"all":true})"));
    EXPECT_EQ(kill.signal, 9);
    EXPECT_TRUE(kill.all);
    auto balloon = std::get<Balloon>(ok(R"({"cmd":"balloon"})"));
    EXPECT_FALSE(balloon.target_mib);
    EXPECT_TRUE(balloon.fresh_stats);
    balloon = std::get<Balloon>(ok(R"({"cmd":"balloon","target_mib":64,"stats":false})"));
    EXPECT_EQ(balloon.target_mib, 64u);
    EXPECT_FALSE(balloon.fresh_stats);
    EXPECT_EQ(std::get<Snapshot>(ok(R"({"cmd":"snapshot","path":"/s"})")).path, "/s");
    EXPECT_EQ(std::get<Restore>(ok(R"({"cmd":"restore","path":"/s"})")).path, "/s");
    auto resize = std::get<Resize>(ok(R"({"cmd":"resize","rows":24,"cols":80})"));
    EXPECT_EQ(resize.rows, 24);
    EXPECT_EQ(resize.cols, 80);
    auto plug = ok(R"({"cmd":"plug_net"})");
    EXPECT_TRUE(std::holds_alternative<PlugNet>(plug));
    EXPECT_STREQ(command_name(plug), "plug_net");
    EXPECT_FALSE(needs_container(plug));
}

TEST(ApiCommand, BadRequestsAreRefusedWithTheFieldNamed) {
    EXPECT_EQ(refused(R"([1,2])"), "a request is a JSON object with a \"cmd\" string");
    EXPECT_EQ(refused(R"({"cmd":7})"), "a request is a JSON object with a \"cmd\" string");
    EXPECT_EQ(refused(R"({"cmd":"bogus"})"), "unknown command `bogus`");
    EXPECT_EQ(refused(R"({"cmd":"snapshot"})"), "snapshot needs a \"path\": the directory to write");
    EXPECT_NE(refused(R"({"cmd":"snapshot","path":5})").find("\"path\""), std::string::npos);
    EXPECT_EQ(refused(R"({"cmd":"restore"})"), "restore needs a \"path\": a snapshot directory");
    for (const char* bad :
         {R"({"cmd":"kill","signal":0})", R"({"cmd":"kill","signal":65})", R"({"cmd":"kill","signal":"TERM"})",
          R"({"cmd":"kill","signal":1.5})", R"({"cmd":"kill","signal":18446744073709551615})"})
        EXPECT_NE(refused(bad).find("\"signal\""), std::string::npos) << bad;
    EXPECT_NE(refused(R"({"cmd":"kill","all":"yes"})").find("\"all\""), std::string::npos);
    EXPECT_EQ(refused(R"({"cmd":"resize","rows":24})"), "resize needs rows and cols");
    EXPECT_NE(refused(R"({"cmd":"resize","rows":0,"cols":80})").find("\"rows\""), std::string::npos);
    EXPECT_NE(refused(R"({"cmd":"resize","rows":24,"cols":70000})").find("\"cols\""), std::string::npos);
    EXPECT_EQ(refused(R"({"cmd":"balloon","target_mib":-1})"), "balloon: target_mib must be a whole number of MiB");
    EXPECT_NE(refused(R"({"cmd":"balloon","stats":1})").find("\"stats\""), std::string::npos);
}

TEST(ApiCommand, OnlyContainerCommandsNeedAContainer) {
    EXPECT_TRUE(needs_container(ok(R"({"cmd":"start"})")));
    EXPECT_TRUE(needs_container(ok(R"({"cmd":"kill"})")));
    EXPECT_TRUE(needs_container(ok(R"({"cmd":"resize","rows":1,"cols":1})")));
    EXPECT_FALSE(needs_container(ok(R"({"cmd":"pause"})")));
    EXPECT_FALSE(needs_container(ok(R"({"cmd":"reset"})")));
}

}  // namespace
}  // namespace husk::api
