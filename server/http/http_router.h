// HttpRouter: a route table (method, path pattern, handler) in front of an
// HTTP port's handlers, in place of an if-chain per protocol.
//
// A pattern is a path of literal segments and "{name}" segments, each
// matching one non-empty segment: "/v2/models/{model}/versions/{version}".
// Paths are split on '/' with empty segments dropped ("//v2/" is "/v2").
// Routes are tried in the order they were added; the first whose method and
// pattern match gets the request, with the captured segments. A request
// that no route matches is answered by `not_found` (404 by default).
//
// Add() every route before the transport starts; Handle() is thread-safe
// after that.
#ifndef SPARSE_SERVER_HTTP_HTTP_ROUTER_H_
#define SPARSE_SERVER_HTTP_HTTP_ROUTER_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/http/http_handler.h"

namespace sparse {

// The "{name}" segments a route captured, by name.
using PathParams = std::map<std::string, std::string, std::less<>>;

class HttpRouter final : public HttpHandler {
 public:
  using Reply = std::function<void(HttpReply)>;
  using Route = std::function<void(const HttpRequest&, const PathParams&, Reply)>;

  // `not_found` answers a request no route matches (may be empty: a 404
  // naming the method and path).
  explicit HttpRouter(std::function<HttpReply(const HttpRequest&)> not_found = nullptr);

  // REQUIRES: `pattern` starts with '/'; names in it are unique.
  void Add(std::string method, absl::string_view pattern, Route route);

  void Handle(const HttpRequest& request, Reply done) override;

 private:
  struct Entry {
    std::string method;
    std::vector<std::string> segments;  // "{name}" captures
    Route route;
  };
  // Whether `entry` matches `parts`; fills *params with its captures.
  static bool Match(const Entry& entry, const std::vector<absl::string_view>& parts,
                    PathParams* params);

  std::vector<Entry> routes_;
  std::function<HttpReply(const HttpRequest&)> not_found_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_HTTP_HTTP_ROUTER_H_
