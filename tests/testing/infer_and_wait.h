// Runs one request through the serving core and waits for its answer: for
// tests that drive the core in process. Header-only: a test that includes it
// links sparse_core itself.
#ifndef SPARSE_TESTS_TESTING_INFER_AND_WAIT_H_
#define SPARSE_TESTS_TESTING_INFER_AND_WAIT_H_

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "server/core/inference_core.h"

namespace sparse::testing {

inline absl::Status InferAndWait(InferenceCore& core, const InferRequest& request,
                                 InferResponse* response) {
  absl::Status status = absl::UnknownError("done never ran");
  absl::Notification answered;
  core.Infer(request, response, [&](absl::Status s) {
    status = std::move(s);
    answered.Notify();
  });
  answered.WaitForNotification();
  return status;
}

}  // namespace sparse::testing

#endif  // SPARSE_TESTS_TESTING_INFER_AND_WAIT_H_
