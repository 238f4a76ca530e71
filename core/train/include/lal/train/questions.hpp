// lal::train — the prompts a teacher answers: read from a file, or generated from templates.
//
// Torch-free. Generated questions cover the focus areas (high-school subjects; electrical and electronic
// engineering; IT and programming), mostly in Japanese (about 85 %) with some English, deterministic for a seed
// and free of duplicates. Files: `.jsonl` ({"question": ..., "area": ...} per line) or plain text (one per line).
// ERRORS: std::runtime_error naming the file and line (bad JSON, a line without "question", an empty file).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lal::train {

struct Question {
  std::string text;
  std::string area;      ///< "high_school", "electrical", "it", or "" when read from a plain-text file
  std::string language;  ///< "ja" or "en" ("" when unknown)
};

/// `count` questions, distinct up to question_capacity() (beyond it the list repeats: teacher answers are sampled).
std::vector<Question> generate_questions(std::int64_t count, std::uint64_t seed);
/// How many distinct questions the templates can produce.
std::int64_t question_capacity();

std::vector<Question> read_questions(const std::string& path);
/// Atomic write (temp + fsync + rename) as JSONL.
void write_questions(const std::string& path, const std::vector<Question>& questions);

}  // namespace lal::train
