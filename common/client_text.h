// Client-supplied text quoted in error messages, bounded and valid UTF-8.
//
// A status message travels back in gRPC's trailing metadata, which clients
// cap (8 KiB by default): a message that quotes a 64 KiB model name whole
// no longer fits, and the client sees RESOURCE_EXHAUSTED instead of the
// real error. And a message that quotes bytes that are not UTF-8 cannot be
// written as JSON (the REST port) or decoded by most clients. Every string
// a client sent (a model name, a tensor name, a version string, a path)
// goes through ClientText() before it is quoted.
#ifndef SPARSE_COMMON_CLIENT_TEXT_H_
#define SPARSE_COMMON_CLIENT_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace sparse {

// Quoted client strings keep at most this many bytes.
inline constexpr size_t kMaxClientTextBytes = 128;
// No status message is longer than this (ToGrpcStatus enforces it).
inline constexpr size_t kMaxStatusMessageBytes = 2048;

// Whether `text` is well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF).
bool IsValidUtf8(absl::string_view text);

// `text` if it is at most `max_bytes` long; otherwise its first bytes (cut
// at a UTF-8 character boundary) followed by "...[N more bytes]". Either
// way, each byte that is not part of a well-formed UTF-8 character, and
// each ASCII control character, is written as "\xNN": the result is always
// valid UTF-8 on one line.
std::string ClientText(absl::string_view text, size_t max_bytes = kMaxClientTextBytes);

}  // namespace sparse

#endif  // SPARSE_COMMON_CLIENT_TEXT_H_
