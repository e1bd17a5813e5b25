// CPU time used by this process, for "CPU per request" figures: the server
// reports it over GetServerStats, the load generator reads its own.
#ifndef SPARSE_COMMON_PROCESS_CPU_H_
#define SPARSE_COMMON_PROCESS_CPU_H_

#include <cstdint>

namespace sparse {

struct ProcessCpu {
  int64_t user_ns = 0;
  int64_t system_ns = 0;
  int64_t total_ns() const { return user_ns + system_ns; }
};

// User and system CPU time of every thread of this process so far.
ProcessCpu ReadProcessCpu();

// Cores this process may run on (its affinity mask; at least 1).
int UsableCores();

}  // namespace sparse

#endif  // SPARSE_COMMON_PROCESS_CPU_H_
