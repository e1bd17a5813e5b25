#include "common/pem.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace sparse {

absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view flag) {
  // A regular file only, checked before opening: a directory would throw
  // from the stream, a FIFO or a device would block or never end.
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat("cannot read ", flag, "=", path));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, "=", path, ": not a regular file; expected a PEM file (-----BEGIN ...)"));
  }
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxPemBytes) {
    return absl::InvalidArgumentError(absl::StrCat(flag, "=", path, ": ", size,
                                                   " bytes; a PEM file here holds at most ",
                                                   kMaxPemBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", flag, "=", path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::NotFoundError(absl::StrCat("cannot read ", flag, "=", path));
  if (text.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": expected a PEM file (-----BEGIN ...)"));
  }
  return text;
}

}  // namespace sparse
