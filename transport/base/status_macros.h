// The project's one home for RETURN_IF_ERROR / ASSIGN_OR_RETURN: Debian 12's abseil
// (20220623) ships neither.
#ifndef MIGMOVER_TRANSPORT_BASE_STATUS_MACROS_H_
#define MIGMOVER_TRANSPORT_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MIGMOVER_CONCAT_INNER_(a, b) a##b
#define MIGMOVER_CONCAT_(a, b) MIGMOVER_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status migmover_status_ = (expr);      \
    if (!migmover_status_.ok()) {                  \
      return migmover_status_;                     \
    }                                              \
  } while (0)

// `ASSIGN_OR_RETURN(lhs, expr)`: evaluates `expr` (an absl::StatusOr<T>); on error returns the
// status, otherwise move-assigns the value to `lhs` (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, expr) \
  MIGMOVER_ASSIGN_OR_RETURN_IMPL_(MIGMOVER_CONCAT_(migmover_statusor_, __LINE__), lhs, expr)

#define MIGMOVER_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                    \
  if (!statusor.ok()) {                                      \
    return std::move(statusor).status();                     \
  }                                                          \
  lhs = std::move(statusor).value()

#endif  // MIGMOVER_TRANSPORT_BASE_STATUS_MACROS_H_
