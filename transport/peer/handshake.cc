#include "transport/peer/handshake.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"

namespace migmover::peer {

absl::StatusOr<std::string> ReadControlPayload(int fd, const wire::FrameHeader& h,
                                               absl::Time deadline,
                                               const std::atomic<bool>* cancel) {
  if (h.type == static_cast<uint8_t>(FrameType::kData)) {
    return absl::DataLossError(absl::StrCat("unexpected DATA frame ", h.seq));
  }
  std::string payload(h.length, '\0');  // DecodeHeader bounded it to kMaxControlLength.
  RETURN_IF_ERROR(net::RecvExact(fd, payload.data(), payload.size(), deadline, cancel));
  return payload;
}

absl::StatusOr<ControlFrame> ReadControlFrame(int fd, absl::Time deadline,
                                              const std::atomic<bool>* cancel) {
  uint8_t hdr[wire::kFrameHeaderSize];
  RETURN_IF_ERROR(net::RecvExact(fd, hdr, sizeof(hdr), deadline, cancel));
  ControlFrame f;
  ASSIGN_OR_RETURN(f.header, DecodeHeader(hdr));
  ASSIGN_OR_RETURN(f.payload, ReadControlPayload(fd, f.header, deadline, cancel));
  return f;
}

absl::Status VerdictOf(const ControlFrame& frame, absl::string_view who, uint64_t expected_seq,
                       const ControlKey* key) {
  const uint8_t type = frame.header.type;
  if (type != static_cast<uint8_t>(FrameType::kCommit) &&
      type != static_cast<uint8_t>(FrameType::kError)) {
    return absl::DataLossError(absl::StrCat(who, " sent ", FrameTypeName(type),
                                            " where COMMIT or ERROR was due"));
  }
  if (frame.header.seq != expected_seq) {
    return absl::DataLossError(absl::StrCat(who, " sent ", FrameTypeName(type),
                                            " with sequence number ", frame.header.seq,
                                            ", expected ", expected_seq));
  }
  // A COMMIT(0) nobody sealed would pass the source's point of no return for an attacker.
  ASSIGN_OR_RETURN(absl::string_view body, OpenVerdict(frame.header, frame.payload, key));
  ASSIGN_OR_RETURN(PeerStatus st, ParseStatus(frame.header, body));
  if (st.code == 0 && type == static_cast<uint8_t>(FrameType::kCommit)) return absl::OkStatus();
  return absl::Status(
      st.code == 0 ? absl::StatusCode::kAborted : static_cast<absl::StatusCode>(st.code),
      absl::StrCat(who, ": ", st.message));
}

absl::StatusOr<Hello> ReadHello(int fd, absl::Time deadline, const std::atomic<bool>* cancel) {
  ASSIGN_OR_RETURN(ControlFrame f, ReadControlFrame(fd, deadline, cancel));
  const wire::FrameHeader& h = f.header;
  if (h.type != static_cast<uint8_t>(FrameType::kHello) || h.seq != 0) {
    return absl::DataLossError(absl::StrCat("expected HELLO as frame 0, got ",
                                            FrameTypeName(h.type), " as frame ", h.seq));
  }
  ASSIGN_OR_RETURN(Hello hello, ParseHello(h, f.payload));
  if (hello.min_version > wire::kProtocolVersion || hello.max_version < wire::kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "peer speaks protocol versions ", hello.min_version, "..", hello.max_version,
        "; this daemon speaks ", wire::kProtocolVersion));
  }
  return hello;
}

absl::Status AwaitHelloAck(int fd, absl::Time deadline, uint64_t* offset) {
  ASSIGN_OR_RETURN(ControlFrame f, ReadControlFrame(fd, deadline));
  if (f.header.type != static_cast<uint8_t>(FrameType::kHelloAck)) {
    return absl::DataLossError(
        absl::StrCat("handshake: expected HELLO_ACK, got ", FrameTypeName(f.header.type)));
  }
  ASSIGN_OR_RETURN(PeerStatus st, ParseStatus(f.header, f.payload));
  if (st.code != 0) {
    return absl::Status(static_cast<absl::StatusCode>(st.code),
                        absl::StrCat("destination refused the stream: ", st.message));
  }
  if (offset != nullptr) *offset = f.header.offset;
  return absl::OkStatus();
}

absl::Status SendHelloAck(int fd, const absl::Status& verdict, uint32_t device,
                          absl::Time deadline, uint64_t offset) {
  PeerStatus st{static_cast<uint32_t>(verdict.code()), std::string(verdict.message())};
  std::string frame = EncodeStatusFrame(FrameType::kHelloAck, 0, device, st);
  if (offset != 0) {
    FrameHeader h;
    std::memcpy(&h, frame.data(), sizeof(h));
    h.offset = offset;
    std::memcpy(frame.data(), &h, sizeof(h));
  }
  return net::SendAll(fd, frame, deadline);
}

}  // namespace migmover::peer
