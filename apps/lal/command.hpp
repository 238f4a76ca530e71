// The `lal` command-line tool: one executable, one subcommand per file (cmd_*.cpp).
//
// Each subcommand registers itself with LAL_COMMAND and parses its own options with Boost.Program_options. Results
// go to stdout, logs to stderr. A subcommand returns the process exit code; it reports bad input as a one-line
// message naming what and where (throwing lal::cli::UsageError prints the message plus "see lal <cmd> --help").
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace lal::cli {

namespace po = boost::program_options;

/// Bad command-line usage: printed with a pointer to --help, exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Command {
  std::string name;     ///< "run", "bench bus" style names are allowed ("bench" dispatches on its next word)
  std::string summary;  ///< one line for `lal --help`
  std::function<int(const std::vector<std::string>& args)> run;  ///< args after the command name
};

/// Register a command (used by LAL_COMMAND at static-initialisation time).
bool register_command(Command cmd);
const std::vector<Command>& commands();

/// Options every command accepts: --help, --log_level. Add them to `desc`.
void add_common_options(po::options_description& desc);

/// Parse `args` against `desc` (+ positional), apply --log_level, print help if asked. Returns false when the
/// command should exit 0 right away (help printed). Throws UsageError on unknown or malformed options.
bool parse_command_line(const std::string& command, const std::string& usage, const std::vector<std::string>& args,
                        po::options_description& desc, const po::positional_options_description& positional,
                        po::variables_map& vm);

}  // namespace lal::cli

#define LAL_CONCAT_DETAIL(a, b) a##b
#define LAL_CONCAT(a, b) LAL_CONCAT_DETAIL(a, b)
/// LAL_COMMAND("name", "summary", function) — function: int(const std::vector<std::string>&).
#define LAL_COMMAND(name, summary, fn) \
  static const bool LAL_CONCAT(lal_command_registered_, __LINE__) = ::lal::cli::register_command({name, summary, fn})
