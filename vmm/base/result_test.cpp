#include "vmm/base/result.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <memory>

#include "vmm/base/system.h"

namespace husk {
namespace {

Result<int> parse_positive(int v) {
    if (v <= 0) return Error::from_string("value must be positive");
    return v;
}

Result<int> doubled(int v) {
    int x = TRY(parse_positive(v));
    return 2 * x;
}

Result<void> open_missing() {
    TRY_CTX(sys::open("/nonexistent/husk-test", O_RDONLY), "load config");
    return {};
}

TEST(Result, ValuePassesThroughTry) {
    auto r = doubled(21);
    ASSERT_FALSE(r.is_error());
    EXPECT_EQ(r.value(), 42);
}

TEST(Result, ErrorPropagatesThroughTry) {
    auto r = doubled(-1);
    ASSERT_TRUE(r.is_error());
    EXPECT_EQ(r.error().code(), EINVAL);
    EXPECT_EQ(r.error().message(), "value must be positive");
}

TEST(Result, ContextChainReadsOutermostFirst) {
    auto r = open_missing();
    ASSERT_TRUE(r.is_error());
    EXPECT_EQ(r.error().code(), ENOENT);
    EXPECT_EQ(r.error().message(), "load config: open `/nonexistent/husk-test`: No such file or directory");
}

TEST(Result, ContextOnSuccessIsNoop) {
    Result<int> r = Result<int>(5).context("unused");
    ASSERT_FALSE(r.is_error());
    EXPECT_EQ(r.value(), 5);
}

TEST(Result, HoldsMoveOnlyValues) {
    Result<std::unique_ptr<int>> r(std::make_unique<int>(7));
    auto p = r.release_value();
    EXPECT_EQ(*p, 7);
}

TEST(Result, VoidResult) {
    Result<void> ok;
    EXPECT_FALSE(ok.is_error());
    Result<void> bad = Error::from_errno(EPERM, "setns");
    ASSERT_TRUE(bad.is_error());
    EXPECT_EQ(bad.error().message(), "setns: Operation not permitted");
}

}  // namespace
}  // namespace husk
