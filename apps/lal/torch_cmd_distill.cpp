// `lal distill` — distil a teacher into a small student and export it in Hugging Face format.
// `lal train`   — the same trainer on a text corpus (no teacher): how the bundled demo model is made.
// Every option comes from the table in lal/train/options.hpp; --config FILE.yaml sets any of them, the command line
// overrides the file.
#include <spdlog/spdlog.h>

#include <iostream>

#include "command.hpp"
#include "lal/train/distill.hpp"
#include "lal/train/options.hpp"

namespace lal::cli {
namespace {

using lal::train::DistillOptions;
using lal::train::OptionType;

int run(const std::string& command, const std::vector<std::string>& args) {
  const bool train_only = command == "train";
  DistillOptions defaults;
  if (train_only) defaults.student_config = "demo";
  po::options_description desc("lal " + command);
  add_common_options(desc);
  desc.add_options()("config", po::value<std::string>(), "YAML file with any of the options below (CLI overrides)");
  for (const auto& spec : lal::train::option_specs()) {
    if (train_only && std::string(spec.name) == "teacher_model") continue;
    std::string help = spec.help;
    const auto def = lal::train::get_option(defaults, spec.name);
    if (!def.empty()) help += " [" + def + "]";
    if (spec.type == OptionType::Bool) {
      desc.add_options()(spec.name, po::value<std::string>()->implicit_value("true"), help.c_str());
      if (def == "true") desc.add_options()(("no_" + std::string(spec.name)).c_str(), po::bool_switch(), "turn it off");
    } else if (spec.type == OptionType::StringList) {
      desc.add_options()(spec.name, po::value<std::vector<std::string>>()->multitoken()->composing(), help.c_str());
    } else if (std::string(spec.name) == "quantize") {
      desc.add_options()(spec.name, po::value<std::string>()->implicit_value("int4"),
                         (help + "; --quantize alone = int4").c_str())("no_quantize", po::bool_switch(),
                                                                       "teacher in bfloat16/float32");
    } else {
      desc.add_options()(spec.name, po::value<std::string>(), help.c_str());
    }
  }
  po::variables_map vm;
  const char* usage = train_only ? "--corpus FILE... --tokenizer DIR [options]"
                                 : "--teacher_model DIR|org/name [options]   (--dry_run shows the plan)";
  if (!parse_command_line(command, usage, args, desc, {}, vm)) return 0;

  DistillOptions o = defaults;
  try {
    if (vm.count("config")) lal::train::load_yaml(o, vm["config"].as<std::string>());
    for (const auto& spec : lal::train::option_specs()) {
      const std::string name = spec.name;
      if (vm.count("no_" + name) && vm["no_" + name].as<bool>())
        lal::train::set_option(o, name, name == "quantize" ? "none" : "false", "--no_" + name);
      if (!vm.count(name)) continue;
      if (spec.type == OptionType::StringList) {
        lal::train::set_option(o, name, "", "--" + name);  // the command line replaces a list from the YAML file
        for (const auto& v : vm[name].as<std::vector<std::string>>()) lal::train::set_option(o, name, v, "--" + name);
      } else {
        lal::train::set_option(o, name, vm[name].as<std::string>(), "--" + name);
      }
    }
    if (train_only && !o.teacher_model.empty()) throw UsageError("lal train takes no teacher; use lal distill");
    if (train_only && o.corpus.empty()) throw UsageError("give --corpus FILE (text or JSONL)");
    lal::train::validate(o);
  } catch (const lal::train::OptionError& e) {
    throw UsageError(e.what());
  }
  return lal::train::run_distill(o);
}

}  // namespace

LAL_COMMAND("distill", "distil a teacher model into a small student, exported in Hugging Face format",
            [](const std::vector<std::string>& args) { return run("distill", args); });
LAL_COMMAND("train", "train a small model on a text corpus (same trainer and export as distill)",
            [](const std::vector<std::string>& args) { return run("train", args); });

}  // namespace lal::cli
