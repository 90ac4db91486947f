#include "daemon/session/session_secret.h"

#include <string>

#include "gtest/gtest.h"

namespace migmover {
namespace {

TEST(SessionSecretTest, GeneratedSecretsAreFullLengthAndDistinct) {
  auto a = NewSessionSecret();
  auto b = NewSessionSecret();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_FALSE(SecretsEqual(*a, *b));
  EXPECT_FALSE(SecretsEqual(*a, SessionSecret{})) << "all zeros is what 'no secret' used to be";
}

TEST(SessionSecretTest, AgentSecretsAreSixteenToThirtyTwoBytes) {
  EXPECT_EQ(ParseSessionSecret("", "token").status().code(), absl::StatusCode::kInvalidArgument);
  auto short_one = ParseSessionSecret("fifteen bytes!!", "token");
  EXPECT_EQ(short_one.status().code(), absl::StatusCode::kInvalidArgument);
  // The error names the length, never the bytes.
  EXPECT_EQ(short_one.status().message().find("fifteen"), std::string::npos);
  EXPECT_EQ(ParseSessionSecret(std::string(33, 'x'), "token").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto ok = ParseSessionSecret("sixteen bytes!!!", "token");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)[15], '!');
  EXPECT_EQ((*ok)[16], 0) << "zero-padded to 32 bytes";
  EXPECT_TRUE(ParseSessionSecret(std::string(32, 'y'), "token").ok());
  // All zeros is what HELLOs without a secret used to carry.
  EXPECT_EQ(ParseSessionSecret(std::string(16, '\0'), "token").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SessionSecretTest, ComparisonSeesEveryByte) {
  SessionSecret a{}, b{};
  a[31] = 1;
  EXPECT_FALSE(SecretsEqual(a, b));
  b[31] = 1;
  EXPECT_TRUE(SecretsEqual(a, b));
}

}  // namespace
}  // namespace migmover
