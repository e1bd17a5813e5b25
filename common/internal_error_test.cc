#include "common/internal_error.h"

#include <stdexcept>

#include "gtest/gtest.h"

namespace sparse {
namespace {

TEST(InternalErrorTest, AThrowIsCountedAndBecomesInternal) {
  const int64_t before = InternalErrors(ErrorSite::kLoader);
  const absl::Status s = CatchInternal(ErrorSite::kLoader, [] { throw std::runtime_error("disk on fire"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("loader: disk on fire"), absl::string_view::npos) << s;
  EXPECT_EQ(InternalErrors(ErrorSite::kLoader), before + 1);
}

TEST(InternalErrorTest, TheCalleesOwnStatusPassesThrough) {
  EXPECT_TRUE(CatchInternal(ErrorSite::kGrpc, [] {}).ok());
  EXPECT_EQ(CatchInternal(ErrorSite::kGrpc, [] { return absl::NotFoundError("x"); }).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(CatchInternal(ErrorSite::kGrpc, [] { throw 42; }).code(), absl::StatusCode::kInternal);
}

TEST(InternalErrorTest, AnInjectedFaultThrowsExactlyTheArmedNumberOfTimes) {
  InjectFault(ErrorSite::kCompute, 2);
  int thrown = 0;
  for (int i = 0; i < 5; ++i) {
    if (!CatchInternal(ErrorSite::kCompute, [] { FaultPoint(ErrorSite::kCompute); }).ok()) ++thrown;
  }
  EXPECT_EQ(thrown, 2);
  EXPECT_NO_THROW(FaultPoint(ErrorSite::kHttp));  // other sites stay unarmed
}

}  // namespace
}  // namespace sparse
