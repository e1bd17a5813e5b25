#include "server/http/http_router.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/client_text.h"

namespace sparse {
namespace {

bool IsCapture(absl::string_view segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

}  // namespace

HttpRouter::HttpRouter(std::function<HttpReply(const HttpRequest&)> not_found)
    : not_found_(std::move(not_found)) {
  if (!not_found_) {
    not_found_ = [](const HttpRequest& request) {
      return ErrorReply(absl::NotFoundError(absl::StrCat(
          "no endpoint ", ClientText(request.method), " ", ClientText(request.path))));
    };
  }
}

void HttpRouter::Add(std::string method, absl::string_view pattern, Route route) {
  Entry entry{std::move(method), absl::StrSplit(pattern, '/', absl::SkipEmpty()),
              std::move(route)};
  routes_.push_back(std::move(entry));
}

bool HttpRouter::Match(const Entry& entry, const std::vector<absl::string_view>& parts,
                       PathParams* params) {
  if (parts.size() != entry.segments.size()) return false;
  params->clear();
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& segment = entry.segments[i];
    if (IsCapture(segment)) {
      params->emplace(segment.substr(1, segment.size() - 2), std::string(parts[i]));
    } else if (segment != parts[i]) {
      return false;
    }
  }
  return true;
}

void HttpRouter::Handle(const HttpRequest& request, Reply done) {
  const std::vector<absl::string_view> parts = absl::StrSplit(request.path, '/', absl::SkipEmpty());
  PathParams params;
  for (const Entry& entry : routes_) {
    if (entry.method == request.method && Match(entry, parts, &params)) {
      return entry.route(request, params, std::move(done));
    }
  }
  done(not_found_(request));
}

}  // namespace sparse
