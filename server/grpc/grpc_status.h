// The one place where an absl::Status becomes a grpc::Status. The codes
// are the same numbers, so the conversion is a cast. Messages pass through,
// cut to kMaxStatusMessageBytes so that every status fits in the trailing
// metadata a client accepts (quoted client strings are already short, see
// common/client_text.h; this is the backstop).
#ifndef SPARSE_SERVER_GRPC_GRPC_STATUS_H_
#define SPARSE_SERVER_GRPC_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "common/client_text.h"
#include "grpcpp/support/status.h"

namespace sparse {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      ClientText(status.message(), kMaxStatusMessageBytes));
}

}  // namespace sparse

#endif  // SPARSE_SERVER_GRPC_GRPC_STATUS_H_
