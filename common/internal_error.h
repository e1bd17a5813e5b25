// Internal errors: exceptions that reach one of the server's entry points.
//
// No exception may end the process. Every entry point (an HTTP connection's
// I/O, a gRPC handler, a computation, a worker-pool task, a model load, a
// model-control call, a front's keep-alive, a metrics scrape) runs its work
// under CatchInternal(): what it throws fails only that request, connection
// or load, is logged once to stderr with the place it came from, and is
// counted there (sparse_internal_errors_total{where}, server/metrics/metrics.h).
//
// FaultPoint(site) marks a step of each entry point where tests make the
// next calls throw (InjectFault), to see the process live and answering.
// Unarmed, it is one relaxed atomic load.
#ifndef SPARSE_COMMON_INTERNAL_ERROR_H_
#define SPARSE_COMMON_INTERNAL_ERROR_H_

#include <array>
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace sparse {

// Where an internal error was caught: the `where` label of the counter.
enum class ErrorSite {
  kHttp,            // a REST connection's I/O thread and the REST frontend
  kMetrics,         // the metrics port's connections and the scrape
  kGrpc,            // a gRPC handler (native, OIP, model control, shard)
  kCompute,         // running a batch through a model
  kWorker,          // a worker-pool task, outside any request
  kLoader,          // scanning, loading and unloading model versions
  kModelControl,    // a load or unload asked for by a client
  kShardKeepalive,  // a front's keep-alive calls to its shards
  kCount,
};
inline constexpr int kErrorSites = static_cast<int>(ErrorSite::kCount);

// "http", "metrics", "grpc", ... (the label value).
absl::string_view ErrorSiteName(ErrorSite site);

// Logs `what` to stderr with the site's name and counts it. Thread-safe.
void CountInternalError(ErrorSite site, absl::string_view what);

// How many internal errors each site has counted since the process began.
int64_t InternalErrors(ErrorSite site);

// What the exception in flight says (call from a catch block).
std::string CurrentExceptionText();

// Calls fn(). If it throws, the exception is counted under `site` and the
// result is INTERNAL (saying where and what); otherwise fn's own status
// (fn returns absl::Status) or OK (fn returns void).
template <typename Fn>
absl::Status CatchInternal(ErrorSite site, Fn&& fn) noexcept {
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<Fn>>) {
      std::forward<Fn>(fn)();
      return absl::OkStatus();
    } else {
      return std::forward<Fn>(fn)();
    }
  } catch (...) {
    const std::string what = CurrentExceptionText();
    CountInternalError(site, what);
    return absl::InternalError(
        absl::StrCat("internal error in ", ErrorSiteName(site), ": ", what,
                     " (the server's log has it; other requests are not affected)"));
  }
}

// Throws std::runtime_error("injected fault at <site>") while faults are
// armed for `site`. For tests; see InjectFault.
void FaultPoint(ErrorSite site);

// The next `times` FaultPoint(site) calls throw. For tests.
void InjectFault(ErrorSite site, int times);

}  // namespace sparse

#endif  // SPARSE_COMMON_INTERNAL_ERROR_H_
