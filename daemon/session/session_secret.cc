#include "daemon/session/session_secret.h"

#include <sys/random.h>

#include <cerrno>

#include <openssl/crypto.h>

#include "absl/strings/str_cat.h"
#include "transport/base/errno_status.h"

namespace migmover {

absl::StatusOr<SessionSecret> NewSessionSecret() {
  SessionSecret s{};
  size_t got = 0;
  while (got < s.size()) {
    ssize_t n = ::getrandom(s.data() + got, s.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("getrandom(", s.size() - got, " bytes)"), errno);
    }
    got += static_cast<size_t>(n);
  }
  return s;
}

absl::StatusOr<SessionSecret> ParseSessionSecret(absl::string_view bytes, absl::string_view what) {
  SessionSecret s{};
  if (bytes.size() < kMinSecretBytes || bytes.size() > s.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", bytes.size(), " bytes; a session secret is ", kMinSecretBytes,
                     " to ", s.size(), " bytes"));
  }
  std::copy(bytes.begin(), bytes.end(), s.begin());
  if (SecretsEqual(s, SessionSecret{})) {
    // All zeros is what a HELLO without a secret used to carry: a guess anyone makes first.
    return absl::InvalidArgumentError(absl::StrCat(what, " is all zero bytes"));
  }
  return s;
}

absl::Status UnrecognizedSession() {
  return absl::PermissionDeniedError(
      "no session on this daemon accepts this session id with this secret");
}

bool SecretsEqual(const SessionSecret& a, const SessionSecret& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace migmover
