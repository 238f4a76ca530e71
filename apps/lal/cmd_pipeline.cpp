// lal plugins | validate | graph — inspect plugins and pipelines without running them.
#include <csignal>
#include <iostream>

#include "command.hpp"
#include "lal/runtime/pipeline.hpp"
#include "lal/runtime/runtime.hpp"

namespace lal::cli {
namespace {

std::vector<runtime::fs::path> plugin_dirs(const po::variables_map& vm) {
  std::vector<runtime::fs::path> dirs;
  if (vm.count("plugin_path"))
    for (const auto& d : vm["plugin_path"].as<std::vector<std::string>>()) dirs.emplace_back(d);
  return dirs;
}

void add_plugin_path_option(po::options_description& desc) {
  desc.add_options()("plugin_path", po::value<std::vector<std::string>>()->composing(),
                     "extra directory searched for plugins first (repeatable); then $LAL_PLUGIN_PATH, then "
                     "<lal>/../lib/lal/plugins");
}

void print_diagnostics(const runtime::PipelineLoad& load) {
  for (const auto& w : load.warnings) std::cerr << w.str() << " (warning)\n";
  for (const auto& e : load.errors) std::cerr << e.str() << "\n";
}

int plugins_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  add_plugin_path_option(desc);
  desc.add_options()("verbose,v", "also show config keys and port docs");
  po::variables_map vm;
  if (!parse_command_line("plugins", "[--plugin_path DIR] [-v]", args, desc, {}, vm)) return 0;
  auto dirs = plugin_dirs(vm);
  for (const auto& d : runtime::default_plugin_path()) dirs.push_back(d);
  runtime::PluginRegistry registry(dirs);
  const auto found = registry.discover();
  std::cout << "search path:";
  for (const auto& d : registry.search_path()) std::cout << " " << d.string();
  std::cout << "\n";
  int refused = 0;
  for (const auto& f : found) {
    if (!f.plugin) {
      ++refused;
      std::cout << "\n! " << f.file.string() << ": refused: " << f.error << "\n";
      continue;
    }
    const PluginDescriptor& d = *f.plugin->descriptor;
    std::cout << "\n" << d.name << "  (" << to_string(d.kind) << ", version " << d.version << ", ABI "
              << f.plugin->entry->abi_version << ")\n  " << d.description << "\n  file: " << f.file.string() << "\n";
    for (const auto& p : d.ports) {
      std::cout << "  " << to_string(p.direction) << " " << p.name << ": " << p.type;
      if (!p.reply_type.empty()) std::cout << " → " << p.reply_type;
      if (p.optional) std::cout << " (optional)";
      if (p.direction == PortDirection::input) std::cout << " [" << to_string(p.overflow) << ", " << p.capacity << "]";
      if (vm.count("verbose") && !p.doc.empty()) std::cout << " — " << p.doc;
      std::cout << "\n";
    }
    for (const auto& c : d.config) {
      std::cout << "  config " << c.name << ": " << to_string(c.type);
      if (c.required) std::cout << " (required)";
      else if (!c.default_yaml.empty()) std::cout << " = " << c.default_yaml;
      if (vm.count("verbose") && !c.doc.empty()) std::cout << " — " << c.doc;
      std::cout << "\n";
    }
  }
  if (found.empty()) std::cout << "no plugins found\n";
  return refused ? 1 : 0;
}

runtime::PipelineLoad load_or_report(const std::string& command, const std::vector<std::string>& args,
                                     po::options_description& desc, po::variables_map& vm, bool& help) {
  po::positional_options_description pos;
  pos.add("file", 1);
  desc.add_options()("file", po::value<std::string>(), "pipeline YAML file");
  add_plugin_path_option(desc);
  help = !parse_command_line(command, "FILE.yaml [options]", args, desc, pos, vm);
  if (help) return {};
  if (!vm.count("file")) throw UsageError("which pipeline? give a FILE.yaml");
  return runtime::load_pipeline(vm["file"].as<std::string>(), plugin_dirs(vm));
}

int validate_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  po::variables_map vm;
  bool help = false;
  auto load = load_or_report("validate", args, desc, vm, help);
  if (help) return 0;
  print_diagnostics(load);
  if (!load.ok()) {
    std::cerr << load.errors.size() << " error" << (load.errors.size() == 1 ? "" : "s") << " in "
              << load.spec.file.string() << "\n";
    return 1;
  }
  std::cout << load.spec.file.string() << ": ok (" << load.spec.modules.size() << " modules)\n";
  return 0;
}

int graph_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("format", po::value<std::string>()->default_value("dot"), "dot or mermaid");
  po::variables_map vm;
  bool help = false;
  auto load = load_or_report("graph", args, desc, vm, help);
  if (help) return 0;
  const std::string format = vm["format"].as<std::string>();
  if (format != "dot" && format != "mermaid") throw UsageError("--format must be dot or mermaid");
  print_diagnostics(load);
  if (!load.ok()) return 1;
  std::cout << runtime::render_graph(load.spec, format);
  return 0;
}

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_sigint(int) { g_interrupted = 1; }

int run_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("user", po::value<std::string>()->default_value("default"), "user the turns speak for")(
      "threads", po::value<std::size_t>()->default_value(2), "bus worker threads")(
      "stats", "print per-module delivery/drop/failure counts to stderr at the end");
  po::variables_map vm;
  bool help = false;
  auto load = load_or_report("run", args, desc, vm, help);
  if (help) return 0;
  print_diagnostics(load);
  if (!load.ok()) return 1;
  if (vm["threads"].as<std::size_t>() == 0) throw UsageError("--threads must be at least 1");

  runtime::RuntimeOptions options;
  options.bus.threads = vm["threads"].as<std::size_t>();
  runtime::Runtime rt(std::move(load.spec), options);
  rt.start();

  // Ctrl-C interrupts the blocking read (no SA_RESTART), cancels what is running and ends cleanly.
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  const std::string user = vm["user"].as<std::string>();
  std::string line;
  while (!g_interrupted && !rt.failed() && std::getline(std::cin, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    rt.submit(line, user);
    while (!rt.wait_idle(std::chrono::milliseconds(100)))
      if (g_interrupted) {
        rt.cancel_all();
        break;
      }
  }
  if (!g_interrupted) rt.wait_idle(std::chrono::seconds(30));
  if (vm.count("stats")) {
    for (const auto& s : rt.bus().stats())
      std::cerr << s.member << " <- " << s.topic << ": delivered " << s.delivered << ", dropped " << s.dropped
                << ", failed " << s.failed << ", high water " << s.high_water << "\n";
  }
  const bool failed = rt.failed();
  const std::string why = rt.failure();
  rt.stop();
  if (failed) {
    std::cerr << "lal run: pipeline stopped: " << why << "\n";
    return 1;
  }
  return g_interrupted ? 130 : 0;
}

}  // namespace

LAL_COMMAND("run", "run a pipeline: each stdin line is a turn on its input topic", run_command);
LAL_COMMAND("plugins", "list the plugins found: name, kind, version, ABI, ports, config", plugins_command);
LAL_COMMAND("validate", "check a pipeline YAML; every error as file:line:col", validate_command);
LAL_COMMAND("graph", "draw a pipeline as DOT or Mermaid with message types on the edges", graph_command);

}  // namespace lal::cli
