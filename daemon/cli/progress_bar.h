// The live line `migmoverctl watch` draws on a terminal.
#ifndef MIGMOVER_DAEMON_CLI_PROGRESS_BAR_H_
#define MIGMOVER_DAEMON_CLI_PROGRESS_BAR_H_

#include <string>

#include "api/migmover.pb.h"

namespace migmover::ctl {

// One line of at most `width` columns (no newline, no control characters): a bar of the bytes
// moved against moved + remaining (per device the larger of pending precopy bytes and the
// stop-copy size; a destination, which does not know what remains, gets no bar), then the
// phase, bytes moved, rate, remaining, expected downtime against its limit, and READY once the
// source is switchover-ready. Fields that do not fit are dropped from the end.
std::string ProgressLine(const v1::SessionStatus& s, int width);

// Bytes a switchover now would still have to move, as ProgressLine counts them; `known` is
// false for a destination.
uint64_t RemainingBytes(const v1::SessionStatus& s, bool* known);

}  // namespace migmover::ctl

#endif  // MIGMOVER_DAEMON_CLI_PROGRESS_BAR_H_
