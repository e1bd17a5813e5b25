// Whether sparse-server's listening ports are free, checked before the
// model repository loads: a taken port then fails at once, in one line
// naming the port and its flag, instead of after every model has loaded
// (gRPC binds only when the server is built).
//
// The check binds and listens on each port as the servers will (SO_REUSEADDR,
// no SO_REUSEPORT: the gRPC ports are built with GRPC_ARG_ALLOW_REUSEPORT
// off, so a port another server holds is refused there too), holding all of
// them until every one is checked, then closes them. A port taken between the
// check and the servers' own bind still fails there.
#ifndef SPARSE_SERVER_LISTEN_CHECK_H_
#define SPARSE_SERVER_LISTEN_CHECK_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace sparse {

struct ListenPort {
  int port = 0;      // 0 (a free port, always available) and -1 (off) are skipped
  std::string flag;  // the flag that sets it, e.g. "--http_port"
};

// OK when every port can be listened on at `address` (an IP address or a
// host name). Otherwise UNAVAILABLE, one line: "cannot listen on
// 127.0.0.1:8500 (--port): address already in use", or the reason the
// system gave; INVALID_ARGUMENT when two flags name one port or `address`
// does not resolve.
absl::Status CheckListenPorts(const std::string& address, const std::vector<ListenPort>& ports);

}  // namespace sparse

#endif  // SPARSE_SERVER_LISTEN_CHECK_H_
