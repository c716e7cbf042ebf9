// Command-line options of nnops-gpt and their parsing.
#pragma once

#include <cstdint>
#include <nnops/nnops.hpp>
#include <optional>
#include <string>

#include "model.hpp"

namespace gpt {

enum class PrunePattern { TwoFour, Unstructured };

struct Options {
  std::optional<nnops::Device> device;  // default: nnops::default_device()
  Config model;                         // the teacher
  int64_t student_layers = 2, student_dim = 128;
  std::string data_path;           // empty: the grammar corpus
  int64_t corpus_bytes = 2000000;  // of the grammar corpus
  int64_t batch = 8;
  int64_t steps = 300, finetune_steps = 100, distill_steps = 200;
  int64_t warmup = 20;
  float lr = 1e-3f, finetune_lr = 3e-4f, min_lr_ratio = 0.1f, weight_decay = 0.1f, clip = 1.0f;
  PrunePattern prune_pattern = PrunePattern::TwoFour;
  double prune_amount = 0.5;
  float temperature = 2.0f, alpha = 0.5f;
  int64_t log_every = 25, eval_batches = 8;
  int64_t sample_bytes = 0;
  float sample_temperature = 0.8f;
  uint64_t seed = 1;
  std::string metrics_path, save_dir, load_dir, dump_dir;
  bool quick = false;
  bool bf16 = false;  // BF16 products, FP32 masters
  // After pruning, the pruned products run compressed: never, where timing shows it faster
  // (auto), or always (tests use it).
  enum class SparseExecution { Off, Auto, Always } sparse_execution = SparseExecution::Off;
  bool data_parallel = false;  // under mpirun: each rank takes batch / ranks sequences
  int tensor_parallel = 1;     // under mpirun: heads and MLP units split over this many ranks

  // The student: the teacher's shape with fewer layers and a narrower width (same head width).
  Config student() const;
};

// Parses argv; throws std::invalid_argument with a one-line message on a bad flag or value.
// Returns nullopt when --help was printed.
std::optional<Options> parse_options(int argc, char** argv);

}  // namespace gpt
