// HeartbeatLink: one end of a session's heartbeat, the connection on which the two daemons' own
// watch threads tell each other they are alive: the source sends PING, the destination answers
// each with PONG (api/PEER_PROTOCOL.md, "Heartbeat"). The device threads never touch it, so a
// daemon whose device is slow still answers, and one that is hung (stopped, wedged) does not,
// even while its kernel keeps acknowledging the stream connections; noticing that within the
// peer timeout is what it is for. The TCP implementation is peer::HeartbeatConnection, whatever
// transport carries the streams; the fake transport wraps it to drop beats.
//
// Threads: one thread at a time (the session's watch thread).
#ifndef MIGMOVER_TRANSPORT_API_HEARTBEAT_LINK_H_
#define MIGMOVER_TRANSPORT_API_HEARTBEAT_LINK_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace migmover::transport {

class HeartbeatLink {
 public:
  virtual ~HeartbeatLink() = default;
  // Sends this end's beat: PING from the source, PONG from the destination. Errors: the send's
  // (Unavailable when the peer is gone), DeadlineExceeded; Cancelled once `stop` is raised.
  virtual absl::Status Beat(absl::Time deadline, const std::atomic<bool>& stop) = 0;
  // Waits for the peer's next beat: a PONG at the source, a PING at the destination. Errors:
  // DeadlineExceeded when none came by `deadline`; Unavailable when the peer closed the
  // connection (its session ended, or its daemon died); Cancelled once `stop` is raised
  // (checked every 100 ms at most); DataLoss for any other frame or a sequence gap; the
  // receive's errno (a reset, or ETIMEDOUT from the kernel's own peer timeout).
  // At the source, LOADED frames that come before the PONG are collected for TakeLoaded.
  virtual absl::Status AwaitBeat(absl::Time deadline, const std::atomic<bool>& stop) = 0;

  // Switchover readiness (api/PEER_PROTOCOL.md, version 5). The destination's end: tells the
  // source that every byte of device `device`'s initial precopy data is written into the device
  // (LOADED). Errors: as Beat's. The source's end: the devices whose LOADED came since the last
  // call (device indexes as the peer sent them: the caller checks their range).
  virtual absl::Status SendLoaded(uint32_t device, absl::Time deadline,
                                  const std::atomic<bool>& stop) = 0;
  virtual std::vector<uint32_t> TakeLoaded() = 0;
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_API_HEARTBEAT_LINK_H_
