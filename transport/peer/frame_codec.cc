#include "transport/peer/frame_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace migmover::peer {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire is little-endian; a big-endian port must byte-swap here");

const char* FrameTypeName(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHello:
      return "HELLO";
    case FrameType::kHelloAck:
      return "HELLO_ACK";
    case FrameType::kData:
      return "DATA";
    case FrameType::kEndPhase:
      return "END_PHASE";
    case FrameType::kEndStream:
      return "END_STREAM";
    case FrameType::kCommit:
      return "COMMIT";
    case FrameType::kError:
      return "ERROR";
    case FrameType::kKeepalive:
      return "KEEPALIVE";
    case FrameType::kConfirm:
      return "CONFIRM";
    case FrameType::kPing:
      return "PING";
    case FrameType::kPong:
      return "PONG";
    case FrameType::kInitialDataSent:
      return "INITIAL_DATA_SENT";
    case FrameType::kLoaded:
      return "LOADED";
    case FrameType::kAck:
      return "ACK";
  }
  return "UNKNOWN";
}

const char* PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kNone:
      return "NONE";
    case Phase::kPreCopy:
      return "PRE_COPY";
    case Phase::kStopCopy:
      return "STOP_COPY";
  }
  return "UNKNOWN";
}

void EncodeHeader(const FrameHeader& h, std::span<uint8_t, wire::kFrameHeaderSize> out) {
  std::memcpy(out.data(), &h, sizeof(h));
}

absl::StatusOr<FrameHeader> DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize> in) {
  FrameHeader h;
  std::memcpy(&h, in.data(), sizeof(h));
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("peer frame ", h.seq, " (", FrameTypeName(h.type),
                                            "): ", what));
  };
  if (h.magic != wire::kFrameMagic) {
    return bad(absl::StrCat("bad magic 0x", absl::Hex(h.magic), ", expected 0x",
                            absl::Hex(wire::kFrameMagic)));
  }
  if (h.type < static_cast<uint8_t>(FrameType::kHello) ||
      h.type > static_cast<uint8_t>(FrameType::kAck)) {
    return bad(absl::StrCat("unknown frame type ", h.type));
  }
  if (h.phase > static_cast<uint8_t>(Phase::kStopCopy)) {
    return bad(absl::StrCat("unknown phase ", h.phase));
  }
  const uint16_t allowed_flags = h.type == static_cast<uint8_t>(FrameType::kHello)
                                     ? wire::kHelloHeartbeat | wire::kHelloResume
                                     : 0;
  if ((h.flags & ~allowed_flags) != 0) {
    return bad(absl::StrCat("flags 0x", absl::Hex(h.flags), " not allowed"));
  }
  if (h.device >= wire::kMaxDevicesPerSession) {
    return bad(absl::StrCat("device index ", h.device, " exceeds ",
                            wire::kMaxDevicesPerSession - 1));
  }
  const auto type = static_cast<FrameType>(h.type);
  uint32_t min = 0, max = wire::kMaxControlLength;
  switch (type) {
    case FrameType::kHello:
      // Down to the version range: a peer of another version gets told so (ParseHello), not
      // that its HELLO is short.
      min = 2 * sizeof(uint16_t) + 1;
      max = sizeof(wire::HelloPayload) + wire::kMaxSessionIdLength;
      break;
    case FrameType::kHelloAck:
      min = sizeof(wire::StatusPayload);
      break;
    case FrameType::kCommit:
    case FrameType::kError:
      min = sizeof(wire::StatusPayload) + wire::kVerdictSealSize;
      break;
    case FrameType::kData:
      min = 1;
      max = wire::kMaxDataLength;
      if (h.phase == static_cast<uint8_t>(Phase::kNone)) return bad("DATA without a phase");
      break;
    case FrameType::kConfirm:
    case FrameType::kKeepalive:
    case FrameType::kAck:
      // The seal alone (SealVerdict).
      min = max = wire::kVerdictSealSize;
      break;
    case FrameType::kPing:
    case FrameType::kPong:
    case FrameType::kLoaded:
      max = 0;
      break;
    case FrameType::kInitialDataSent:
      max = 0;
      if (h.phase != static_cast<uint8_t>(Phase::kPreCopy)) {
        return bad("INITIAL_DATA_SENT outside PRE_COPY");
      }
      break;
    case FrameType::kEndPhase:
      max = 0;
      if (h.phase == static_cast<uint8_t>(Phase::kNone)) return bad("END_PHASE without a phase");
      break;
    case FrameType::kEndStream:
      min = max = sizeof(wire::EndStreamPayload);
      break;
  }
  if (h.length < min || h.length > max) {
    return bad(absl::StrCat("length ", h.length, " outside ", min, "..", max));
  }
  // The offset is a stream offset on DATA, INITIAL_DATA_SENT, END_PHASE, ACK and HELLO_ACK (a
  // resume's point), and a resume's number on a resuming HELLO.
  const bool resume_hello =
      type == FrameType::kHello && (h.flags & wire::kHelloResume) != 0;
  if (type != FrameType::kData && type != FrameType::kInitialDataSent &&
      type != FrameType::kEndPhase && type != FrameType::kAck && type != FrameType::kHelloAck &&
      !resume_hello && h.offset != 0) {
    return bad(absl::StrCat("offset ", h.offset, " on a control frame"));
  }
  return h;
}

namespace {

std::string Frame(FrameType type, uint64_t seq, uint32_t device, Phase phase,
                  absl::string_view payload, uint16_t flags = 0, uint64_t offset = 0) {
  FrameHeader h{wire::kFrameMagic,
                static_cast<uint8_t>(type),
                static_cast<uint8_t>(phase),
                flags,
                device,
                static_cast<uint32_t>(payload.size()),
                seq,
                offset};
  std::string out(wire::kFrameHeaderSize + payload.size(), '\0');
  std::memcpy(out.data(), &h, sizeof(h));
  std::memcpy(out.data() + sizeof(h), payload.data(), payload.size());
  return out;
}

bool Printable(absl::string_view s) {
  for (char c : s) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

HelloFields Hello::fields() const {
  HelloFields f;
  f.session_id = session_id;
  f.device = device;
  f.device_count = device_count;
  f.stream = stream;
  f.stream_count = stream_count;
  f.link = link;
  f.heartbeat = heartbeat;
  f.resume = resume;
  f.min_version = min_version;
  f.max_version = max_version;
  f.nonce = nonce;
  f.binding = binding;
  return f;
}

bool Hello::ProofValid(const SessionSecretBytes& secret) const {
  return HelloProofValid(secret, fields(), proof);
}

bool IsVerdict(uint8_t type) {
  return type == static_cast<uint8_t>(FrameType::kCommit) ||
         type == static_cast<uint8_t>(FrameType::kConfirm) ||
         type == static_cast<uint8_t>(FrameType::kError);
}

std::string SealVerdict(std::string frame, const ControlKey* key) {
  FrameHeader h;
  std::memcpy(&h, frame.data(), sizeof(h));
  h.length += wire::kVerdictSealSize;
  std::memcpy(frame.data(), &h, sizeof(h));
  StreamTag seal{};
  if (key != nullptr) {
    // An HMAC failure leaves the seal zero: the peer refuses the frame, never the reverse.
    seal = ControlTag(*key, absl::string_view(frame).substr(0, sizeof(h)),
                      absl::string_view(frame).substr(sizeof(h)))
               .value_or(StreamTag{});
  }
  frame.append(reinterpret_cast<const char*>(seal.data()), seal.size());
  return frame;
}

absl::StatusOr<absl::string_view> OpenVerdict(const FrameHeader& h, absl::string_view payload,
                                              const ControlKey* key) {
  if (payload.size() != h.length || payload.size() < wire::kVerdictSealSize) {
    return absl::DataLossError(absl::StrCat(FrameTypeName(h.type), ": no seal"));
  }
  const absl::string_view body = payload.substr(0, payload.size() - wire::kVerdictSealSize);
  if (key == nullptr) return body;
  std::string header(sizeof(h), '\0');
  std::memcpy(header.data(), &h, sizeof(h));
  const std::optional<StreamTag> want = ControlTag(*key, header, body);
  StreamTag got;
  std::memcpy(got.data(), payload.data() + body.size(), got.size());
  if (!want.has_value() || !TagsEqual(*want, got)) {
    return absl::DataLossError(absl::StrCat(
        FrameTypeName(h.type), " frame ", h.seq,
        ": its seal does not match (forged or changed on the way): ignored as a verdict"));
  }
  return body;
}

std::string EncodeHello(uint64_t seq, const Hello& hello) {
  wire::HelloPayload p{};
  p.min_version = hello.min_version;
  p.max_version = hello.max_version;
  p.device_count = hello.device_count;
  p.stream = hello.stream;
  p.stream_count = hello.stream_count;
  p.link = hello.link;
  std::memcpy(p.nonce, hello.nonce.data(), sizeof(p.nonce));
  const HelloProof proof = ProveHello(hello.token, hello.fields());
  std::memcpy(p.proof, proof.data(), sizeof(p.proof));
  std::string payload(reinterpret_cast<const char*>(&p), sizeof(p));
  payload += hello.session_id;
  return Frame(FrameType::kHello, seq, hello.device, Phase::kNone, payload,
               static_cast<uint16_t>((hello.heartbeat ? wire::kHelloHeartbeat : 0) |
                                     (hello.resume != 0 ? wire::kHelloResume : 0)),
               hello.resume);
}

std::string EncodeStatusFrame(FrameType type, uint64_t seq, uint32_t device,
                              const PeerStatus& status) {
  wire::StatusPayload p{status.code, 0};
  std::string payload(reinterpret_cast<const char*>(&p), sizeof(p));
  // A verdict leaves room for its seal (SealVerdict): the whole frame stays decodable.
  const size_t room = wire::kMaxControlLength - sizeof(p) -
                      (IsVerdict(static_cast<uint8_t>(type)) ? wire::kVerdictSealSize : 0);
  payload += status.message.substr(0, room);
  return Frame(type, seq, device, Phase::kNone, payload);
}

std::string EncodeConfirm(uint64_t seq, uint32_t device) {
  return Frame(FrameType::kConfirm, seq, device, Phase::kNone, "");
}

std::string EncodePing(uint64_t seq) { return Frame(FrameType::kPing, seq, 0, Phase::kNone, ""); }

std::string EncodePong(uint64_t seq) { return Frame(FrameType::kPong, seq, 0, Phase::kNone, ""); }

std::string EncodeInitialDataSent(uint64_t seq, uint32_t device, uint64_t offset) {
  return Frame(FrameType::kInitialDataSent, seq, device, Phase::kPreCopy, "", 0, offset);
}

std::string EncodeLoaded(uint64_t seq, uint32_t device) {
  return Frame(FrameType::kLoaded, seq, device, Phase::kNone, "");
}

std::string EncodeAck(uint64_t seq, uint32_t device, uint64_t written) {
  return Frame(FrameType::kAck, seq, device, Phase::kNone, "", 0, written);
}

std::string EncodeKeepalive(uint64_t seq, uint32_t device) {
  return Frame(FrameType::kKeepalive, seq, device, Phase::kNone, "");
}

std::string EncodeEndPhase(uint64_t seq, uint32_t device, Phase phase, uint64_t offset) {
  return Frame(FrameType::kEndPhase, seq, device, phase, "", 0, offset);
}

std::string EncodeEndStream(uint64_t seq, uint32_t device, const EndStream& end) {
  wire::EndStreamPayload p{};
  p.total_bytes = end.total_bytes;
  p.digest_kind = static_cast<uint32_t>(end.digest_kind);
  std::memcpy(p.digest, end.digest.data(), sizeof(p.digest));
  return Frame(FrameType::kEndStream, seq, device, Phase::kNone,
               absl::string_view(reinterpret_cast<const char*>(&p), sizeof(p)));
}

absl::StatusOr<Hello> ParseHello(const FrameHeader& h, absl::string_view payload) {
  // The version range first: every version's HELLO starts with it, whatever follows.
  if (payload.size() != h.length || payload.size() < 2 * sizeof(uint16_t)) {
    return absl::DataLossError("HELLO: truncated payload");
  }
  uint16_t versions[2];
  std::memcpy(versions, payload.data(), sizeof(versions));
  if (versions[0] <= versions[1] &&
      (versions[0] > wire::kProtocolVersion || versions[1] < wire::kProtocolVersion)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "peer speaks protocol versions ", versions[0], "..", versions[1],
        "; this daemon speaks ", wire::kProtocolVersion));
  }
  if (payload.size() <= sizeof(wire::HelloPayload)) {
    return absl::DataLossError("HELLO: truncated payload");
  }
  wire::HelloPayload p;
  std::memcpy(&p, payload.data(), sizeof(p));
  Hello hello;
  hello.min_version = p.min_version;
  hello.max_version = p.max_version;
  hello.device_count = p.device_count;
  hello.stream = p.stream;
  hello.stream_count = p.stream_count;
  hello.link = p.link;
  hello.device = h.device;
  hello.heartbeat = (h.flags & wire::kHelloHeartbeat) != 0;
  hello.resume = (h.flags & wire::kHelloResume) != 0 ? h.offset : 0;
  if ((h.flags & wire::kHelloResume) != 0 && h.offset == 0) {
    return absl::DataLossError("HELLO: a resume numbered 0 (they count from 1)");
  }
  std::memcpy(hello.nonce.data(), p.nonce, sizeof(p.nonce));
  std::memcpy(hello.proof.data(), p.proof, sizeof(p.proof));
  hello.session_id = std::string(payload.substr(sizeof(p)));
  if (hello.min_version > hello.max_version) {
    return absl::DataLossError(absl::StrCat("HELLO: version range ", hello.min_version, "..",
                                            hello.max_version, " is empty"));
  }
  if (hello.device_count == 0 || hello.device_count > wire::kMaxDevicesPerSession ||
      hello.device >= hello.device_count) {
    return absl::DataLossError(absl::StrCat("HELLO: device ", hello.device, " of ",
                                            hello.device_count, " is out of range"));
  }
  if (hello.stream_count == 0 || hello.stream_count > wire::kMaxStreamsPerDevice ||
      hello.stream >= hello.stream_count) {
    return absl::DataLossError(absl::StrCat("HELLO: stream ", hello.stream, " of ",
                                            hello.stream_count, " is out of range"));
  }
  if (hello.link != 0 && hello.stream_count != 1) {
    return absl::DataLossError(absl::StrCat("HELLO: a stream on DPDK link ", hello.link,
                                            " cannot be striped over ", hello.stream_count,
                                            " connections"));
  }
  if (hello.heartbeat && (hello.device != 0 || hello.stream != 0 || hello.stream_count != 1 ||
                         hello.link != 0)) {
    return absl::DataLossError(
        "HELLO: a heartbeat connection carries no stream (device, stream and link must be 0)");
  }
  if (hello.resume != 0 && (hello.heartbeat || hello.link != 0)) {
    return absl::DataLossError(
        "HELLO: only a TCP device stream resumes (not a heartbeat, not a DPDK link)");
  }
  if (hello.session_id.size() > wire::kMaxSessionIdLength || !Printable(hello.session_id)) {
    return absl::DataLossError("HELLO: session id must be 1..128 printable ASCII characters");
  }
  return hello;
}

std::string EscapePeerText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(b, absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

absl::StatusOr<PeerStatus> ParseStatus(const FrameHeader& h, absl::string_view payload) {
  // A verdict's payload comes here without its seal (OpenVerdict).
  const size_t expected = h.length - (IsVerdict(h.type) ? wire::kVerdictSealSize : 0);
  if (payload.size() != expected || payload.size() < sizeof(wire::StatusPayload)) {
    return absl::DataLossError(absl::StrCat(FrameTypeName(h.type), ": truncated payload"));
  }
  wire::StatusPayload p;
  std::memcpy(&p, payload.data(), sizeof(p));
  if (p.code > 16) {
    return absl::DataLossError(absl::StrCat(FrameTypeName(h.type), ": status code ", p.code,
                                            " is not a canonical code"));
  }
  return PeerStatus{p.code, EscapePeerText(payload.substr(sizeof(p)))};
}

absl::StatusOr<EndStream> ParseEndStream(const FrameHeader& h, absl::string_view payload) {
  if (payload.size() != sizeof(wire::EndStreamPayload) || h.length != payload.size()) {
    return absl::DataLossError("END_STREAM: truncated payload");
  }
  wire::EndStreamPayload p;
  std::memcpy(&p, payload.data(), sizeof(p));
  if (p.digest_kind != static_cast<uint32_t>(wire::DigestKind::kNone) &&
      p.digest_kind != static_cast<uint32_t>(wire::DigestKind::kPoly1305)) {
    return absl::DataLossError(absl::StrCat(
        "END_STREAM: digest kind ", p.digest_kind,
        p.digest_kind == 1 ? " (unkeyed XXH3-64, protocol version 2) is not accepted"
                           : " is unknown"));
  }
  EndStream end;
  end.total_bytes = p.total_bytes;
  end.digest_kind = static_cast<wire::DigestKind>(p.digest_kind);
  std::memcpy(end.digest.data(), p.digest, sizeof(p.digest));
  return end;
}

}  // namespace migmover::peer
