// Parsing of nnops-train's flags: strict numbers, ranges checked, one-line errors.
#include "options.hpp"

#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "cli.hpp"

namespace train {

namespace {

constexpr const char* kHelp = R"(nnops-train: train, prune, fine-tune and distill an MLP with nnops.

The workload: a teacher MLP in -> hidden -> out (Linear, activation, Linear; nn.Linear init)
is trained with Adam on a synthetic task, pruned by L1 magnitude, fine-tuned with its masks
kept, then distilled into a smaller student in -> student-hidden -> out.

  --device cpu|cuda          device to run on (default: CUDA when usable, else CPU)
  --task regress|classify    regress: MSE on a noisy nonlinear target (default);
                             classify: cross-entropy on --classes classes, and the student
                             learns from kd_loss (Hinton et al.) mixed with cross-entropy
  --activation NAME          relu (default), leaky_relu, gelu, gelu_tanh, silu, sigmoid,
                             tanh, or none (the plain two-layer linear model)
  --in N --hidden N --out N  teacher sizes (default 1000, 2000, 1000; out = classes when
                             classifying)
  --student-hidden N         student hidden size (default 500)
  --classes N                classes for --task classify (default 10)
  --train-samples N          training samples (default 8192)
  --heldout-samples N        held-out samples (default 1024)
  --batch N                  mini-batch size (default 64)
  --epochs N                 teacher epochs (default 5)
  --finetune-epochs N        masked fine-tuning epochs (default 2)
  --distill-epochs N         student epochs (default 6)
  --lr X                     Adam learning rate (default 1e-3)
  --noise X                  target noise standard deviation (default 0.1)
  --prune-amount X           fraction of weights to prune, in [0, 1] (default 0.5)
  --prune-scope layer|global per layer, or one threshold across both layers (default layer)
  --prune-pattern unstructured|2:4
                             magnitude pruning of single weights (default), or N:M 2:4
                             (keep the 2 largest of every 4; ignores --prune-amount)
  --temperature X            distillation temperature T > 0 (default 4)
  --alpha X                  weight of the KD loss against cross-entropy, in [0, 1] (default 0.9)
  --precision fp32|bf16      fp32 (default), or BF16 mixed precision: BF16 weights,
                             activations and gradients in the products, FP32 master weights
                             in Adam, FP32 losses
  --seed N                   seed of the data and the initialisation (default 1)
  --metrics FILE             write every logged point as CSV (see tools/plot-training)
  --save DIR                 write the fine-tuned teacher and the student to DIR
  --load DIR                 evaluate models saved by --save instead of training
  --quick                    tiny sizes that finish in seconds (tests use it)
  --data-parallel            data-parallel training over MPI, launched as
                             mpirun -np N nnops-train --data-parallel ...; every rank takes
                             batch / N rows of each batch (needs nnops built with MPI)
  --zero 0|1                 with --data-parallel, 1 shards Adam's state across the ranks
  --tensor-parallel T        under mpirun -np T (or T x D with --data-parallel): each rank
                             holds hidden / T units of both models (fc1 split by rows, fc2 by
                             columns: one all-reduce of the output per forward); pruning
                             ranks the whole weights across the ranks (default 1)
  --sparse-execution off|auto|always
                             after pruning, run each layer on its compressed form (2:4: NM24,
                             else CSR) for fine-tuning, evaluation and distillation's teacher:
                             auto times each layer's training step both ways and keeps the
                             faster; always forces it (default off)
  --help                     this text
)";

using cli::bad;
using cli::parse_choice;
using cli::parse_int;
using cli::parse_real;

std::optional<nnops::Activation> parse_activation(const std::string& name) {
  using nnops::Activation;
  for (Activation a :
       {Activation::ReLU, Activation::LeakyReLU, Activation::GELU, Activation::GELUTanh,
        Activation::SiLU, Activation::Sigmoid, Activation::Tanh}) {
    if (name == nnops::to_string(a)) return a;
  }
  if (name == "none") return std::nullopt;
  bad("--activation: unknown activation '" + name + "'");
}

}  // namespace

const char* activation_name(const std::optional<nnops::Activation>& a) {
  return a ? nnops::to_string(*a) : "none";
}

int32_t activation_code(const std::optional<nnops::Activation>& a) {
  return a ? static_cast<int32_t>(*a) : -1;
}

std::optional<nnops::Activation> activation_from_code(int32_t code) {
  if (code == -1) return std::nullopt;
  if (code < 0 || code > static_cast<int32_t>(nnops::Activation::Tanh)) {
    throw std::runtime_error("unknown activation code " + std::to_string(code));
  }
  return static_cast<nnops::Activation>(code);
}

std::optional<Options> parse_options(int argc, char** argv) {
  Options o;
  // --quick sets small defaults first, so explicit flags still override them.
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      o.quick = true;
      o.in = 64, o.hidden = 128, o.out = 32, o.student_hidden = 32;
      o.train_samples = 1024, o.heldout_samples = 256, o.batch = 32;
      o.epochs = 4, o.finetune_epochs = 2, o.distill_epochs = 4;
      o.lr = 3e-3f;
    }
  }
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kHelp, stdout);
      return std::nullopt;
    }
    if (flag == "--quick") continue;
    if (flag == "--data-parallel") {
      o.data_parallel = true;
      continue;
    }
    if (i + 1 >= argc) bad(flag + " needs a value (see --help)");
    const char* v = argv[++i];
    const std::string value = v;
    const int64_t kMaxSize = int64_t(1) << 24;
    if (flag == "--device") {
      o.device = parse_choice<nnops::Device>(
          flag, value, {{"cpu", nnops::Device::CPU}, {"cuda", nnops::Device::CUDA}});
    } else if (flag == "--task") {
      o.task = parse_choice<Task>(flag, value,
                                  {{"regress", Task::Regress}, {"classify", Task::Classify}});
    } else if (flag == "--activation") {
      o.activation = parse_activation(value);
    } else if (flag == "--in") {
      o.in = parse_int(flag, v, 1, kMaxSize);
    } else if (flag == "--hidden") {
      o.hidden = parse_int(flag, v, 1, kMaxSize);
    } else if (flag == "--out") {
      o.out = parse_int(flag, v, 1, kMaxSize);
    } else if (flag == "--student-hidden") {
      o.student_hidden = parse_int(flag, v, 1, kMaxSize);
    } else if (flag == "--classes") {
      o.classes = parse_int(flag, v, 2, kMaxSize);
    } else if (flag == "--train-samples") {
      o.train_samples = parse_int(flag, v, 1, kMaxSize);
    } else if (flag == "--heldout-samples") {
      o.heldout_samples = parse_int(flag, v, 1, kMaxSize);
    } else if (flag == "--batch") {
      o.batch = parse_int(flag, v, 1, kMaxSize);
    } else if (flag == "--epochs") {
      o.epochs = parse_int(flag, v, 0, 100000);
    } else if (flag == "--finetune-epochs") {
      o.finetune_epochs = parse_int(flag, v, 0, 100000);
    } else if (flag == "--distill-epochs") {
      o.distill_epochs = parse_int(flag, v, 0, 100000);
    } else if (flag == "--lr") {
      o.lr = static_cast<float>(parse_real(flag, v, 0.0, 10.0, true));
    } else if (flag == "--noise") {
      o.noise = static_cast<float>(parse_real(flag, v, 0.0, 100.0, false));
    } else if (flag == "--prune-amount") {
      o.prune_amount = parse_real(flag, v, 0.0, 1.0, false);
    } else if (flag == "--prune-scope") {
      o.prune_scope = parse_choice<PruneScope>(
          flag, value, {{"layer", PruneScope::Layer}, {"global", PruneScope::Global}});
    } else if (flag == "--prune-pattern") {
      o.prune_pattern = parse_choice<PrunePattern>(
          flag, value,
          {{"unstructured", PrunePattern::Unstructured}, {"2:4", PrunePattern::TwoFour}});
    } else if (flag == "--temperature") {
      o.temperature = static_cast<float>(parse_real(flag, v, 0.0, 1000.0, true));
    } else if (flag == "--alpha") {
      o.alpha = static_cast<float>(parse_real(flag, v, 0.0, 1.0, false));
    } else if (flag == "--seed") {
      o.seed = static_cast<uint64_t>(parse_int(flag, v, 0, INT64_MAX));
    } else if (flag == "--precision") {
      o.bf16 = parse_choice<bool>(flag, value, {{"fp32", false}, {"bf16", true}});
    } else if (flag == "--sparse-execution") {
      using Mode = Options::SparseExecution;
      o.sparse_execution = parse_choice<Mode>(
          flag, value, {{"off", Mode::Off}, {"auto", Mode::Auto}, {"always", Mode::Always}});
    } else if (flag == "--tensor-parallel") {
      o.tensor_parallel = static_cast<int>(parse_int(flag, v, 1, 1024));
    } else if (flag == "--zero") {
      o.zero = static_cast<int>(parse_int(flag, v, 0, 1));
    } else if (flag == "--metrics") {
      o.metrics_path = value;
    } else if (flag == "--save") {
      o.save_dir = value;
    } else if (flag == "--load") {
      o.load_dir = value;
    } else {
      bad("unknown flag '" + flag + "' (see --help)");
    }
  }
  if (o.task == Task::Classify) o.out = o.classes;
  if (o.prune_pattern == PrunePattern::TwoFour && (o.in % 4 != 0 || o.hidden % 4 != 0)) {
    bad("--prune-pattern 2:4 needs --in and --hidden to be multiples of 4");
  }
  if (!o.save_dir.empty() && !o.load_dir.empty()) bad("--save and --load exclude each other");
  if (o.zero != 0 && !o.data_parallel) bad("--zero needs --data-parallel");
  if (o.sparse_execution != Options::SparseExecution::Off && (o.bf16 || o.data_parallel)) {
    bad("--sparse-execution runs FP32 in one process (drop --precision bf16 and --data-parallel)");
  }
  if (o.tensor_parallel > 1) {
    const std::string t = std::to_string(o.tensor_parallel);
    for (const auto& [name, size] : {std::pair<const char*, int64_t>{"--hidden", o.hidden},
                                     {"--student-hidden", o.student_hidden}}) {
      if (size % o.tensor_parallel != 0) {
        bad("--tensor-parallel " + t + " needs " + name + " (" + std::to_string(size) +
            ") to be a multiple of " + t);
      }
    }
    if (o.prune_pattern == PrunePattern::TwoFour && (o.hidden / o.tensor_parallel) % 4 != 0) {
      bad("--prune-pattern 2:4 with --tensor-parallel " + t +
          " needs --hidden / T to be a multiple of 4 (fc2's groups of 4 may not straddle ranks)");
    }
    if (o.sparse_execution != Options::SparseExecution::Off) {
      bad("--sparse-execution runs in one process (drop --tensor-parallel)");
    }
    if (!o.load_dir.empty()) bad("--load evaluates in one process (drop --tensor-parallel)");
  }
  if (o.bf16 && o.data_parallel) {
    bad("--precision bf16 does not combine with --data-parallel (gradients are averaged in FP32)");
  }
  return o;
}

}  // namespace train
