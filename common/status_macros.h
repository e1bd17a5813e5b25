// RETURN_IF_ERROR and ASSIGN_OR_RETURN, the two status macros Abseil
// 20220623 does not ship. Names and behaviour follow the ones Google uses
// internally, so code reads the same as elsewhere.
#ifndef SPARSE_COMMON_STATUS_MACROS_H_
#define SPARSE_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status); returns it from the enclosing function
// if it is not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    ::absl::Status sparse_status_ = (expr);                    \
    if (!sparse_status_.ok()) return sparse_status_;           \
  } while (0)

#define SPARSE_STATUS_CONCAT_INNER_(a, b) a##b
#define SPARSE_STATUS_CONCAT_(a, b) SPARSE_STATUS_CONCAT_INNER_(a, b)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>); on
// error returns its status, otherwise moves the value into `lhs`, which may
// be a declaration (`auto x`) or an existing variable. It expands to several
// statements: inside an `if`, use braces.
#define ASSIGN_OR_RETURN(lhs, expr)                                          \
  SPARSE_ASSIGN_OR_RETURN_IMPL_(                                             \
      SPARSE_STATUS_CONCAT_(sparse_statusor_, __LINE__), lhs, expr)

#define SPARSE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // SPARSE_COMMON_STATUS_MACROS_H_
