#include "common/version.h"

#include "common/build_version.h"  // generated in the build tree

namespace sparse {

const char* ProjectVersion() { return SPARSE_VERSION; }

std::string VersionText() {
  std::string text = std::string("sparse-serve ") + SPARSE_VERSION;
  if (SPARSE_GIT_COMMIT[0] != '\0') text += std::string(" (git ") + SPARSE_GIT_COMMIT + ")";
  return text + "\n";
}

}  // namespace sparse
