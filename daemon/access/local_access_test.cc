#include "daemon/access/local_access.h"

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"

namespace migmover {
namespace {

PeerCredentials Peer(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}) {
  PeerCredentials p;
  p.pid = 4242;
  p.uid = uid;
  p.gid = gid;
  p.groups = std::move(groups);
  return p;
}

TEST(LocalAccessTest, RootAndTheDaemonsOwnUidAreAlwaysAllowed) {
  auto a = LocalAccess::Parse("", "");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->Check(Peer(0, 0), "x").ok());
  EXPECT_TRUE(a->Check(Peer(::geteuid(), 12345), "x").ok());
}

TEST(LocalAccessTest, OtherUidsAreRefusedUnlessListedByUidOrGroup) {
  auto none = LocalAccess::Parse("", "");
  ASSERT_TRUE(none.ok());
  absl::Status refused = none->Check(Peer(54321, 54321), "the gRPC API");
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(refused.message().find("pid 4242 uid 54321 gid 54321 may not use the gRPC API"),
            absl::string_view::npos)
      << refused;

  auto by_uid = LocalAccess::Parse("54321", "");
  ASSERT_TRUE(by_uid.ok());
  EXPECT_TRUE(by_uid->Check(Peer(54321, 1), "x").ok());
  EXPECT_FALSE(by_uid->Check(Peer(54322, 1), "x").ok());

  auto by_gid = LocalAccess::Parse("", " 777 ,778");
  ASSERT_TRUE(by_gid.ok());
  EXPECT_TRUE(by_gid->Check(Peer(54321, 778), "x").ok()) << "primary group";
  EXPECT_TRUE(by_gid->Check(Peer(54321, 1, {5, 777}), "x").ok()) << "supplementary group";
  EXPECT_FALSE(by_gid->Check(Peer(54321, 1, {5, 6}), "x").ok());
}

TEST(LocalAccessTest, NamesResolveAndUnknownNamesAreErrors) {
  auto root = LocalAccess::Parse("root", "root");
  ASSERT_TRUE(root.ok()) << root.status();
  auto bad = LocalAccess::Parse("no-such-user-here", "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("no-such-user-here"), absl::string_view::npos);
  EXPECT_EQ(LocalAccess::Parse("", "no-such-group-here").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LocalAccessTest, CredentialsComeFromTheKernel) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  auto p = PeerCredentialsOf(a.get());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->pid, ::getpid());
  EXPECT_EQ(p->uid, ::geteuid());
  EXPECT_EQ(p->gid, ::getegid());
}

}  // namespace
}  // namespace migmover
