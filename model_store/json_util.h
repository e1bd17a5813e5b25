// Parsing JSON the server reads from disk (safetensors headers,
// manifest.json) without letting its shape hurt the process.
#ifndef SPARSE_MODEL_STORE_JSON_UTIL_H_
#define SPARSE_MODEL_STORE_JSON_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace sparse {

// Deepest nesting of arrays and objects accepted in JSON read from disk.
// Our files need 3 levels; nlohmann::json's recursive members (dump(),
// comparison, copies) would overflow the stack on the hundreds of
// thousands a hostile file can nest.
inline constexpr int kMaxJsonDepth = 64;

// Parses `text`. INVALID_ARGUMENT "is not valid JSON" or "nests arrays or
// objects deeper than N levels"; nothing deeper than `max_depth` is ever
// built (the parser itself is iterative).
absl::StatusOr<nlohmann::json> ParseJsonBounded(absl::string_view text,
                                                int max_depth = kMaxJsonDepth);

// What a JSON value is, for error messages that must not echo attacker
// input: its type, and for a number or a short string its value
// (truncated).
std::string DescribeJson(const nlohmann::json& value);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_JSON_UTIL_H_
