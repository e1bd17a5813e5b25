#include "common/page_faults.h"

#include <sys/resource.h>

namespace sparse {
namespace {

// Only ever added to: a counter's start and end are read on its own thread.
thread_local int64_t taken_elsewhere = 0;

}  // namespace

int64_t ThreadMajorFaults() {
  rusage usage{};
  if (getrusage(RUSAGE_THREAD, &usage) != 0) return 0;
  return static_cast<int64_t>(usage.ru_majflt);
}

void AddMajorFaultsTakenElsewhere(int64_t faults) {
  if (faults > 0) taken_elsewhere += faults;
}

MajorFaultCounter::MajorFaultCounter()
    : own_start_(ThreadMajorFaults()), elsewhere_start_(taken_elsewhere) {}

int64_t MajorFaultCounter::Count() const {
  const int64_t own = ThreadMajorFaults() - own_start_;
  return (own > 0 ? own : 0) + (taken_elsewhere - elsewhere_start_);
}

}  // namespace sparse
