// The session secret: 32 bytes both daemons of a session know and a source presents in every
// HELLO of the session (api/PEER_PROTOCOL.md "Authentication"). Never optional: a destination
// whose agent gives none generates one and returns it once, in PrepareDestination's reply, for
// the agent to hand to the source.
#ifndef MIGMOVER_DAEMON_SESSION_SESSION_SECRET_H_
#define MIGMOVER_DAEMON_SESSION_SESSION_SECRET_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "api/peer_wire.h"

namespace migmover {

using SessionSecret = std::array<uint8_t, wire::kTokenSize>;

// An agent-given secret is this long at least (shorter ones are zero-padded to 32 bytes on the
// wire, but 128 bits is the least that resists guessing).
inline constexpr size_t kMinSecretBytes = 16;

// 32 bytes from the kernel's CSPRNG (getrandom). Errors: the syscall's, named.
absl::StatusOr<SessionSecret> NewSessionSecret();

// An agent's secret: 16..32 bytes, zero-padded, not all zeros. InvalidArgument otherwise (the
// message names the field `what` and the length, never the bytes).
absl::StatusOr<SessionSecret> ParseSessionSecret(absl::string_view bytes, absl::string_view what);

// The one answer a peer gets for a HELLO naming a session this daemon does not have, a session
// that is not a destination, or the wrong secret: the same code and text in every case, so a
// peer cannot probe which sessions exist (PermissionDenied).
absl::Status UnrecognizedSession();

// Whether `a` and `b` are equal, in time independent of where they differ.
bool SecretsEqual(const SessionSecret& a, const SessionSecret& b);

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_SESSION_SECRET_H_
