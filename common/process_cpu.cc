#include "common/process_cpu.h"

#include <sched.h>
#include <sys/resource.h>

namespace sparse {
namespace {

int64_t Nanos(const timeval& t) {
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + static_cast<int64_t>(t.tv_usec) * 1000;
}

}  // namespace

ProcessCpu ReadProcessCpu() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return ProcessCpu{.user_ns = Nanos(usage.ru_utime), .system_ns = Nanos(usage.ru_stime)};
}

int UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  const int n = CPU_COUNT(&set);
  return n > 0 ? n : 1;
}

}  // namespace sparse
