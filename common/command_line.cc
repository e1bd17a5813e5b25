#include "common/command_line.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

namespace sparse {

namespace {

// The help lists each flag under its source file: shown from the source
// tree's top (server/main.cc) for ours and from absl/ for Abseil's, not
// with the builder's absolute paths.
std::string RelativeSourcePath(absl::string_view path) {
  static constexpr absl::string_view kSourceDir = SPARSE_SOURCE_DIR "/";
  if (absl::StartsWith(path, kSourceDir)) return std::string(path.substr(kSourceDir.size()));
  // ccache with CCACHE_BASEDIR compiles with paths relative to the build tree.
  while (absl::ConsumePrefix(&path, "../") || absl::ConsumePrefix(&path, "./")) {
  }
  if (!absl::StartsWith(path, "/")) return std::string(path);
  const size_t absl_dir = path.rfind("/absl/");
  if (absl_dir != absl::string_view::npos) return std::string(path.substr(absl_dir + 1));
  const size_t slash = path.rfind('/');
  return std::string(slash == absl::string_view::npos ? path : path.substr(slash + 1));
}

// `--version` is a bare switch: `--version=3` (the model version, in
// releases before 0.3) is refused with the flag that took its place.
void RefuseVersionWithValue(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return;
    for (const absl::string_view prefix : {"--version=", "-version="}) {
      if (!absl::StartsWith(arg, prefix)) continue;
      const absl::string_view value = arg.substr(prefix.size());
      if (value == "true" || value == "false") continue;
      std::fprintf(stderr,
                   "ERROR: --version takes no value: it prints the program's version. "
                   "For a model version use --model_version=%.*s\n",
                   static_cast<int>(value.size()), value.data());
      std::exit(1);
    }
  }
}

}  // namespace

std::vector<std::string> ParseCommandLine(int argc, char** argv, absl::string_view usage,
                                          absl::string_view main_file,
                                          absl::string_view version_text) {
  absl::SetProgramUsageMessage(usage);
  // Debian's Abseil is built without NDEBUG, so every absl::Mutex (gRPC's
  // own locks included) tracks lock order for deadlock detection by
  // default: perf showed its graph-cycle bookkeeping on every request. The
  // tests keep it on; the binaries turn it off, as a release build would.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::FlagsUsageConfig config;
  const std::string file(main_file);
  config.contains_help_flags = [file](absl::string_view path) {
    return absl::StrContains(path, file);
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.normalize_filename = RelativeSourcePath;
  const std::string version(version_text);
  config.version_string = [version] { return version; };
  absl::SetFlagsUsageConfig(config);
  RefuseVersionWithValue(argc, argv);
  // Abseil 20220623 exits 1 after --help; a help that was asked for is not
  // an error, so the usage flags are handled here and exit 0.
  std::vector<char*> rest = absl::flags_internal::ParseCommandLineImpl(
      argc, argv, absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
      absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
      absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  if (absl::flags_internal::HandleUsageFlags(std::cout, absl::ProgramUsageMessage()) != -1) {
    std::cout.flush();
    std::exit(0);
  }
  return std::vector<std::string>(rest.begin() + 1, rest.end());
}

namespace {

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void BlockStopSignals() {
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

const char* WaitForStopSignal() {
  const sigset_t set = StopSignals();
  int signal = 0;
  sigwait(&set, &signal);
  return signal == SIGINT ? "SIGINT" : "SIGTERM";
}

}  // namespace sparse
