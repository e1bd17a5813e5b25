// Running a built binary from a test: one command line, or many at once,
// and the flags its --help lists. For the tests of where each flag of a
// binary applies (issue 31), which try every flag in every kind of run.
#ifndef SPARSE_TESTS_TESTING_COMMAND_RUNS_H_
#define SPARSE_TESTS_TESTING_COMMAND_RUNS_H_

#include <sys/wait.h>

#include <cstdio>
#include <cstdint>
#include <future>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace sparse {

struct CommandOutput {
  int exit_code = -1;  // -1: killed by a signal, or could not start
  std::string out;     // stdout and stderr together when the command says 2>&1
};

// Runs a shell command; what it printed on stdout.
inline CommandOutput RunCommand(const std::string& command) {
  CommandOutput result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) result.out.append(buf, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Runs every command, `parallel` at a time; their outputs in order.
inline std::vector<CommandOutput> RunCommands(const std::vector<std::string>& commands,
                                              size_t parallel) {
  std::vector<CommandOutput> outputs(commands.size());
  for (size_t first = 0; first < commands.size(); first += parallel) {
    std::vector<std::future<CommandOutput>> running;
    for (size_t i = first; i < commands.size() && i < first + parallel; ++i) {
      running.push_back(std::async(std::launch::async, RunCommand, commands[i]));
    }
    for (size_t i = 0; i < running.size(); ++i) outputs[first + i] = running[i].get();
  }
  return outputs;
}

// One row of a binary's flag table: a flag, a value valid wherever it
// applies, the kinds of run (bits) it applies to, and the kinds this value
// would turn into another kind (not tried there).
struct FlagCase {
  std::string flag;
  std::string value;
  uint32_t applies;
  uint32_t chooses = 0;
};

// A command line to try: `flag` empty for a run with every flag that applies
// to it (the flags in combination), else one flag where it does not apply.
struct FlagJob {
  std::string flag;
  std::string args;
  bool applies;
};

// For each of `run_count` kinds of run (bit i, base command line
// base(1 << i)): one job with every flag that applies to it, and one job
// per flag that does not.
template <typename Base>
std::vector<FlagJob> FlagJobs(const std::vector<FlagCase>& table, uint32_t run_count, Base base) {
  std::vector<FlagJob> jobs;
  for (uint32_t bit = 0; bit < run_count; ++bit) {
    const uint32_t run = 1u << bit;
    FlagJob all{"", base(run), true};
    for (const FlagCase& c : table) {
      if (c.chooses & run) continue;
      const std::string arg = " '--" + c.flag + "=" + c.value + "'";
      if (c.applies & run) {
        all.args += arg;
      } else {
        jobs.push_back({c.flag, base(run) + arg, false});
      }
    }
    jobs.push_back(std::move(all));
  }
  return jobs;
}

// Runs each job's command line, command(job.args), `parallel` at a time.
template <typename Command>
std::vector<CommandOutput> RunFlagJobs(const std::vector<FlagJob>& jobs, Command command,
                                       size_t parallel) {
  std::vector<std::string> commands;
  for (const FlagJob& job : jobs) commands.push_back(command(job.args));
  return RunCommands(commands, parallel);
}

// The flags a table has rows for.
inline std::set<std::string> TableFlags(const std::vector<FlagCase>& table) {
  std::set<std::string> flags;
  for (const FlagCase& c : table) flags.insert(c.flag);
  return flags;
}

// The flags a --help text lists ("    --name (help...)" lines), without "--".
inline std::set<std::string> FlagsInHelp(const std::string& help) {
  std::set<std::string> listed;
  std::istringstream lines(help);
  const std::regex flag_line(R"(^    --([a-z0-9_]+) \()");
  std::smatch m;
  for (std::string line; std::getline(lines, line);) {
    if (std::regex_search(line, m, flag_line)) listed.insert(m[1]);
  }
  return listed;
}

}  // namespace sparse

#endif  // SPARSE_TESTS_TESTING_COMMAND_RUNS_H_
