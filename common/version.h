// The project's version, for --version on every binary. The number lives
// in one place, the VERSION file at the top of the source tree (CMake reads
// it into project(); the Python package's setup.py reads it too); the git
// commit is added when the build is made from a checkout.
#ifndef SPARSE_COMMON_VERSION_H_
#define SPARSE_COMMON_VERSION_H_

#include <string>

namespace sparse {

// "0.3.0".
const char* ProjectVersion();

// "sparse-serve 0.3.0 (git 1a2b3c4d5e6f)\n", or without the parenthesis
// when not built from a checkout: what `--version` prints.
std::string VersionText();

}  // namespace sparse

#endif  // SPARSE_COMMON_VERSION_H_
