// Major page faults per thread, for a request's cost (InferCost::major_faults):
// a major fault is a page the kernel had to read from disk because it was
// not in the page cache (a memory-mapped weight slice not touched lately).
// getrusage(RUSAGE_THREAD) counts them per thread, so a worker counting
// around its own compute sees only the faults of that compute, not those of
// the process's other threads.
#ifndef SPARSE_COMMON_PAGE_FAULTS_H_
#define SPARSE_COMMON_PAGE_FAULTS_H_

#include <cstdint>

namespace sparse {

// ru_majflt of the calling thread since it started; 0 if the kernel cannot
// tell (getrusage failed).
int64_t ThreadMajorFaults();

// Faults taken for the calling thread's work in another process: a sharded
// front adds what its shards reported for the calls it waited on, so the
// MajorFaultCounter of the thread that computes the batch counts them too.
// Negative values are ignored.
void AddMajorFaultsTakenElsewhere(int64_t faults);

// Counts, from its construction, the calling thread's own major faults and
// those reported by AddMajorFaultsTakenElsewhere on that thread. Create, run
// the work and read Count() on one thread; not for sharing between threads.
class MajorFaultCounter {
 public:
  MajorFaultCounter();
  int64_t Count() const;

 private:
  int64_t own_start_;
  int64_t elsewhere_start_;
};

}  // namespace sparse

#endif  // SPARSE_COMMON_PAGE_FAULTS_H_
