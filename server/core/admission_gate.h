// AdmissionGates: each model's limit of requests in flight (config.pbtxt
// limits.max_in_flight), and the requests that wait for a place under it
// (limits.over_limit: DELAY), each for at most limits.max_delay_us.
//
// A request of a limited model Enter()s its model's gate once it is
// admitted (a bad request never takes a place) and Leave()s it once
// answered. Over the limit it is refused at once (REJECT) or waits in line,
// by priority level then arrival (DELAY). A waiter is resumed with OK when
// a place frees (it holds that place: Leave() once it is answered), or with
// RESOURCE_EXHAUSTED when its delay runs out, DEADLINE_EXCEEDED when its
// own deadline comes first, UNAVAILABLE when the gates are destroyed. One
// thread expires waiters; it sleeps while none waits.
//
// Thread-safe. Resume callbacks run without the gates' lock held, on the
// thread that freed the place, the expiry thread or the destructor's.
#ifndef SPARSE_SERVER_CORE_ADMISSION_GATE_H_
#define SPARSE_SERVER_CORE_ADMISSION_GATE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "sparse/v1/model_config.pb.h"

namespace sparse {

class AdmissionGates {
 public:
  using Resume = std::function<void(const absl::Status&)>;

  AdmissionGates();
  // Resumes every waiter with UNAVAILABLE.
  ~AdmissionGates();
  AdmissionGates(const AdmissionGates&) = delete;
  AdmissionGates& operator=(const AdmissionGates&) = delete;

  enum class Entry { kEntered, kWaiting };
  // A request of `model` under `limits` (max_in_flight >= 1): kEntered when
  // it holds a place now; kWaiting when `resume` will be called later (over
  // the limit, DELAY); RESOURCE_EXHAUSTED over the limit with REJECT.
  // `deadline` is the request's own (absl::InfiniteFuture() for none).
  absl::StatusOr<Entry> Enter(absl::string_view model, const sparse::v1::Limits& limits,
                              int level, absl::Time deadline, Resume resume);
  // A request that held a place of `model` is answered.
  void Leave(absl::string_view model);

  // Requests holding a place, and waiting for one (tests, gauges).
  int64_t in_flight(absl::string_view model) const;
  int64_t waiting(absl::string_view model) const;

 private:
  struct Waiter {
    int level = 1;
    absl::Time expiry;
    bool own_deadline = false;  // expiry is the request's deadline, not the delay's
    Resume resume;
  };
  struct Gate {
    int64_t in = 0;
    sparse::v1::Limits limits;  // the latest a request came with
    std::deque<Waiter> waiting;
    // A place for one more request; a limit taken away (0) lets everyone in.
    bool has_place() const { return limits.max_in_flight() <= 0 || in < limits.max_in_flight(); }
  };

  void ExpireWaiters();
  bool WakeOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_ || stopping_; }

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Gate> gates_ ABSL_GUARDED_BY(mu_);
  absl::Time next_expiry_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread expirer_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_ADMISSION_GATE_H_
