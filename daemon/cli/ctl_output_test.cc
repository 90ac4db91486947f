#include "daemon/cli/ctl_output.h"

#include "gtest/gtest.h"

namespace migmover::ctl {
namespace {

TEST(ParseTokenTest, TakesHexAsPrepareprintsItAndBase64AsJsonShowsIt) {
  const std::string secret(32, '\x5a');
  auto hex = ParseToken(Hex(secret));
  ASSERT_TRUE(hex.ok()) << hex.status();
  EXPECT_EQ(*hex, secret);
  auto b64 = ParseToken("WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo=");
  ASSERT_TRUE(b64.ok()) << b64.status();
  EXPECT_EQ(*b64, secret);
}

// A cut or mistyped hex secret is an error, never base64 for some other secret.
TEST(ParseTokenTest, HexDigitsAreHexOnly) {
  for (const std::string& bad : {std::string(24, 'a'), std::string(43, 'a'), std::string(66, 'a'),
                                std::string(44, '0')}) {
    auto t = ParseToken(bad);
    if (bad.size() == 44) {
      EXPECT_TRUE(t.ok()) << "44 hex digits are 22 bytes";
      continue;
    }
    EXPECT_FALSE(t.ok()) << bad.size() << " hex digits";
    EXPECT_NE(t.status().message().find("hex digits"), std::string::npos) << t.status();
  }
  EXPECT_FALSE(ParseToken("").ok());
  EXPECT_FALSE(ParseToken("not a secret!").ok());
  EXPECT_FALSE(ParseToken("WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo").ok()) << "unpadded";
}

TEST(PrintableTest, ControlCharactersFromADaemonCannotReachTheTerminal) {
  EXPECT_EQ(Printable("ok 'quoted' \"text\""), "ok 'quoted' \"text\"");
  EXPECT_EQ(Printable("a\033[2Jb\r\n\x7f"), "a\\x1b[2Jb\\x0d\\x0a\\x7f");
}

}  // namespace
}  // namespace migmover::ctl
