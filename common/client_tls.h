// ClientTls: how a client reaches a server that has TLS on (sparse-cli's
// --tls* flags, a sharded front's --shard_tls* flags). Plain settings: the
// gRPC credentials are built from them where gRPC is seen
// (client/client.h, ChannelCredentialsFor).
#ifndef SPARSE_COMMON_CLIENT_TLS_H_
#define SPARSE_COMMON_CLIENT_TLS_H_

#include <string>

namespace sparse {

// PEM files, all optional. With no ca_file the system's roots verify the
// server; cert_file and key_file (both or neither) are the client's
// certificate for mutual TLS; server_name overrides the name checked against
// the server's certificate.
struct ClientTls {
  bool enabled = false;
  std::string ca_file, cert_file, key_file, server_name;
  // TLS is on when asked for or implied by any file or name.
  bool on() const {
    return enabled || !ca_file.empty() || !cert_file.empty() || !key_file.empty() ||
           !server_name.empty();
  }
};

}  // namespace sparse

#endif  // SPARSE_COMMON_CLIENT_TLS_H_
