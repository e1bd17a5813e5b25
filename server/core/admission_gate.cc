#include "server/core/admission_gate.h"

#include <algorithm>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/client_text.h"

namespace sparse {
namespace {

// "model 'm' has its limit of N requests in flight (config.pbtxt
// limits.max_in_flight)": how a refusal and an expired wait both begin.
std::string AtLimit(absl::string_view model, const sparse::v1::Limits& limits) {
  return absl::StrCat("model '", ClientText(model), "' has its limit of ", limits.max_in_flight(),
                      " requests in flight (config.pbtxt limits.max_in_flight)");
}

// The places being handed on by a Leave() on this thread (see Leave()).
thread_local std::vector<AdmissionGates::Resume>* t_resuming = nullptr;

}  // namespace

AdmissionGates::AdmissionGates() : expirer_([this] { ExpireWaiters(); }) {}

AdmissionGates::~AdmissionGates() {
  std::vector<Resume> left;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  expirer_.join();
  {
    absl::MutexLock lock(&mu_);
    for (auto& [model, gate] : gates_) {
      for (Waiter& w : gate.waiting) left.push_back(std::move(w.resume));
      gate.waiting.clear();
    }
  }
  for (Resume& resume : left) {
    resume(absl::UnavailableError(
        "sparse-server is shutting down; send the request to another replica"));
  }
}

absl::StatusOr<AdmissionGates::Entry> AdmissionGates::Enter(absl::string_view model,
                                                            const sparse::v1::Limits& limits,
                                                            int level, absl::Time deadline,
                                                            Resume resume) {
  absl::MutexLock lock(&mu_);
  Gate& gate = gates_[model];
  gate.limits = limits;
  // Those already waiting go first.
  if (gate.waiting.empty() && gate.has_place()) {
    ++gate.in;
    return Entry::kEntered;
  }
  if (limits.over_limit() != sparse::v1::Limits::DELAY || limits.max_delay_us() <= 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat(AtLimit(model, limits), "; retry with backoff"));
  }
  Waiter waiter{.level = level,
                .expiry = absl::Now() + absl::Microseconds(limits.max_delay_us()),
                .resume = std::move(resume)};
  if (deadline < waiter.expiry) {
    waiter.expiry = deadline;
    waiter.own_deadline = true;
  }
  // By level (1 first), in arrival order within one.
  auto at = gate.waiting.end();
  while (at != gate.waiting.begin() && std::prev(at)->level > level) --at;
  if (waiter.expiry < next_expiry_) {
    next_expiry_ = waiter.expiry;
    wake_ = true;
  }
  gate.waiting.insert(at, std::move(waiter));
  return Entry::kWaiting;
}

void AdmissionGates::Leave(absl::string_view model) {
  std::vector<Resume> admitted;
  {
    absl::MutexLock lock(&mu_);
    auto it = gates_.find(model);
    if (it == gates_.end()) return;
    Gate& gate = it->second;
    gate.in = std::max<int64_t>(0, gate.in - 1);
    while (!gate.waiting.empty() && gate.has_place()) {
      ++gate.in;
      admitted.push_back(std::move(gate.waiting.front().resume));
      gate.waiting.pop_front();
    }
  }
  // A resumed request that fails at once (the worker queue full) leaves
  // its place on this thread: its successor is resumed by the loop below,
  // not by a call inside this one, so a line of failures nests no deeper.
  if (t_resuming != nullptr) {
    for (Resume& resume : admitted) t_resuming->push_back(std::move(resume));
    return;
  }
  t_resuming = &admitted;
  for (size_t i = 0; i < admitted.size(); ++i) {
    Resume resume = std::move(admitted[i]);
    resume(absl::OkStatus());
  }
  t_resuming = nullptr;
}

void AdmissionGates::ExpireWaiters() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.AwaitWithDeadline(absl::Condition(this, &AdmissionGates::WakeOrStopping), next_expiry_);
    wake_ = false;
    if (stopping_) return;
    const absl::Time now = absl::Now();
    std::vector<std::pair<Resume, absl::Status>> expired;
    next_expiry_ = absl::InfiniteFuture();
    for (auto& [model, gate] : gates_) {
      for (auto w = gate.waiting.begin(); w != gate.waiting.end();) {
        if (w->expiry > now) {
          next_expiry_ = std::min(next_expiry_, w->expiry);
          ++w;
          continue;
        }
        absl::Status why =
            w->own_deadline
                ? absl::DeadlineExceededError(absl::StrCat(
                      "the request's timeout passed while it waited for a place under model '",
                      ClientText(model), "''s limit of ", gate.limits.max_in_flight(),
                      " requests in flight (config.pbtxt limits.max_in_flight)"))
                : absl::ResourceExhaustedError(absl::StrCat(
                      AtLimit(model, gate.limits), ", and no place freed within "
                      "limits.max_delay_us (", gate.limits.max_delay_us(),
                      " us); retry with backoff"));
        expired.emplace_back(std::move(w->resume), std::move(why));
        w = gate.waiting.erase(w);
      }
    }
    if (expired.empty()) continue;
    mu_.Unlock();
    for (auto& [resume, why] : expired) resume(why);
    mu_.Lock();
  }
}

int64_t AdmissionGates::in_flight(absl::string_view model) const {
  absl::MutexLock lock(&mu_);
  auto it = gates_.find(model);
  return it == gates_.end() ? 0 : it->second.in;
}

int64_t AdmissionGates::waiting(absl::string_view model) const {
  absl::MutexLock lock(&mu_);
  auto it = gates_.find(model);
  return it == gates_.end() ? 0 : static_cast<int64_t>(it->second.waiting.size());
}

}  // namespace sparse
