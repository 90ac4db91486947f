// Fuzz target: the peer frame decoder (transport/peer/frame_codec.h), every field of which
// arrives from the network. Input: one frame as a peer sends it (32-byte header, payload).
// Beyond "no crash": whatever decodes must encode back to what decodes the same.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "transport/peer/frame_codec.h"

using namespace migmover;  // NOLINT: a fuzz target's one function.

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)peer::EscapePeerText(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (size < wire::kFrameHeaderSize) return 0;
  auto h = peer::DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize>(
      data, wire::kFrameHeaderSize));
  if (!h.ok()) return 0;
  const absl::string_view payload(reinterpret_cast<const char*>(data) + wire::kFrameHeaderSize,
                                  size - wire::kFrameHeaderSize);
  if (payload.size() < h->length) return 0;  // A short read: the reader waits for the rest.
  const absl::string_view body = payload.substr(0, h->length);
  switch (static_cast<wire::FrameType>(h->type)) {
    case wire::FrameType::kHello: {
      auto hello = peer::ParseHello(*h, body);
      if (!hello.ok()) return 0;
      const std::string again = peer::EncodeHello(h->seq, *hello);
      auto h2 = peer::DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize>(
          reinterpret_cast<const uint8_t*>(again.data()), wire::kFrameHeaderSize));
      Check(h2.ok());
      auto back = peer::ParseHello(*h2, absl::string_view(again).substr(wire::kFrameHeaderSize));
      Check(back.ok());
      // The secret never travels: a parsed HELLO has none, and re-encoding it without one
      // gives the proof of an all-zero secret, which is what the nonce must survive.
      Check(back->session_id == hello->session_id && back->token == hello->token &&
            back->nonce == hello->nonce && back->ProofValid(peer::SessionSecretBytes{}) &&
            back->device == hello->device && back->device_count == hello->device_count &&
            back->stream == hello->stream && back->stream_count == hello->stream_count &&
            back->link == hello->link && back->heartbeat == hello->heartbeat);
      break;
    }
    case wire::FrameType::kHelloAck:
    case wire::FrameType::kCommit:
    case wire::FrameType::kError: {
      // Verdicts: the seal checked (with the all-zero key the seeds use), then the status.
      static const peer::ControlKey key{};
      absl::string_view status_body = body;
      if (peer::IsVerdict(h->type)) {
        auto opened = peer::OpenVerdict(*h, body, &key);
        if (!opened.ok()) return 0;
        status_body = *opened;
      }
      auto st = peer::ParseStatus(*h, status_body);
      if (!st.ok()) return 0;
      // Escaped: no control byte survives into a log line.
      for (char c : st->message) Check(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
      break;
    }
    case wire::FrameType::kEndStream: {
      auto end = peer::ParseEndStream(*h, body);
      if (!end.ok()) return 0;
      const std::string again = peer::EncodeEndStream(h->seq, h->device, *end);
      auto h2 = peer::DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize>(
          reinterpret_cast<const uint8_t*>(again.data()), wire::kFrameHeaderSize));
      Check(h2.ok());
      auto back =
          peer::ParseEndStream(*h2, absl::string_view(again).substr(wire::kFrameHeaderSize));
      Check(back.ok() && back->total_bytes == end->total_bytes && back->digest == end->digest &&
            back->digest_kind == end->digest_kind);
      break;
    }
    default:
      break;
  }
  return 0;
}
