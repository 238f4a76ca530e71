// lal — entry point: dispatches to the subcommand named by the first argument.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>

#include "command.hpp"
#include "lal/version.hpp"
#if LAL_WITH_TORCH
#include "lal/lm/engine.hpp"
#endif

namespace lal::cli {

namespace {
std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}

void print_overview() {
  std::cout << "lal " << LAL_VERSION_STRING
            << " — a language-model system that thinks like a person\n\n"
               "Usage: lal <command> [options]    (lal <command> --help for details)\n\nCommands:\n";
  auto cmds = commands();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  for (const auto& c : cmds) {
    std::string name = c.name;
    name.resize(std::max<std::size_t>(name.size(), 18), ' ');
    std::cout << "  " << name << "  " << c.summary << "\n";
  }
  std::cout << "\nGlobal options: --help, --version, --log_level trace|debug|info|warn|error|off\n";
}
}  // namespace

bool register_command(Command cmd) {
  registry().push_back(std::move(cmd));
  return true;
}
const std::vector<Command>& commands() { return registry(); }

void add_common_options(po::options_description& desc) {
  desc.add_options()("help,h", "show this help")("log_level", po::value<std::string>()->default_value("warn"),
                                                 "stderr log level: trace|debug|info|warn|error|off");
}

bool parse_command_line(const std::string& command, const std::string& usage, const std::vector<std::string>& args,
                        po::options_description& desc, const po::positional_options_description& positional,
                        po::variables_map& vm) {
  try {
    po::store(po::command_line_parser(args).options(desc).positional(positional).run(), vm);
    if (vm.count("help")) {
      std::cout << "Usage: lal " << command << " " << usage << "\n\n" << desc << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  const auto level = spdlog::level::from_str(vm["log_level"].as<std::string>());
  if (level == spdlog::level::off && vm["log_level"].as<std::string>() != "off")
    throw UsageError("--log_level: unknown level '" + vm["log_level"].as<std::string>() +
                     "' (trace, debug, info, warn, error, off)");
  spdlog::set_level(level);
  return true;
}

}  // namespace lal::cli

int main(int argc, char** argv) {
  using namespace lal::cli;
  auto logger = spdlog::stderr_color_mt("lal");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::warn);
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");

  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_overview();
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version" || args[0] == "-V") {
    std::cout << "lal " << LAL_VERSION_STRING << " (SDK ABI " << LAL_SDK_ABI_VERSION << ")\n";
#if LAL_WITH_TORCH
    std::cout << lal::lm::runtime_report() << "\n";
#else
    std::cout << "built without the LibTorch engine (LAL_WITH_TORCH=OFF)\n";
#endif
    return 0;
  }
  // "bench bus" and friends: a two-word command wins over its one-word prefix.
  const Command* chosen = nullptr;
  std::size_t consumed = 0;
  for (const auto& c : commands()) {
    const bool two_words = args.size() >= 2 && c.name == args[0] + " " + args[1];
    if (two_words || (c.name == args[0] && consumed < 2)) {
      chosen = &c;
      consumed = two_words ? 2 : 1;
      if (two_words) break;
    }
  }
  if (!chosen) {
    bool is_group = false;
    for (const auto& c : commands())
      if (c.name.rfind(args[0] + " ", 0) == 0) is_group = true;
    if (is_group) {
      std::cerr << "lal " << args[0] << ": say what to run:";
      for (const auto& c : commands())
        if (c.name.rfind(args[0] + " ", 0) == 0) std::cerr << " '" << c.name << "'";
      std::cerr << "\n";
    } else {
      std::cerr << "lal: unknown command '" << args[0] << "' (lal --help lists the commands)\n";
    }
    return 2;
  }
  std::vector<std::string> rest(args.begin() + static_cast<long>(consumed), args.end());
  try {
    return chosen->run(rest);
  } catch (const UsageError& e) {
    std::cerr << "lal " << chosen->name << ": " << e.what() << " (see lal " << chosen->name << " --help)\n";
    return 2;
  } catch (const std::exception& e) {
    // LibTorch's errors (c10::Error) carry its C++ stack after the message: users get the message; the stack
    // stays available with TORCH_SHOW_CPP_STACKTRACES=1, LibTorch's own switch.
    std::string message = e.what();
    const auto stack = message.find("\nException raised from ");
    const char* show = std::getenv("TORCH_SHOW_CPP_STACKTRACES");
    if (stack != std::string::npos && !(show && std::string(show) == "1")) message.resize(stack);
    std::cerr << "lal " << chosen->name << ": error: " << message << "\n";
    return 1;
  }
}
