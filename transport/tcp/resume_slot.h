// ResumeSlot: where a destination device stream's resume meets its receiver
// (api/PEER_PROTOCOL.md, "Resume"). The peer listener's handshake threads offer the connections
// of a resuming HELLO (Offer); the device's receiver, once its receive ended on a lost
// connection, waits for a whole set of them (Await), resumes on it and answers each HELLO. One
// slot per device stream, from its first connection set until its receiver is done (Close).
//
// A resume numbered above the last one taken is the only one that counts: an older set still
// coming is dropped (the source gave it up). The first connection of a new resume also cuts the
// stream's current connections (SetLive): the source has given them up, and a receive still
// waiting on one that went silent must end now, not at its idle timeout.
//
// Threads: Offer on handshake threads, the rest on the receiver's thread; `mu_` guards all.
// Nothing waits on a peer under it (answers go out after, outside it).
#ifndef MIGMOVER_TRANSPORT_TCP_RESUME_SLOT_H_
#define MIGMOVER_TRANSPORT_TCP_RESUME_SLOT_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "transport/base/unique_fd.h"
#include "transport/peer/frame_codec.h"

namespace migmover::transport {

class ResumeSlot {
 public:
  // The stream of device `device` as its first HELLOs set it up: their nonce, their stream
  // count, and whether TLS ran on every connection. A resume must match all three.
  ResumeSlot(uint32_t device, const peer::HelloNonce& nonce, uint32_t streams, bool tls);

  // Connection `hello.stream` of resume `hello.resume` (its proof already checked), taken from
  // `*connection` and kept until the receiver answers it. Errors (`*connection` is left to the
  // caller, which sends them as the HELLO_ACK): FailedPrecondition
  // once closed; InvalidArgument for another nonce, stream count or TLS than the stream's;
  // AlreadyExists for a number not above the last resume taken, or a stream index already
  // offered for this one.
  absl::Status Offer(const peer::Hello& hello, UniqueFd* connection, bool tls,
                     std::string security);

  // The stream's current connections (duplicates, owned here), shut down when a newer resume's
  // first connection comes.
  void SetLive(std::vector<UniqueFd> connections);

  struct Set {
    uint64_t resume = 0;              // Its number.
    std::vector<UniqueFd> connections;  // By stream index.
    std::vector<std::string> security;  // By stream index.
  };
  // Waits until every connection of a resume numbered above the last one taken has come, takes
  // it and returns it. Errors: DeadlineExceeded at `deadline`; Cancelled once `cancel` is
  // raised (checked every 50 ms); FailedPrecondition once closed.
  absl::StatusOr<Set> Await(absl::Time deadline, const std::atomic<bool>& cancel);

  // No resume from now on: offers still held are answered with `why` (bounded, best effort) and
  // closed, and later ones refused.
  void Close(const absl::Status& why);

 private:
  const uint32_t device_;
  const peer::HelloNonce nonce_;
  const uint32_t streams_;
  const bool tls_;
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status closed_why_ ABSL_GUARDED_BY(mu_);
  uint64_t last_taken_ ABSL_GUARDED_BY(mu_) = 0;  // The last resume Await returned.
  uint64_t offered_ ABSL_GUARDED_BY(mu_) = 0;     // The resume `pending_` belongs to (0: none).
  std::vector<UniqueFd> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> pending_security_ ABSL_GUARDED_BY(mu_);
  std::vector<UniqueFd> live_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_TCP_RESUME_SLOT_H_
