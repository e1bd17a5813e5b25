#include "common/internal_error.h"

#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/client_text.h"

namespace sparse {
namespace {

std::array<std::atomic<int64_t>, kErrorSites>& Counts() {
  static auto* counts = new std::array<std::atomic<int64_t>, kErrorSites>();
  return *counts;
}

std::array<std::atomic<int>, kErrorSites>& Armed() {
  static auto* armed = new std::array<std::atomic<int>, kErrorSites>();
  return *armed;
}

}  // namespace

absl::string_view ErrorSiteName(ErrorSite site) {
  switch (site) {
    case ErrorSite::kHttp:
      return "http";
    case ErrorSite::kMetrics:
      return "metrics";
    case ErrorSite::kGrpc:
      return "grpc";
    case ErrorSite::kCompute:
      return "compute";
    case ErrorSite::kWorker:
      return "worker";
    case ErrorSite::kLoader:
      return "loader";
    case ErrorSite::kModelControl:
      return "model_control";
    case ErrorSite::kShardKeepalive:
      return "shard_keepalive";
    case ErrorSite::kCount:
      break;
  }
  return "unknown";
}

void CountInternalError(ErrorSite site, absl::string_view what) {
  Counts()[static_cast<int>(site)].fetch_add(1, std::memory_order_relaxed);
  const std::string line =
      absl::StrCat("sparse-server: internal error in ", ErrorSiteName(site), ": ",
                   ClientText(what, 512), "; only this request, connection or load failed\n");
  std::fputs(line.c_str(), stderr);
}

int64_t InternalErrors(ErrorSite site) {
  return Counts()[static_cast<int>(site)].load(std::memory_order_relaxed);
}

std::string CurrentExceptionText() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

void FaultPoint(ErrorSite site) {
  std::atomic<int>& armed = Armed()[static_cast<int>(site)];
  if (armed.load(std::memory_order_relaxed) <= 0) return;
  if (armed.fetch_sub(1) > 0) {
    throw std::runtime_error(absl::StrCat("injected fault at ", ErrorSiteName(site)));
  }
  armed.fetch_add(1);  // lost the race for the last one
}

void InjectFault(ErrorSite site, int times) {
  Armed()[static_cast<int>(site)].store(times);
}

}  // namespace sparse
