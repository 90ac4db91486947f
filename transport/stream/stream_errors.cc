#include "transport/stream/stream_errors.h"


#include "absl/strings/cord.h"

#include "absl/strings/str_cat.h"
#include "transport/base/status_macros.h"
#include "transport/peer/frame_codec.h"

namespace migmover::stream {

absl::Status NoProgressError(uint32_t device, absl::Duration idle_timeout,
                             absl::string_view waiting_on) {
  return absl::DeadlineExceededError(absl::StrCat("device stream ", device, ": no progress for ",
                                                  absl::FormatDuration(idle_timeout), " (",
                                                  waiting_on, ")"));
}

absl::Status EndStreamTotalError(uint64_t counted, uint64_t arrived) {
  return absl::DataLossError(
      absl::StrCat("END_STREAM counts ", counted, " bytes; ", arrived, " arrived"));
}

absl::Status DigestMismatchError() {
  return absl::DataLossError(
      "stream digest mismatch: the bytes received differ from the bytes the source read");
}

absl::Status SourceAbandonedError(const wire::FrameHeader& h, absl::string_view payload) {
  ASSIGN_OR_RETURN(peer::PeerStatus st, peer::ParseStatus(h, payload));
  return absl::AbortedError(absl::StrCat("source abandoned the stream: ", st.message));
}

namespace {
constexpr char kSidePayload[] = "migmover/side";
}  // namespace

absl::Status DeviceSideError(absl::Status status) {
  if (!status.ok()) status.SetPayload(kSidePayload, absl::Cord("device"));
  return status;
}

bool IsDeviceSide(const absl::Status& status) {
  const auto side = status.GetPayload(kSidePayload);
  return side.has_value() && *side == "device";
}

absl::Status ConnectionLostError(absl::Status status) {
  if (!status.ok()) status.SetPayload(kSidePayload, absl::Cord("connection"));
  return status;
}

bool IsConnectionLost(const absl::Status& status) {
  const auto side = status.GetPayload(kSidePayload);
  return side.has_value() && *side == "connection";
}

}  // namespace migmover::stream
