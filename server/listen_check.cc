#include "server/listen_check.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sparse {
namespace {

// A socket closed when it goes.
struct Socket {
  explicit Socket(int fd) : fd(fd) {}
  ~Socket() {
    if (fd >= 0) close(fd);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd;
};

// The errno of binding and listening on `address` as the servers do
// (SO_REUSEADDR), 0 on success; the socket stays open in *held.
int TryListen(const addrinfo& address, std::vector<std::unique_ptr<Socket>>* held) {
  auto s = std::make_unique<Socket>(socket(address.ai_family, address.ai_socktype | SOCK_CLOEXEC,
                                           address.ai_protocol));
  if (s->fd < 0) return errno;
  const int on = 1;
  if (setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0) return errno;
  if (bind(s->fd, address.ai_addr, address.ai_addrlen) != 0) return errno;
  if (listen(s->fd, 1) != 0) return errno;
  held->push_back(std::move(s));
  return 0;
}

std::string Reason(int error) {
  switch (error) {
    case EADDRINUSE:
      return "address already in use";
    case EACCES:
      return "permission denied (ports below 1024 need privileges)";
    case EADDRNOTAVAIL:
      return "not an address of this machine";
    default:
      return std::strerror(error);
  }
}

// Listens on every address `host` resolves to at `port` (gRPC serves when
// at least one binds); the first error when none does, naming `address`
// (the flag's spelling of `host`).
absl::Status CheckOne(const std::string& host, absl::string_view address, const ListenPort& p,
                      std::vector<std::unique_ptr<Socket>>* held) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(p.port);
  if (const int e = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); e != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--address=", address, " does not resolve: ", gai_strerror(e)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addresses(found, &freeaddrinfo);
  int first_error = 0;
  bool listened = false;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int e = TryListen(*a, held);
    listened = listened || e == 0;
    if (e != 0 && first_error == 0) first_error = e;
  }
  if (listened) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ":", p.port, " (", p.flag,
                                             "): ", Reason(first_error)));
}

}  // namespace

absl::Status CheckListenPorts(const std::string& address, const std::vector<ListenPort>& ports) {
  // "[::1]" as gRPC takes it is "::1" to the resolver.
  absl::string_view host = address;
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  std::map<int, std::string> flags;  // port -> the flag that took it first
  for (const ListenPort& p : ports) {
    if (p.port <= 0) continue;
    auto [it, fresh] = flags.emplace(p.port, p.flag);
    if (!fresh) {
      return absl::InvalidArgumentError(absl::StrCat(it->second, " and ", p.flag,
                                                     " both ask for port ", p.port,
                                                     ": give each its own port"));
    }
  }
  std::vector<std::unique_ptr<Socket>> held;  // until every port is checked
  for (const ListenPort& p : ports) {
    if (p.port <= 0) continue;
    const absl::Status free = CheckOne(std::string(host), address, p, &held);
    if (!free.ok()) return free;
  }
  return absl::OkStatus();
}

}  // namespace sparse
