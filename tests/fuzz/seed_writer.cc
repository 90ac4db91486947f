// Writes the fuzz targets' seed corpus (tests/fuzz/corpus/<target>/) with the daemon's own
// encoders, so the seeds are the frames real peers send:
//   bazel run //tests/fuzz:seed_writer -- "$PWD/tests/fuzz/corpus"
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <span>
#include <string>
#include <vector>

#include <xxhash.h>

#include "api/link_wire.h"
#include "transport/peer/frame_codec.h"

using namespace migmover;  // NOLINT: a tool's one file.

namespace {

std::string g_root;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = g_root + "/" + target;
  ::mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

std::string Header(wire::FrameType type, wire::Phase phase, uint32_t device, uint32_t length,
                   uint64_t seq, uint64_t offset) {
  wire::FrameHeader h{};
  h.magic = wire::kFrameMagic;
  h.type = static_cast<uint8_t>(type);
  h.phase = static_cast<uint8_t>(phase);
  h.device = device;
  h.length = length;
  h.seq = seq;
  h.offset = offset;
  std::string out(wire::kFrameHeaderSize, '\0');
  peer::EncodeHeader(h, std::span<uint8_t, wire::kFrameHeaderSize>(
                            reinterpret_cast<uint8_t*>(out.data()), wire::kFrameHeaderSize));
  return out;
}

// `number`: on a sealed link the frame's AEAD number (link_frame_fuzz seals it with it); -1 for
// an unsealed link's checksum.
std::string LinkFrame(wire::LinkFrameType type, uint32_t seq, uint32_t ack, uint32_t window,
                      const std::string& payload, int64_t number = -1) {
  std::string f(wire::kEthernetHeaderSize, '\0');
  std::memset(f.data(), 0xff, 6);  // Broadcast.
  f[6] = 0x02;                     // A local MAC.
  f[12] = static_cast<char>(wire::kLinkEtherType >> 8);
  f[13] = static_cast<char>(wire::kLinkEtherType & 0xff);
  wire::LinkHeader h{};
  h.magic = wire::kLinkMagic;
  h.version = wire::kLinkVersion;
  h.type = static_cast<uint8_t>(type);
  h.length = static_cast<uint16_t>(payload.size());
  h.link_id = 7;  // link_frame_fuzz's link.
  h.seq = seq;
  h.ack = ack;
  h.window = window;
  h.check = number >= 0        ? static_cast<uint64_t>(number)
            : payload.empty() ? 0
                              : XXH3_64bits_withSeed(payload.data(), payload.size(), seq);
  f.append(reinterpret_cast<const char*>(&h), sizeof(h));
  f += payload;
  const uint16_t len = static_cast<uint16_t>(f.size());
  return std::string(reinterpret_cast<const char*>(&len), 2) + f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: seed_writer CORPUS_DIR\n";
    return 2;
  }
  g_root = argv[1];
  ::mkdir(g_root.c_str(), 0755);

  peer::Hello hello;
  hello.session_id = "vm-42-migration";
  hello.device_count = 2;
  hello.device = 1;
  for (size_t i = 0; i < hello.token.size(); ++i) hello.token[i] = static_cast<uint8_t>(i * 7);
  for (size_t i = 0; i < hello.nonce.size(); ++i) hello.nonce[i] = static_cast<uint8_t>(i * 5 + 2);
  peer::Hello striped = hello;
  striped.stream = 3;
  striped.stream_count = 16;
  peer::Hello beat = hello;
  beat.device = 0;
  beat.heartbeat = true;
  peer::Hello dpdk = hello;
  dpdk.link = 1001;
  const std::string data =
      Header(wire::FrameType::kData, wire::Phase::kPreCopy, 1, 8, 5, 4096) + "stateABC";
  // The fuzz targets check verdicts with an all-zero control key: seeds sealed with it pass.
  const peer::ControlKey key{};
  peer::EndStream end;
  end.total_bytes = 123456;
  end.digest_kind = wire::DigestKind::kPoly1305;
  for (size_t i = 0; i < end.digest.size(); ++i) end.digest[i] = static_cast<uint8_t>(i * 13 + 1);
  const std::vector<std::pair<std::string, std::string>> frames = {
      {"hello", peer::EncodeHello(0, hello)},
      {"hello_striped", peer::EncodeHello(0, striped)},
      {"hello_heartbeat", peer::EncodeHello(0, beat)},
      {"hello_dpdk", peer::EncodeHello(0, dpdk)},
      {"hello_ack_ok", peer::EncodeStatusFrame(wire::FrameType::kHelloAck, 0, 1, {0, ""})},
      {"hello_ack_refused",
       peer::EncodeStatusFrame(wire::FrameType::kHelloAck, 0, 1,
                               {7, "no session on this daemon accepts this session id"})},
      {"commit_ok",
       peer::SealVerdict(peer::EncodeStatusFrame(wire::FrameType::kCommit, 1, 1, {0, ""}), &key)},
      {"error_newline",
       peer::SealVerdict(
           peer::EncodeStatusFrame(wire::FrameType::kError, 2, 0, {13, "bad\nforged log line"}),
           &key)},
      {"data", data},
      {"end_phase", peer::EncodeEndPhase(6, 1, wire::Phase::kPreCopy, 0)},
      {"end_stream", peer::EncodeEndStream(9, 1, end)},
      {"keepalive", peer::SealVerdict(peer::EncodeKeepalive(3, 1), nullptr)},
      {"confirm", peer::SealVerdict(peer::EncodeConfirm(10, 1), &key)},
      {"ping", peer::EncodePing(4)},
      {"pong", peer::EncodePong(4)},
  };
  for (const auto& [name, bytes] : frames) Write("frame_decoder_fuzz", name, bytes);
  Write("handshake_fuzz", "hello", peer::EncodeHello(0, hello));
  Write("handshake_fuzz", "hello_heartbeat", peer::EncodeHello(0, beat));
  Write("handshake_fuzz", "ack_ok",
        peer::EncodeStatusFrame(wire::FrameType::kHelloAck, 0, 1, {0, ""}));
  Write("handshake_fuzz", "ack_refused",
        peer::EncodeStatusFrame(wire::FrameType::kHelloAck, 0, 1, {7, "refused"}));
  Write("handshake_fuzz", "verdicts",
        peer::SealVerdict(peer::EncodeStatusFrame(wire::FrameType::kCommit, 0, 1, {0, ""}), &key) +
            peer::SealVerdict(
                peer::EncodeStatusFrame(wire::FrameType::kError, 1, 1, {10, "abandoned"}), &key) +
            peer::EncodePong(2));

  for (const char* text : {"vfio-device\n", "save-data\n", "resume-data\n", "ok 17",
                           "error INVALID_ARGUMENT request must end with a newline",
                           "error RESOURCE_EXHAUSTED 1024 fds already wait", "error OK odd"}) {
    std::string name = text;
    for (char& c : name) {
      if (c == ' ' || c == '\n') c = '_';
    }
    Write("intake_request_fuzz", name.substr(0, 32), text);
  }

  const std::string payload(300, 'p');
  Write("link_frame_fuzz", "data_in_order",
        std::string(1, '\1') + LinkFrame(wire::LinkFrameType::kData, 0, 0, 0, payload) +
            LinkFrame(wire::LinkFrameType::kData, 1, 0, 0, payload));
  Write("link_frame_fuzz", "data_gap",
        std::string(1, '\1') + LinkFrame(wire::LinkFrameType::kData, 2, 0, 0, payload) +
            LinkFrame(wire::LinkFrameType::kData, 0, 0, 0, payload));
  Write("link_frame_fuzz", "acks_to_a_sender",
        std::string(1, '\2') + LinkFrame(wire::LinkFrameType::kAck, 0, 10, 64, "") +
            LinkFrame(wire::LinkFrameType::kAck, 0, 70, 0, "") +
            LinkFrame(wire::LinkFrameType::kAck, 0, 5, 64, ""));
  // Sealed (flag 4), each frame sealed by the fuzzer (flag 1): in order, then a gap and a
  // replayed ACK number.
  Write("link_frame_fuzz", "sealed_data_in_order",
        std::string(1, '\5') + LinkFrame(wire::LinkFrameType::kData, 0, 0, 0, payload, 0) +
            LinkFrame(wire::LinkFrameType::kData, 1, 0, 0, payload, 1) +
            LinkFrame(wire::LinkFrameType::kData, 3, 0, 0, payload, 3));
  Write("link_frame_fuzz", "sealed_acks_to_a_sender",
        std::string(1, '\7') + LinkFrame(wire::LinkFrameType::kAck, 0, 10, 64, "", 0) +
            LinkFrame(wire::LinkFrameType::kAck, 0, 40, 64, "", 1) +
            LinkFrame(wire::LinkFrameType::kAck, 0, 60, 64, "", 1));
  std::cout << "seeds written under " << g_root << "\n";
  return 0;
}
