#include "common/client_text.h"

#include <string>

#include "gtest/gtest.h"

namespace sparse {
namespace {

TEST(ClientTextTest, ShortTextIsQuotedWhole) {
  EXPECT_EQ(ClientText("poly_dsm"), "poly_dsm");
  EXPECT_EQ(ClientText(std::string(kMaxClientTextBytes, 'a')), std::string(kMaxClientTextBytes, 'a'));
}

TEST(ClientTextTest, LongTextIsCutWithAMarkerSayingHowMuchWasLeftOut) {
  const std::string name(64 << 10, 'x');
  const std::string quoted = ClientText(name);
  EXPECT_EQ(quoted, std::string(kMaxClientTextBytes, 'x') + "...[" +
                        std::to_string(name.size() - kMaxClientTextBytes) + " more bytes]");
  EXPECT_LT(quoted.size(), 200u);
}

TEST(ClientTextTest, NeverSplitsAUtf8Character) {
  // "é" is two bytes: a cut after 3 bytes would split the second one.
  EXPECT_EQ(ClientText("\xc3\xa9\xc3\xa9\xc3\xa9", 3), "\xc3\xa9...[4 more bytes]");
}

}  // namespace
}  // namespace sparse
