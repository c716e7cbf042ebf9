// Command-line options of nnops-train and their parsing.
#pragma once

#include <cstdint>
#include <nnops/nnops.hpp>
#include <optional>
#include <string>

namespace train {

enum class Task { Regress, Classify };
enum class PruneScope { Layer, Global };
enum class PrunePattern { Unstructured, TwoFour };

struct Options {
  std::optional<nnops::Device> device;  // default: nnops::default_device()
  Task task = Task::Regress;
  std::optional<nnops::Activation> activation = nnops::Activation::ReLU;  // nullopt: none
  int64_t in = 1000, hidden = 2000, out = 1000, student_hidden = 500, classes = 10;
  int64_t train_samples = 8192, heldout_samples = 1024, batch = 64;
  int64_t epochs = 5, finetune_epochs = 2, distill_epochs = 6;
  float lr = 1e-3f, noise = 0.1f;
  double prune_amount = 0.5;
  PruneScope prune_scope = PruneScope::Layer;
  PrunePattern prune_pattern = PrunePattern::Unstructured;
  float temperature = 4.0f, alpha = 0.9f;
  uint64_t seed = 1;
  std::string metrics_path, save_dir, load_dir;
  bool quick = false;
  bool data_parallel = false;  // under mpirun: each rank trains on its shard of every batch
  int zero = 0;                // 1: Adam's state sharded across the ranks
  // Under mpirun: the hidden layer split across this many ranks (fc1 by rows, fc2 by columns);
  // with --data-parallel the rest of the world is the data-parallel factor.
  int tensor_parallel = 1;
  bool bf16 = false;  // BF16 mixed precision (FP32 masters)
  // After pruning, layers run on their compressed form: never, where timing shows it faster
  // (auto), or always (tests use it to force the sparse kernels).
  enum class SparseExecution { Off, Auto, Always } sparse_execution = SparseExecution::Off;
};

// Parses argv; throws std::invalid_argument with a one-line message on a bad flag or value.
// Returns nullopt when --help was printed.
std::optional<Options> parse_options(int argc, char** argv);

const char* activation_name(const std::optional<nnops::Activation>& a);
std::optional<nnops::Activation> activation_from_code(int32_t code);
int32_t activation_code(const std::optional<nnops::Activation>& a);  // -1 for none

}  // namespace train
