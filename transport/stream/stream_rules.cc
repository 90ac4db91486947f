#include "transport/stream/stream_rules.h"

#include "absl/strings/str_cat.h"
#include "transport/base/status_macros.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {

using wire::FrameHeader;
using wire::FrameType;
using wire::Phase;

OutgoingStream::OutgoingStream(uint32_t device, size_t connections, uint64_t first_seq)
    : device_(device), next_seq_(connections, first_seq) {}

std::string OutgoingStream::Hello(size_t k, const peer::Hello& hello) {
  peer::Hello h = hello;
  h.stream = static_cast<uint16_t>(k);
  h.stream_count = static_cast<uint16_t>(next_seq_.size());
  return peer::EncodeHello(next_seq_[k]++, h);
}

FrameHeader OutgoingStream::Data(size_t k, Phase phase, uint32_t length, uint64_t offset) {
  FrameHeader h{};
  h.magic = wire::kFrameMagic;
  h.type = static_cast<uint8_t>(FrameType::kData);
  h.phase = static_cast<uint8_t>(phase);
  h.device = device_;
  h.length = length;
  h.seq = next_seq_[k]++;
  h.offset = offset;
  return h;
}

std::string OutgoingStream::EndPhase(Phase phase, uint64_t offset) {
  return peer::EncodeEndPhase(next_seq_[0]++, device_, phase, offset);
}

std::string OutgoingStream::InitialDataSent(uint64_t offset) {
  return peer::EncodeInitialDataSent(next_seq_[0]++, device_, offset);
}

std::string OutgoingStream::Keepalive() {
  return peer::SealVerdict(peer::EncodeKeepalive(next_seq_[0]++, device_), control_key());
}

std::string OutgoingStream::EndStream(uint64_t total, std::optional<peer::StreamTag> digest) {
  peer::EndStream end;
  end.total_bytes = total;
  if (digest.has_value()) {
    end.digest = *digest;
    end.digest_kind = wire::DigestKind::kPoly1305;
  }
  return peer::EncodeEndStream(next_seq_[0]++, device_, end);
}

std::string OutgoingStream::Error(const absl::Status& why) {
  peer::PeerStatus st{static_cast<uint32_t>(why.code()), std::string(why.message())};
  return peer::SealVerdict(peer::EncodeStatusFrame(FrameType::kError, next_seq_[0]++, device_, st),
                           control_key());
}

std::string OutgoingStream::Confirm() {
  return peer::SealVerdict(peer::EncodeConfirm(next_seq_[0]++, device_), control_key());
}

IncomingStream::IncomingStream(uint32_t device, size_t connections, uint64_t first_seq)
    : device_(device), conns_(connections, Conn{first_seq}) {}

void IncomingStream::Reconnected(size_t connections, uint64_t first_seq, uint64_t offset) {
  conns_.assign(connections, Conn{first_seq, offset});
  ++epoch_;
}

absl::Status IncomingStream::Violation(size_t k, const FrameHeader& h,
                                       absl::string_view rule) const {
  return absl::DataLossError(absl::StrCat("device stream ", device_, " connection ", k, ": ",
                                          peer::FrameTypeName(h.type), " frame ", h.seq, ": ",
                                          rule));
}

absl::StatusOr<IncomingStream::Frame> IncomingStream::OnHeader(size_t k, const FrameHeader& h,
                                                               uint64_t received) {
  Conn& c = conns_[k];
  if (h.seq != c.next_seq) {
    return absl::DataLossError(absl::StrCat("device stream ", device_, " connection ", k,
                                            ": frame sequence ", h.seq, ", expected ", c.next_seq));
  }
  ++c.next_seq;
  if (h.device != device_) {
    return absl::DataLossError(
        absl::StrCat("frame for device ", h.device, " on the connection of device ", device_));
  }
  const auto type = static_cast<FrameType>(h.type);
  if (k != 0 && type != FrameType::kData) {
    return absl::DataLossError(absl::StrCat(peer::FrameTypeName(h.type), " on striped connection ",
                                            k, " (control frames travel on the first)"));
  }
  if (k == 0 && end_.has_value()) return Violation(k, h, "after END_STREAM");
  Frame f;
  f.type = type;
  switch (type) {
    case FrameType::kData: {
      const Phase phase = static_cast<Phase>(h.phase);
      // Phases by offset: every PRE_COPY byte lies before END_PHASE's offset, every STOP_COPY
      // byte at or after it. A resumed stream sends its held frames again after the END_PHASE
      // the destination already has, and this is what still holds then.
      if (phase == Phase::kPreCopy &&
          (c.phase == Phase::kStopCopy ||
           (precopy_ended_ && h.offset + h.length > precopy_end_))) {
        return Violation(k, h, "PRE_COPY data after the PRE_COPY phase ended");
      }
      if (phase == Phase::kStopCopy && precopy_ended_ && h.offset < precopy_end_) {
        return Violation(k, h, "STOP_COPY data before the offset where PRE_COPY ended");
      }
      if (phase == Phase::kPreCopy) {
        precopy_data_end_ = std::max(precopy_data_end_, h.offset + h.length);
      } else {
        stop_data_start_ = std::min(stop_data_start_, h.offset);
      }
      c.phase = phase;
      const bool one = conns_.size() == 1;
      const uint64_t expected = one ? received : c.next_offset;
      if (one ? h.offset != expected : h.offset < expected) {
        return absl::DataLossError(absl::StrCat("device stream ", device_, ": DATA at offset ",
                                                h.offset, ", expected ", expected));
      }
      c.next_offset = h.offset + h.length;
      f.data_length = h.length;
      return f;
    }
    case FrameType::kKeepalive:
      f.needs_payload = true;  // Its seal.
      return f;
    case FrameType::kEndPhase:
      if (h.phase != static_cast<uint8_t>(Phase::kPreCopy)) {
        return Violation(k, h, "only PRE_COPY ends by END_PHASE");
      }
      if (precopy_ended_) {
        // After a resume the source says again what it said before: the same, or a violation.
        if (h.offset == precopy_end_ && precopy_end_epoch_ < epoch_) return f;
        return Violation(k, h, "END_PHASE(PRE_COPY) comes once (again after a resume only as "
                               "it came before)");
      }
      // At the bytes sent before it: after every PRE_COPY byte, before every STOP_COPY one;
      // on one connection, before a resume, exactly at the bytes received.
      if (h.offset < precopy_data_end_ || h.offset > stop_data_start_ ||
          (epoch_ == 0 && (conns_.size() == 1 ? h.offset != received
                                              : h.offset < c.next_offset))) {
        return Violation(k, h, absl::StrCat("END_PHASE(PRE_COPY) at offset ", h.offset,
                                            " does not separate the PRE_COPY data (to ",
                                            precopy_data_end_, ") from the STOP_COPY data"));
      }
      precopy_ended_ = true;
      precopy_end_ = h.offset;
      precopy_end_epoch_ = epoch_;
      return f;
    case FrameType::kInitialDataSent:
      if (initial_end_seen_) {
        if (h.offset == initial_end_ && initial_end_epoch_ < epoch_) return f;
        return Violation(k, h, "INITIAL_DATA_SENT comes once (again after a resume only as it "
                               "came before)");
      }
      // Once, in PRE_COPY, at an offset no lower than what came before it on this connection.
      // On one connection exactly at the bytes received; striped, the other connections' DATA
      // may still be on its way (END_STREAM's total bounds it). After a resume the source says
      // it again before it sends its held frames again: only the phases' bounds hold then.
      if (precopy_ended_ || h.offset > stop_data_start_ ||
          (epoch_ == 0 && (c.phase == Phase::kStopCopy ||
                           (conns_.size() == 1 ? h.offset != received
                                               : h.offset < c.next_offset)))) {
        return Violation(k, h, "INITIAL_DATA_SENT comes once, in PRE_COPY, right after its data");
      }
      initial_end_seen_ = true;
      initial_end_ = h.offset;
      initial_end_epoch_ = epoch_;
      if (initial_end_out_ != nullptr) initial_end_out_->store(h.offset);
      return f;
    case FrameType::kEndStream:
    case FrameType::kError:
      f.needs_payload = true;
      return f;
    default:
      return absl::DataLossError(
          absl::StrCat("unexpected ", peer::FrameTypeName(h.type), " frame in a device stream"));
  }
}

absl::StatusOr<peer::EndStream> IncomingStream::OnEndStream(const FrameHeader& h,
                                                            absl::string_view payload,
                                                            uint64_t received) {
  ASSIGN_OR_RETURN(peer::EndStream end, peer::ParseEndStream(h, payload));
  // On one connection nothing follows END_STREAM; striped, frames on the other connections
  // may still be on their way.
  if (received > end.total_bytes || (conns_.size() == 1 && received != end.total_bytes)) {
    return EndStreamTotalError(end.total_bytes, received);
  }
  if (initial_end_seen_ && initial_end_ > end.total_bytes) {
    return absl::DataLossError(absl::StrCat("device stream ", device_, ": INITIAL_DATA_SENT at ",
                                            initial_end_, ", past the stream's end at ",
                                            end.total_bytes));
  }
  end_ = end;
  return end;
}

absl::StatusOr<bool> IncomingStream::CheckComplete(uint64_t received,
                                                   std::optional<peer::StreamTag> digest) const {
  if (!end_.has_value()) {
    return absl::DataLossError(absl::StrCat("device stream ", device_, ": no END_STREAM"));
  }
  if (received != end_->total_bytes) return EndStreamTotalError(end_->total_bytes, received);
  if (end_->digest_kind != wire::DigestKind::kPoly1305 || !digest.has_value()) return false;
  if (!peer::TagsEqual(*digest, end_->digest)) return DigestMismatchError();
  return true;
}

absl::Status IncomingStream::OnError(const FrameHeader& h, absl::string_view payload) const {
  ASSIGN_OR_RETURN(absl::string_view body, peer::OpenVerdict(h, payload, control_key()));
  return SourceAbandonedError(h, body);
}

absl::Status IncomingStream::OnKeepalive(const FrameHeader& h, absl::string_view payload) const {
  return peer::OpenVerdict(h, payload, control_key()).status();
}

absl::StatusOr<bool> IncomingStream::OnSettle(const FrameHeader& h, absl::string_view payload) {
  Conn& c = conns_[0];
  if (!end_.has_value()) return Violation(0, h, "the commit is settled only after END_STREAM");
  if (h.seq != c.next_seq) {
    return absl::DataLossError(absl::StrCat("device stream ", device_, " connection 0: frame "
                                            "sequence ", h.seq, ", expected ", c.next_seq));
  }
  ++c.next_seq;
  if (h.device != device_) {
    return absl::DataLossError(
        absl::StrCat("frame for device ", h.device, " on the connection of device ", device_));
  }
  switch (static_cast<FrameType>(h.type)) {
    case FrameType::kConfirm:
      // Only the source, holding the session secret, can say its point of no return is behind.
      RETURN_IF_ERROR(peer::OpenVerdict(h, payload, control_key()).status());
      return true;
    case FrameType::kKeepalive:
      // It restarts the wait for CONFIRM: one nobody sealed could keep a committed destination
      // waiting forever for a source long gone.
      RETURN_IF_ERROR(peer::OpenVerdict(h, payload, control_key()).status());
      return false;
    case FrameType::kError:
      return OnError(h, payload);
    default:
      return Violation(0, h, "after COMMIT only CONFIRM, KEEPALIVE or ERROR may come");
  }
}

}  // namespace migmover::stream
