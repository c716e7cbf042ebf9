// Training text for nnops-gpt: any file read as bytes, or a corpus generated from a seeded
// stochastic grammar whose entropy per byte is known exactly, so a run can print its held-out
// loss beside the floor no model can beat.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gpt {

struct Corpus {
  std::vector<uint8_t> train, heldout;  // 90% / 10% by position
  double entropy_floor = -1;            // nats per byte; < 0 when unknown (a file)
  std::string source;                   // "grammar" or the file's path
};

// The grammar: sentences drawn independently, each a sequence of choices (subject number,
// words, an optional clause) whose probabilities are fixed, separated by ". " or ".\n". Every
// sentence string comes from exactly one sequence of choices and a sentence's end is marked,
// so the bytes' entropy rate is H(sentence) / E[sentence bytes], both computed exactly.
struct Grammar {
  // Draws sentences with a seeded generator until `bytes` bytes are written (the last one is
  // cut off); the result depends only on seed and bytes.
  static std::vector<uint8_t> generate(uint64_t seed, int64_t bytes);
  static double entropy_per_sentence();  // nats
  static double mean_sentence_bytes();
  static double entropy_rate() { return entropy_per_sentence() / mean_sentence_bytes(); }
  // The log-probability (nats) of `sentences` sentences drawn from seed, and their bytes: a
  // check of the exact figures above by the law of large numbers.
  static double sample_log_probability(uint64_t seed, int64_t sentences, int64_t& bytes);
};

// The grammar corpus of `bytes` bytes, or the file's bytes when path is not empty. Throws
// std::runtime_error when the file cannot be read or is too short for one window.
Corpus load_corpus(const std::string& path, uint64_t seed, int64_t bytes, int64_t context);

}  // namespace gpt
