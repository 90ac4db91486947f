#include "transport/dpdk/reliable_link.h"

#include <rte_memcpy.h>
#include <time.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "transport/base/status_macros.h"
#include "xxh_x86dispatch.h"
#include "xxhash.h"

namespace migmover::dpdk {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the link header is little-endian; a big-endian port must byte-swap here");

constexpr uint32_t kHeaders = wire::kEthernetHeaderSize + wire::kLinkHeaderSize;
constexpr uint16_t kBurst = 32;

// Sequence numbers wrap; compare them as distances.
bool SeqLt(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }

uint64_t Checksum(const uint8_t* payload, size_t n, uint32_t seq) {
  return XXH3_64bits_withSeed_dispatch(payload, n, seq);
}

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The link header sits after the 14-byte Ethernet header, so it is never 8-byte aligned: it is
// copied in and out, never accessed in place (UBSan: misaligned member access).
uint8_t* HeaderBytes(rte_mbuf* m) {
  return rte_pktmbuf_mtod_offset(m, uint8_t*, wire::kEthernetHeaderSize);
}
wire::LinkHeader LoadHeader(rte_mbuf* m) {
  wire::LinkHeader h;
  std::memcpy(&h, HeaderBytes(m), sizeof(h));
  return h;
}
void StoreHeader(rte_mbuf* m, const wire::LinkHeader& h) {
  std::memcpy(HeaderBytes(m), &h, sizeof(h));
}
// Just the payload length, for the receive path's hot loops.
uint32_t PayloadLength(rte_mbuf* m) {
  decltype(wire::LinkHeader::length) n;
  std::memcpy(&n, HeaderBytes(m) + offsetof(wire::LinkHeader, length), sizeof(n));
  return n;
}

}  // namespace

absl::Status ReliableLink::Seal(const peer::LinkKey& send, const peer::LinkKey& receive) {
  if (polled_ || stats_.bytes_written != 0 || !reserved_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("DPDK link ", o_.link_id, ": sealed after its frames started to move"));
  }
  if (o_.mss + kHeaders + wire::kLinkTagSize > io_->frame_capacity()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DPDK link ", o_.link_id, ": mss ", o_.mss, " leaves no room for the ",
        wire::kLinkTagSize, "-byte tag in a ", io_->frame_capacity(), "-byte frame"));
  }
  ASSIGN_OR_RETURN(seal_, FrameSeal::Create(send, receive));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ReliableLink>> ReliableLink::Create(FrameIo* io,
                                                                   LinkOptions options) {
  if (options.mss == 0 || options.mss + kHeaders > io->frame_capacity()) {
    return absl::InvalidArgumentError(
        absl::StrCat("DPDK link: mss ", options.mss, " does not fit a ", io->frame_capacity(),
                     "-byte frame with its ", kHeaders, " header bytes"));
  }
  const uint32_t w = options.window;
  if (w < 2 || w > 32768 || (w & (w - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DPDK link: window ", w, " is not a power of two in [2, 32768]"));
  }
  options.ack_every = std::clamp<uint32_t>(options.ack_every, 1, w / 2);
  return std::unique_ptr<ReliableLink>(new ReliableLink(io, options));
}

ReliableLink::ReliableLink(FrameIo* io, LinkOptions options)
    : io_(io),
      o_(options),
      mask_(options.window - 1),
      rto_ns_(absl::ToInt64Nanoseconds(options.retransmit_after)),
      keepalive_ns_(absl::ToInt64Nanoseconds(options.keepalive)),
      dead_ns_(absl::ToInt64Nanoseconds(options.dead_after)),
      tx_(options.window, nullptr),
      peer_window_(options.window),
      rx_(options.window, nullptr),
      advertised_room_(options.window) {
  progress_ns_ = heard_ns_ = NowNs();
}

ReliableLink::~ReliableLink() {
  for (uint32_t s = snd_una_; s != snd_nxt_; ++s) rte_pktmbuf_free(tx_[s & mask_]);
  for (uint32_t i = 0; i < rx_count_; ++i) rte_pktmbuf_free(rx_[(rx_head_ + i) & mask_]);
  for (rte_mbuf* m : reserved_) rte_pktmbuf_free(m);
  for (rte_mbuf* m : spare_) rte_pktmbuf_free(m);
}

rte_mbuf* ReliableLink::NewFrame(wire::LinkFrameType type) {
  rte_mbuf* m = nullptr;
  if (type == wire::LinkFrameType::kData && !spare_.empty()) {
    m = spare_.back();
    spare_.pop_back();
    rte_pktmbuf_reset(m);
  } else {
    m = io_->Alloc();
    if (m == nullptr) return nullptr;
  }
  char* p = rte_pktmbuf_append(m, kHeaders);
  auto* eth = reinterpret_cast<rte_ether_hdr*>(p);
  eth->dst_addr = o_.peer;
  eth->src_addr = io_->mac();
  eth->ether_type = rte_cpu_to_be_16(wire::kLinkEtherType);
  wire::LinkHeader h{};
  h.magic = wire::kLinkMagic;
  h.version = wire::kLinkVersion;
  h.type = static_cast<uint8_t>(type);
  h.link_id = o_.link_id;
  std::memcpy(p + wire::kEthernetHeaderSize, &h, sizeof(h));
  return m;
}

size_t ReliableLink::Reserve(size_t max, iovec* iov, size_t max_iov) {
  size_t pieces = 0, room = 0;
  if (open_ && max_iov > 0) {
    rte_mbuf* m = tx_[(snd_nxt_ - 1) & mask_];
    const uint32_t used = rte_pktmbuf_data_len(m) - kHeaders;
    if (used < o_.mss) {
      const size_t n = std::min<size_t>(o_.mss - used, max);
      iov[pieces++] = {rte_pktmbuf_mtod_offset(m, uint8_t*, kHeaders + used), n};
      room += n;
    }
  }
  while (room < max && pieces < max_iov && snd_nxt_ + reserved_.size() - snd_una_ < o_.window) {
    rte_mbuf* m = NewFrame(wire::LinkFrameType::kData);
    if (m == nullptr) break;
    reserved_.push_back(m);
    const size_t n = std::min<size_t>(o_.mss, max - room);
    iov[pieces++] = {rte_pktmbuf_mtod_offset(m, uint8_t*, kHeaders), n};
    room += n;
  }
  return pieces;
}

void ReliableLink::Commit(size_t n) {
  stats_.bytes_written += n;
  if (open_ && n > 0) {
    rte_mbuf* m = tx_[(snd_nxt_ - 1) & mask_];
    const uint32_t take = std::min<uint32_t>(n, o_.mss - (rte_pktmbuf_data_len(m) - kHeaders));
    rte_pktmbuf_append(m, static_cast<uint16_t>(take));
    n -= take;
    if (rte_pktmbuf_data_len(m) - kHeaders >= o_.mss) CloseOpenFrame();
  }
  for (rte_mbuf* m : reserved_) {
    if (n == 0) {
      // Kept for the next Reserve: a reader that asks for a chunk and gets less must not cost
      // a round trip through the pool for every frame it did not fill.
      spare_.push_back(m);
      continue;
    }
    CloseOpenFrame();
    const uint32_t take = std::min<uint32_t>(n, o_.mss);
    rte_pktmbuf_append(m, static_cast<uint16_t>(take));
    n -= take;
    wire::LinkHeader h = LoadHeader(m);
    h.seq = snd_nxt_;
    StoreHeader(m, h);
    tx_[snd_nxt_ & mask_] = m;
    ++snd_nxt_;
    ++snd_nxt64_;
    open_ = true;
    if (take == o_.mss) CloseOpenFrame();
  }
  reserved_.clear();
}

void ReliableLink::CloseOpenFrame() {
  if (!open_) return;
  rte_mbuf* m = tx_[(snd_nxt_ - 1) & mask_];
  const uint16_t len = rte_pktmbuf_data_len(m) - kHeaders;
  if (len == 0) {
    // Reserved but never written: give the sequence number back.
    rte_pktmbuf_free(m);
    --snd_nxt_;
    --snd_nxt64_;
  } else if (seal_ != nullptr) {
    wire::LinkHeader h = LoadHeader(m);
    h.length = len;
    h.check = snd_nxt64_ - 1;  // The open frame is the newest.
    StoreHeader(m, h);
    auto* tag = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, wire::kLinkTagSize));
    if (tag == nullptr ||
        !seal_->Seal(h.type, h.check, HeaderBytes(m), wire::kLinkHeaderSize,
                     rte_pktmbuf_mtod_offset(m, uint8_t*, kHeaders), len, tag)) {
      seal_failed_ = true;
    }
  } else {
    wire::LinkHeader h = LoadHeader(m);
    h.length = len;
    h.check = Checksum(rte_pktmbuf_mtod_offset(m, const uint8_t*, kHeaders), len, h.seq);
    StoreHeader(m, h);
  }
  open_ = false;
}

size_t ReliableLink::Write(std::span<const uint8_t> bytes) {
  iovec iov[16];
  size_t done = 0;
  while (done < bytes.size()) {
    const size_t pieces = Reserve(bytes.size() - done, iov, 16);
    if (pieces == 0) break;
    size_t n = 0;
    for (size_t i = 0; i < pieces; ++i) {
      rte_memcpy(iov[i].iov_base, bytes.data() + done + n, iov[i].iov_len);
      n += iov[i].iov_len;
    }
    Commit(n);
    done += n;
  }
  return done;
}

size_t ReliableLink::Peek(size_t max, iovec* iov, size_t max_iov) const {
  size_t pieces = 0, got = 0;
  for (uint32_t i = 0; i < rx_count_ && pieces < max_iov && got < max; ++i) {
    rte_mbuf* m = rx_[(rx_head_ + i) & mask_];
    const uint32_t skip = i == 0 ? rx_offset_ : 0;
    const size_t n = std::min<size_t>(PayloadLength(m) - skip, max - got);
    iov[pieces++] = {rte_pktmbuf_mtod_offset(m, uint8_t*, kHeaders + skip), n};
    got += n;
  }
  return pieces;
}

void ReliableLink::Consume(size_t n) {
  while (n > 0 && rx_count_ > 0) {
    rte_mbuf* m = rx_[rx_head_ & mask_];
    const uint32_t left = PayloadLength(m) - rx_offset_;
    const uint32_t take = static_cast<uint32_t>(std::min<size_t>(n, left));
    rx_offset_ += take;
    n -= take;
    readable_ -= take;
    stats_.bytes_read += take;
    if (take == left) {
      rte_pktmbuf_free(m);
      ++rx_head_;
      --rx_count_;
      rx_offset_ = 0;
    }
  }
}

size_t ReliableLink::Read(std::span<uint8_t> out) {
  iovec iov[16];
  size_t done = 0;
  while (done < out.size()) {
    const size_t pieces = Peek(out.size() - done, iov, 16);
    if (pieces == 0) break;
    size_t n = 0;
    for (size_t i = 0; i < pieces; ++i) {
      rte_memcpy(out.data() + done + n, iov[i].iov_base, iov[i].iov_len);
      n += iov[i].iov_len;
    }
    Consume(n);
    done += n;
  }
  return done;
}

void ReliableLink::OnAck(uint32_t ack, uint32_t window, uint32_t flags, int64_t now) {
  // An ack past what was ever sent is not ours to trust. "Ever": after going back, snd_sent_ is
  // behind frames the peer may already hold, and their acks must still count.
  if (SeqLt(snd_max_, ack) || SeqLt(ack, snd_una_)) return;
  if (ack != snd_una_) {
    for (uint32_t s = snd_una_; s != ack; ++s) {
      rte_pktmbuf_free(tx_[s & mask_]);
      tx_[s & mask_] = nullptr;
    }
    snd_una_ = ack;
    if (SeqLt(snd_sent_, snd_una_)) snd_sent_ = snd_una_;
    progress_ns_ = now;
    backoff_ = 0;
    if (recovering_ && !SeqLt(snd_una_, recover_until_)) recovering_ = false;
  } else if ((flags & wire::kLinkAckGap) && snd_una_ != snd_sent_ && !recovering_) {
    // A frame was lost: go back to it now rather than after the timer.
    GoBack(now);
  }
  peer_window_ = window;
}

void ReliableLink::HandleFrame(rte_mbuf* m, int64_t now) {
  if (m->nb_segs != 1 || rte_pktmbuf_data_len(m) < kHeaders) {
    ++stats_.frames_ignored;
    rte_pktmbuf_free(m);
    return;
  }
  const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  const wire::LinkHeader h = LoadHeader(m);
  if (eth->ether_type != rte_cpu_to_be_16(wire::kLinkEtherType) || h.magic != wire::kLinkMagic ||
      h.version != wire::kLinkVersion || h.link_id != o_.link_id) {
    ++stats_.frames_ignored;
    rte_pktmbuf_free(m);
    return;
  }
  const uint32_t tag = seal_ != nullptr ? wire::kLinkTagSize : 0;
  if (h.type == static_cast<uint8_t>(wire::LinkFrameType::kAck)) {
    if (seal_ != nullptr) {
      // Only an ACK that opens, and is newer than every ACK before it, may move the window:
      // a forged or replayed one could free frames the reader never got.
      uint8_t* t = rte_pktmbuf_mtod_offset(m, uint8_t*, kHeaders);
      if (rte_pktmbuf_data_len(m) != kHeaders + tag || h.check < peer_acks_ ||
          !seal_->Open(h.type, h.check, HeaderBytes(m), wire::kLinkHeaderSize, t, 0, t)) {
        ++stats_.frames_corrupt;
        rte_pktmbuf_free(m);
        return;
      }
      peer_acks_ = h.check + 1;
    }
    heard_ns_ = now;
    ++stats_.acks_received;
    OnAck(h.ack, h.window, h.flags, now);
    rte_pktmbuf_free(m);
    return;
  }
  if (h.type != static_cast<uint8_t>(wire::LinkFrameType::kData) || h.length == 0 ||
      h.length > o_.mss || h.length + tag != rte_pktmbuf_data_len(m) - kHeaders) {
    ++stats_.frames_ignored;
    rte_pktmbuf_free(m);
    return;
  }
  if (seal_ != nullptr) {
    // Frames that would only be dropped (a duplicate, or no room) are not worth opening: all
    // they cause is an ACK, which says nothing the peer may not know. A frame that would be
    // taken, or that says one was lost (a gap: the sender goes back), must open first.
    if (static_cast<uint32_t>(h.check) != h.seq) {
      ++stats_.frames_ignored;
      rte_pktmbuf_free(m);
      return;
    }
    if (h.check == rcv_nxt64_ && rx_count_ < o_.window) {
      if (!OpenData(m, h)) return;
      heard_ns_ = now;
      TakeInOrder(m, h.length);
      return;
    }
    if (h.check > rcv_nxt64_ && gap_reported_at_ != rcv_nxt64_) {
      // Once per missing frame: a replayed genuine frame from further on opens too, and must
      // not make the sender go back again and again. Nor does it count as hearing the peer.
      if (!OpenData(m, h)) return;
      gap_seen_ = true;
      gap_reported_at_ = rcv_nxt64_;
    }
    ++stats_.frames_dropped;
    ++unacked_in_order_;
    rte_pktmbuf_free(m);
    return;
  }
  heard_ns_ = now;
  if (Checksum(rte_pktmbuf_mtod_offset(m, const uint8_t*, kHeaders), h.length, h.seq) !=
      h.check) {
    // Damaged on the way: treat it as lost, so the sender goes back to it.
    ++stats_.frames_corrupt;
    if (h.seq == rcv_nxt_) gap_seen_ = true;
    ++unacked_in_order_;
    rte_pktmbuf_free(m);
    return;
  }
  if (h.seq == rcv_nxt_ && rx_count_ < o_.window) {
    TakeInOrder(m, h.length);
    return;
  }
  // Ahead of a gap, a duplicate of one already taken, or no room: drop it and say where we are.
  if (SeqLt(rcv_nxt_, h.seq)) gap_seen_ = true;
  ++stats_.frames_dropped;
  ++unacked_in_order_;  // Forces an ack: the sender learns where to resume.
  rte_pktmbuf_free(m);
}

void ReliableLink::TakeInOrder(rte_mbuf* m, uint16_t length) {
  rx_[(rx_head_ + rx_count_++) & mask_] = m;
  readable_ += length;
  ++rcv_nxt_;
  ++rcv_nxt64_;
  ++unacked_in_order_;
  ++stats_.frames_received;
}

bool ReliableLink::OpenData(rte_mbuf* m, const wire::LinkHeader& h) {
  uint8_t* payload = rte_pktmbuf_mtod_offset(m, uint8_t*, kHeaders);
  if (seal_->Open(h.type, h.check, HeaderBytes(m), wire::kLinkHeaderSize, payload, h.length,
                  payload + h.length)) {
    return true;
  }
  ++stats_.frames_corrupt;
  rte_pktmbuf_free(m);
  return false;
}

void ReliableLink::SendAck(int64_t now) {
  rte_mbuf* m = NewFrame(wire::LinkFrameType::kAck);
  if (m == nullptr) return;  // Pool exhausted: the next Poll tries again.
  wire::LinkHeader h = LoadHeader(m);
  const uint32_t room = o_.window - rx_count_;
  h.ack = rcv_nxt_;
  h.window = room;
  h.flags = gap_seen_ ? wire::kLinkAckGap : 0;
  if (seal_ != nullptr) {
    h.check = acks_numbered_++;
    StoreHeader(m, h);
    auto* tag = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, wire::kLinkTagSize));
    if (tag == nullptr ||
        !seal_->Seal(h.type, h.check, HeaderBytes(m), wire::kLinkHeaderSize, tag, 0, tag)) {
      seal_failed_ = true;
      rte_pktmbuf_free(m);
      return;
    }
  } else {
    StoreHeader(m, h);
  }
  if (io_->Transmit(&m, 1) != 1) {
    rte_pktmbuf_free(m);
    return;
  }
  ++stats_.acks_sent;
  unacked_in_order_ = 0;
  advertised_room_ = room;
  gap_seen_ = false;
  sent_ns_ = now;
}

void ReliableLink::GoBack(int64_t now) {
  stats_.frames_retransmitted += snd_sent_ - snd_una_;
  // Each timeout in a row waits twice as long (up to 64x): a reader that is merely slow (its
  // thread busy writing the device) must not be flooded with copies of frames it already has.
  if (now - progress_ns_ > rto_ns_ << backoff_) backoff_ = std::min(backoff_ + 1, 6);
  recover_until_ = snd_sent_;
  recovering_ = true;
  snd_sent_ = snd_una_;
  progress_ns_ = now;
}

void ReliableLink::Transmit(int64_t now) {
  if (now - progress_ns_ > (rto_ns_ << backoff_) && snd_una_ != snd_sent_) {
    // Nothing acknowledged for a while: the frames (or their acks) were lost.
    GoBack(now);
  }
  const uint32_t limit = snd_una_ + std::min(peer_window_, o_.window);
  rte_mbuf* burst[kBurst];
  while (snd_sent_ != snd_nxt_ && SeqLt(snd_sent_, limit)) {
    uint16_t n = 0;
    for (uint32_t s = snd_sent_; s != snd_nxt_ && SeqLt(s, limit) && n < kBurst; ++s) {
      burst[n] = tx_[s & mask_];
      // The port frees what it sends; the link keeps its own reference until the ack.
      rte_mbuf_refcnt_update(burst[n], 1);
      ++n;
    }
    const uint16_t sent = io_->Transmit(burst, n);
    for (uint16_t i = sent; i < n; ++i) rte_mbuf_refcnt_update(burst[i], -1);
    snd_sent_ += sent;
    if (SeqLt(snd_max_, snd_sent_)) snd_max_ = snd_sent_;
    stats_.frames_sent += sent;
    if (sent > 0) sent_ns_ = now;
    if (sent < n) break;  // The port's queue is full: the rest go next Poll.
  }
}

absl::Status ReliableLink::Poll() {
  polled_ = true;
  if (seal_failed_) {
    return absl::InternalError(absl::StrCat("DPDK link ", o_.link_id,
                                            ": OpenSSL failed to seal a frame (ChaCha20-Poly1305)"));
  }
  const int64_t now = NowNs();
  rte_mbuf* burst[kBurst];
  uint16_t n;
  uint32_t rounds = 0;
  do {
    n = io_->Receive(burst, kBurst);
    for (uint16_t i = 0; i < n; ++i) HandleFrame(burst[i], now);
  } while (n == kBurst && ++rounds < 8);

  const uint32_t room = o_.window - rx_count_;
  const bool ack_due = unacked_in_order_ >= o_.ack_every || gap_seen_ ||
                       // The receive side went quiet: acknowledge what it took now.
                       (unacked_in_order_ > 0 && n < kBurst) ||
                       // The reader made room the sender does not know about yet.
                       room >= advertised_room_ + o_.ack_every ||
                       (advertised_room_ == 0 && room > 0) || now - sent_ns_ > keepalive_ns_;
  if (ack_due) SendAck(now);

  // Nothing more comes before the next Poll: a partly filled frame goes out as it is.
  CloseOpenFrame();
  // A frame OpenSSL failed to seal holds plaintext: nothing more may leave (the next line of
  // defence is the error below, which ends the link).
  if (!seal_failed_) Transmit(now);

  if (seal_failed_) {
    return absl::InternalError(absl::StrCat("DPDK link ", o_.link_id,
                                            ": OpenSSL failed to seal a frame (ChaCha20-Poly1305)"));
  }
  if (now - heard_ns_ > dead_ns_) {
    return absl::UnavailableError(
        absl::StrCat("DPDK link ", o_.link_id, ": nothing heard from the peer for ",
                     absl::FormatDuration(absl::Nanoseconds(now - heard_ns_)), " (",
                     snd_nxt_ - snd_una_, " frames unacknowledged)"));
  }
  return absl::OkStatus();
}

std::string ReliableLink::DebugState() const {
  return absl::StrCat("una ", snd_una_, " sent ", snd_sent_, " nxt ", snd_nxt_, " peer_window ",
                      peer_window_, recovering_ ? " recovering" : "", " backoff ", backoff_,
                      " rcv_nxt ", rcv_nxt_, " queued ", rx_count_, " advertised ",
                      advertised_room_, " spare ", spare_.size(), " last heard ",
                      (NowNs() - heard_ns_) / 1000000, " ms ago");
}

bool ReliableLink::AllAcknowledged() const { return snd_una_ == snd_nxt_ && !open_; }

}  // namespace migmover::dpdk
