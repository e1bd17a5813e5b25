// Reading the PEM files behind the TLS flags of sparse-server and sparse-cli.
#ifndef SPARSE_COMMON_PEM_H_
#define SPARSE_COMMON_PEM_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparse {

// The text of the PEM file at `path`, given by `flag` (named in errors).
// Errors: NOT_FOUND if it cannot be read, INVALID_ARGUMENT if it holds no
// "-----BEGIN " block.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view flag);

}  // namespace sparse

#endif  // SPARSE_COMMON_PEM_H_
