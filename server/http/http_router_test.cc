// HttpRouter: the route table every HTTP protocol's handler is built on.
#include "server/http/http_router.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparse {
namespace {

using ::testing::HasSubstr;

// Routes that answer with their name and captures, in order.
HttpRouter Routes() {
  HttpRouter router;
  auto answer = [](std::string name) {
    return [name](const HttpRequest&, const PathParams& params, HttpRouter::Reply done) {
      HttpReply reply;
      reply.body = name;
      for (const auto& [key, value] : params) reply.body += " " + key + "=" + value;
      done(reply);
    };
  };
  router.Add("GET", "/v2", answer("server"));
  router.Add("GET", "/v2/models/stats", answer("all-stats"));
  router.Add("GET", "/v2/models/{model}", answer("metadata"));
  router.Add("POST", "/v2/models/{model}/infer", answer("infer"));
  router.Add("POST", "/v2/models/{model}/versions/{version}/infer", answer("infer"));
  return router;
}

HttpReply Ask(HttpRouter& router, std::string method, std::string path) {
  HttpRequest request;
  request.method = std::move(method);
  request.path = std::move(path);
  HttpReply got;
  int answers = 0;
  router.Handle(request, [&](HttpReply reply) {
    got = std::move(reply);
    ++answers;
  });
  EXPECT_EQ(answers, 1);
  return got;
}

TEST(HttpRouterTest, TheFirstRouteWhoseMethodAndPatternMatchAnswersWithItsCaptures) {
  HttpRouter router = Routes();
  EXPECT_EQ(Ask(router, "GET", "/v2").body, "server");
  EXPECT_EQ(Ask(router, "GET", "//v2/").body, "server") << "empty segments are dropped";
  EXPECT_EQ(Ask(router, "GET", "/v2/models/stats").body, "all-stats") << "added first";
  EXPECT_EQ(Ask(router, "GET", "/v2/models/m1").body, "metadata model=m1");
  EXPECT_EQ(Ask(router, "POST", "/v2/models/m1/infer").body, "infer model=m1");
  EXPECT_EQ(Ask(router, "POST", "/v2/models/m1/versions/3/infer").body,
            "infer model=m1 version=3");
}

TEST(HttpRouterTest, NoMatchingMethodOrPathIsA404NamingWhatWasAsked) {
  HttpRouter router = Routes();
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"POST", "/v2/models/m1"},            // a GET route
           {"GET", "/v2/models/m1/infer"},       // a POST route
           {"GET", "/v2/models"},                // too short
           {"POST", "/v2/models/m1/infer/x"},    // too long
           {"GET", "/v3"}}) {
    const HttpReply reply = Ask(router, method, path);
    EXPECT_EQ(reply.status, 404) << method << " " << path;
    EXPECT_THAT(reply.body, HasSubstr(method + " " + path));
  }
}

TEST(HttpRouterTest, ItsOwnNotFoundAnswerReplacesTheDefault) {
  HttpRouter router([](const HttpRequest&) { return ErrorReply(418, "teapot"); });
  EXPECT_EQ(Ask(router, "GET", "/anything").status, 418);
}

}  // namespace
}  // namespace sparse
