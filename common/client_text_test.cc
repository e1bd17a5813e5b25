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

TEST(ClientTextTest, BytesThatAreNotUtf8AreEscapedSoTheResultIsValidUtf8) {
  EXPECT_EQ(ClientText("a\xff\xfe"), "a\\xFF\\xFE");
  EXPECT_EQ(ClientText("\xc3"), "\\xC3");              // a character cut short
  EXPECT_EQ(ClientText("\xc0\xaf"), "\\xC0\\xAF");      // an overlong "/"
  EXPECT_EQ(ClientText("\xed\xa0\x80"), "\\xED\\xA0\\x80");  // a surrogate
  EXPECT_EQ(ClientText("line\nbreak\x7f"), "line\\x0Abreak\\x7F");
  EXPECT_EQ(ClientText("\xf0\x9f\x99\x82 ok"), "\xf0\x9f\x99\x82 ok");
  for (const char* text : {"\xff", "\xc3", "a\xe2\x82", "\xf4\x90\x80\x80"}) {
    EXPECT_FALSE(IsValidUtf8(text)) << text;
    EXPECT_TRUE(IsValidUtf8(ClientText(text))) << ClientText(text);
  }
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82"));
}

}  // namespace
}  // namespace sparse
