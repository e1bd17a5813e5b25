// Command-line and signal set-up shared by sparse-server, sparse-cli,
// sparse-train and the benchmark servers.
#ifndef SPARSE_COMMON_COMMAND_LINE_H_
#define SPARSE_COMMON_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace sparse {

// Sets the usage text, makes --help list the flags defined in the source
// file whose path contains `main_file` (absl only matches files named
// after the program, and ours are named foo_main.cc), and parses the
// command line. Returns the positional arguments after the program name.
//
// --help (and --helpfull, --helpshort, --help=substring) prints to stdout
// and exits 0, with source paths shown relative to the source tree, never
// the builder's directories. --version prints `version_text` and exits 0
// (sparse::VersionText() for the binaries). `--version=N` is refused
// with a hint: the model-version flags are --model_version.
// Also turns off Abseil's mutex deadlock detection (see the .cc).
std::vector<std::string> ParseCommandLine(int argc, char** argv, absl::string_view usage,
                                          absl::string_view main_file,
                                          absl::string_view version_text);

// SIGINT/SIGTERM handling for servers. Call BlockStopSignals() before any
// thread starts (threads inherit the mask); then one thread calls
// WaitForStopSignal(), which returns the signal's name when one arrives.
void BlockStopSignals();
const char* WaitForStopSignal();

}  // namespace sparse

#endif  // SPARSE_COMMON_COMMAND_LINE_H_
