// Reading the PEM files behind the TLS flags of sparse-server and sparse-cli.
#ifndef SPARSE_COMMON_PEM_H_
#define SPARSE_COMMON_PEM_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparse {

// Largest PEM file read (a certificate chain or a CA bundle is far smaller).
inline constexpr uint64_t kMaxPemBytes = uint64_t{16} << 20;

// The text of the PEM file at `path`, given by `flag` (named in errors).
// Errors: NOT_FOUND if it does not exist or cannot be read,
// INVALID_ARGUMENT if it is not a regular file (a directory, a FIFO), is
// larger than kMaxPemBytes, or holds no "-----BEGIN " block.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view flag);

}  // namespace sparse

#endif  // SPARSE_COMMON_PEM_H_
