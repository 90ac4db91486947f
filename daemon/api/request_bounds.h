// RequestBounds: the size limits every API request is held to before anything reads it, so
// that a field's value is never echoed back at length (a 10 KB name in an error message would
// push the reply past gRPC's metadata limit and turn the answer into RESOURCE_EXHAUSTED).
#ifndef MIGMOVER_DAEMON_API_REQUEST_BOUNDS_H_
#define MIGMOVER_DAEMON_API_REQUEST_BOUNDS_H_

#include <cstddef>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace migmover {

// Longest string or bytes field any request carries (the longest legitimate one, a simulated
// device spec, is far shorter).
inline constexpr size_t kMaxRequestStringBytes = 1024;
// Most elements of a repeated field (device lists: wire::kMaxDevicesPerSession).
inline constexpr size_t kMaxRequestRepeated = 256;

// Checks every string, bytes and repeated field of `request`, nested messages included.
// InvalidArgument naming the field and its size, never its content.
absl::Status CheckRequestBounds(const google::protobuf::Message& request);

// `text` for an error message: escaped (no control characters or invalid UTF-8 reach a log or
// a terminal) and cut to `max` characters with the original length noted.
std::string EchoForError(absl::string_view text, size_t max = 64);

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_API_REQUEST_BOUNDS_H_
