// lal::train — every setting of `lal distill` / `lal train`, declared once.
//
// Torch-free header. Each option is one row of a table (name, type, default, help); the CLI, the YAML loader and
// `--dry_run`'s plan all read that table, so an option settable on the command line is settable in YAML under the
// same name and vice versa. Precedence: built-in default < YAML file (--config) < command line.
//
// ERRORS: set()/load_yaml() throw OptionError naming the option and where it came from ("--num_examples",
// "distill.yaml:4:16: num_examples") and what was wrong ("'abc' is not an integer"); unknown YAML keys are refused
// with a "did you mean" suggestion. validate() checks cross-option rules (e.g. a teacher or a corpus is required).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace lal::train {

class OptionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DistillOptions {
  // --- what to distill from / train on
  std::string teacher_model;            ///< HF directory or hub id (downloaded on first use); empty for corpus training
  std::vector<std::string> corpus;      ///< text files (.txt: paragraphs, .jsonl: {"text"} or {"question","answer"})
  std::string tokenizer;                ///< tokenizer.json (or its directory) for corpus training
  std::string questions;                ///< questions file (.txt or .jsonl); generated when missing
  std::string student_config = "auto";  ///< auto (largest that fits), a preset name or an HF config.json
  std::string student_init = "auto";    ///< auto | random | teacher (copy evenly spaced teacher layers)
  bool trim_vocab = false;              ///< keep only the tokens the data uses (+ their BPE parents, bytes, specials)
  std::string chat_template;            ///< empty = detect from the model directory; else chatml, qwen2.5, llama3 ...
  std::string system_prompt;
  // --- output
  std::string output_dir = "./models";
  std::string hf_model_name = "lal-brain-model";
  bool save_hf_format = true;
  std::string export_dtype = "bfloat16";  ///< float32 | bfloat16
  std::string model_card_note;            ///< a paragraph placed at the top of the exported README.md
  // --- teacher data
  std::int64_t num_examples = 5000;
  std::int64_t generation_batch_size = 8;
  std::int64_t max_new_tokens = 0;  ///< 0 = max_length - prompt length
  double generation_temperature = 0.7;
  double generation_top_p = 0.95;
  std::int64_t store_topk = 0;          ///< >0: store the teacher's top-k log-probabilities per position
  std::string teacher_logits = "auto";  ///< auto | online | topk | none (hard labels only)
  // --- training
  std::int64_t batch_size = 2;
  std::int64_t num_epochs = 5;
  std::int64_t gradient_accumulation = 16;
  std::int64_t max_length = 768;
  double learning_rate = 2e-4;
  double min_learning_rate = 2e-5;
  double warmup_ratio = 0.03;
  double weight_decay = 0.01;
  double max_grad_norm = 1.0;
  double distillation_temperature = 2.0;
  double alpha = 0.5;  ///< weight of the KD term; 1 - alpha weighs cross-entropy
  double validation_fraction = 0.05;
  std::int64_t eval_every = 0;  ///< optimizer steps between validations; 0 = at each checkpoint
  std::int64_t checkpoint_every = 500;
  std::int64_t keep_checkpoints = 2;
  /// step checkpoints hold the weights and the trainer state only, not the optimizer state (transformers'
  /// save_only_model): a third of the size for AdamW, but they cannot be resumed
  bool save_only_model = false;
  std::string resume_from;
  std::int64_t max_steps = 0;  ///< 0 = num_epochs over the data; >0 stops after this many steps
  std::int64_t seed = 42;
  // --- training speed (core/train/BENCHMARKS.md)
  std::string precision = "auto";  ///< auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32; masters stay float32
  std::string adamw = "auto";      ///< auto (fused where LibTorch has it, else foreach) | fused | foreach | loop
  /// data parallel: auto (sharded only when a whole AdamW state per device would not fit the plan) | on (ZeRO-1: each
  /// rank keeps and updates its share, then the ranks all-gather the new weights) | off (every rank keeps the whole
  /// state and updates every weight: no all-gather per step)
  std::string shard_optimizer = "auto";
  /// tokens per chunk of the fused lm_head + loss; -1 = auto ("auto" in YAML and on the command line): 4096 where
  /// the CUDA training kernels run (the chunk's logits are then held once, in bf16), else 1024; 0 = unchunked
  std::int64_t loss_chunk_tokens = -1;
  bool pack_sequences = true;             ///< several examples per row (per-document positions and attention)
  bool activation_checkpointing = false;  ///< recompute each layer in backward instead of keeping its activations
  std::int64_t vocab_multiple = 64;       ///< corpus training, --trim_vocab: vocabulary rounded up (1 = exact)
  std::int64_t profile_step = 0;          ///< >0: torch profiler trace of that optimizer step (work dir)
  // --- devices and memory
  std::string quantize = "auto";  ///< auto (int4 on GPU, none on CPU) | none | int8 | int4
  std::int64_t quantize_group = 64;
  bool cpu_offload = false;
  bool use_cpu_only = false;
  std::string device = "auto";
  std::int64_t threads = 0;    ///< 0 = LibTorch default
  std::string max_gpu_memory;  ///< cap on lal's CUDA allocations per GPU ("12GiB", "8000MiB"); empty = the whole GPU
  // The original project's Windows/Triton workarounds: accepted so copied command lines work, with no effect.
  bool ignore_memory_plan = false;  ///< run even when the plan says it does not fit
  bool windows_mode = false;
  bool use_triton_windows = false;
  bool use_direct_gpu = false;
  // --- run control
  bool dry_run = false;
  bool progress = true;  ///< progress bars on stderr
};

enum class OptionType { Bool, Int, Float, String, StringList };

struct OptionSpec {
  const char* name;
  OptionType type;
  const char* help;
};

/// The table, in the order `--help` shows it.
const std::vector<OptionSpec>& option_specs();

/// Set `name` from text (`origin` names where the text came from, for messages). Bool accepts
/// true/false/yes/no/on/off/1/0. StringList appends; an empty value clears the list. Throws OptionError.
void set_option(DistillOptions& o, const std::string& name, const std::string& value, const std::string& origin);
/// The current value as text (lists comma-joined).
std::string get_option(const DistillOptions& o, const std::string& name);

/// Apply a YAML mapping file (keys = option names; a top-level `distill:` mapping is also accepted).
void load_yaml(DistillOptions& o, const std::string& path);

/// Cross-option checks; throws OptionError naming the options involved.
void validate(const DistillOptions& o);

/// The effective settings as YAML (written next to checkpoints, printed by --dry_run).
std::string to_yaml(const DistillOptions& o);
/// "12GiB", "12G", "8000MiB", "1.5TiB", "123456" (bytes) -> bytes; throws OptionError naming `what`.
std::int64_t parse_bytes(const std::string& text, const std::string& what);

}  // namespace lal::train
