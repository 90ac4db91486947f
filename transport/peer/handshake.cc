#include "transport/peer/handshake.h"

#include "absl/strings/str_cat.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"

namespace migmover::peer {

absl::StatusOr<Hello> ReadHello(int fd, absl::Time deadline) {
  uint8_t hdr[wire::kFrameHeaderSize];
  RETURN_IF_ERROR(net::RecvExact(fd, hdr, sizeof(hdr), deadline));
  ASSIGN_OR_RETURN(wire::FrameHeader h, DecodeHeader(hdr));
  if (h.type != static_cast<uint8_t>(FrameType::kHello) || h.seq != 0) {
    return absl::DataLossError(absl::StrCat("expected HELLO as frame 0, got ",
                                            FrameTypeName(h.type), " as frame ", h.seq));
  }
  std::string payload(h.length, '\0');
  RETURN_IF_ERROR(net::RecvExact(fd, payload.data(), payload.size(), deadline));
  ASSIGN_OR_RETURN(Hello hello, ParseHello(h, payload));
  if (hello.min_version > wire::kProtocolVersion || hello.max_version < wire::kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "peer speaks protocol versions ", hello.min_version, "..", hello.max_version,
        "; this daemon speaks ", wire::kProtocolVersion));
  }
  return hello;
}

absl::Status SendHelloAck(int fd, const absl::Status& verdict, uint32_t device,
                          absl::Time deadline) {
  PeerStatus st{static_cast<uint32_t>(verdict.code()), std::string(verdict.message())};
  return net::SendAll(fd, EncodeStatusFrame(FrameType::kHelloAck, 0, device, st), deadline);
}

}  // namespace migmover::peer
