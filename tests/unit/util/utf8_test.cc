// The one UTF-8 encoder, and the cleaning of text from plugins and files before it goes into protobuf strings.
#include <gtest/gtest.h>

#include <string>

#include "util/utf8.h"

namespace atelier {
namespace {

TEST(Utf8Test, EncodesEveryRange) {
  EXPECT_EQ(EncodeUtf8(U"a\u00e9\u72d0\U0001F98A"), "a\xc3\xa9\xe7\x8b\x90\xf0\x9f\xa6\x8a");
  EXPECT_EQ(Latin1ToUtf8("caf\xe9"), "caf\xc3\xa9");
  std::string back;
  ASSERT_TRUE(Utf8ToLatin1("caf\xc3\xa9", back));
  EXPECT_EQ(back, "caf\xe9");
}

TEST(Utf8Test, ValidTextPassesAndBrokenBytesBecomeReplacementCharacters) {
  const std::string good = "ein Fuchs, \xe7\x8b\x90, \xf0\x9f\xa6\x8a";
  EXPECT_EQ(ValidUtf8(good), good);
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(ValidUtf8("a\xe7\x8b"), "a" + fffd + fffd);              // a character cut at the end (atelier_fail)
  EXPECT_EQ(ValidUtf8("\xff" "b"), fffd + "b");                      // never a UTF-8 byte
  EXPECT_EQ(ValidUtf8("\xc0\xaf"), fffd + fffd);                     // overlong '/'
  EXPECT_EQ(ValidUtf8("\xed\xa0\x80"), fffd + fffd + fffd);          // a surrogate
  EXPECT_EQ(ValidUtf8("\xf4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // above U+10FFFF
  EXPECT_EQ(ValidUtf8(""), "");
}

}  // namespace
}  // namespace atelier
