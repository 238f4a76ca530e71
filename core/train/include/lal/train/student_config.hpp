// lal::train — the student's architecture: presets, config files, and the Hugging Face config.json it exports.
//
// Torch-free. A student is a Qwen2- or Llama-family decoder (the families transformers and lal's engine both load
// without custom code). `--student_config` is a preset name or the path of a config.json:
//   half-teacher   the teacher's architecture with half its layers (initialised from its layers by default)
//   tiny           2 layers, hidden 64 (tests)
//   demo           4 layers, hidden 128, heads 4/2 (the bundled demo model)
//   qwen2.5-0.5b, qwen2.5-1.5b, llama-1b   the published architectures (random init)
// The vocabulary size is not part of a preset: it is the teacher's (or the tokenizer's, or the trimmed one).
// ERRORS: std::runtime_error / lal::lm::ConfigError naming the preset or file and the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lal/lm/model_config.hpp"

namespace lal::train {

std::vector<std::string> student_presets();

/// Resolve `spec` (preset or file). `teacher` may be null (corpus training: half-teacher is then refused).
/// `vocab_size` > 0 overrides the vocabulary size. Returns the config and whether the preset asks for teacher init.
lal::lm::ModelConfig student_config(const std::string& spec, const lal::lm::ModelConfig* teacher,
                                    std::int64_t vocab_size, bool* prefers_teacher_init = nullptr);

/// The evenly spaced teacher layers a student of `student_layers` layers copies (first and last included).
std::vector<std::int64_t> teacher_layer_subset(std::int64_t teacher_layers, std::int64_t student_layers);

/// config.json text for a qwen2/llama ModelConfig, as transformers writes it (architectures, model_type, ...).
std::string hf_config_json(const lal::lm::ModelConfig& c, const std::string& torch_dtype);

/// Parameter count of a llama/qwen2-style config (embeddings counted once when tied).
std::int64_t parameter_count(const lal::lm::ModelConfig& c);

}  // namespace lal::train
