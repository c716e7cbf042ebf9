// nnops-train: the reference workload on nnops' public API. Trains the teacher MLP with Adam,
// prunes it by L1 magnitude (or 2:4), fine-tunes it with the masks kept, and distills it into
// a smaller student; prints a line per epoch and a summary, optionally writing metrics (CSV)
// and checkpoints.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <nnops/cuda.hpp>
#include <nnops/nnops.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "cli.hpp"
#include "data.hpp"
#include "model.hpp"
#include "options.hpp"
#include "parallel.hpp"
#include "pruned_weights.hpp"
#include "safetensors.hpp"
#include "timing.hpp"

namespace train {
namespace {

using nnops::DType;
using nnops::Tensor;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Evaluation {
  double loss = std::numeric_limits<double>::quiet_NaN();
  double accuracy = std::numeric_limits<double>::quiet_NaN();  // classification only
};

// Every logged point goes to stdout and, with --metrics, to a CSV file.
class Log {
 public:
  Log(const std::string& path, Clock::time_point start) : start_(start) {
    if (path.empty()) return;
    csv_ = std::fopen(path.c_str(), "w");
    if (!csv_) throw std::runtime_error("cannot write metrics file '" + path + "'");
    std::fprintf(csv_,
                 "kind,phase,epoch,train_loss,heldout_loss,heldout_accuracy,samples_per_s,gflops,"
                 "elapsed_s,params,nonzero\n");
  }
  ~Log() {
    if (csv_) std::fclose(csv_);
  }
  void epoch(const char* phase, int64_t epoch, int64_t epochs, double train_loss,
             const Evaluation& e, double samples_per_s, double gflops) {
    const double elapsed = seconds_since(start_);
    char train_text[32] = "-";
    if (!std::isnan(train_loss)) std::snprintf(train_text, sizeof train_text, "%.6g", train_loss);
    std::printf("[%-8s] epoch %3lld/%-3lld train %-11s held-out %-11.6g", phase, (long long)epoch,
                (long long)epochs, train_text, e.loss);
    if (!std::isnan(e.accuracy)) std::printf(" acc %6.2f%%", 100.0 * e.accuracy);
    std::printf(" %9.0f samples/s %7.2f GFLOP/s %7.1f s\n", samples_per_s, gflops, elapsed);
    std::fflush(stdout);
    row("epoch", phase, epoch, train_loss, e, samples_per_s, gflops, -1, -1);
  }
  void row(const char* kind, const std::string& phase, int64_t epoch, double train_loss,
           const Evaluation& e, double samples_per_s, double gflops, int64_t params,
           int64_t nonzero) {
    if (!csv_) return;
    std::fprintf(csv_, "%s,%s,%lld,%.9g,%.9g,%.9g,%.9g,%.9g,%.6f,%lld,%lld\n", kind, phase.c_str(),
                 (long long)epoch, train_loss, e.loss, e.accuracy, samples_per_s, gflops,
                 seconds_since(start_), (long long)params, (long long)nonzero);
    std::fflush(csv_);
  }

 private:
  FILE* csv_ = nullptr;
  Clock::time_point start_;
};

class Trainer {
 public:
  Trainer(const Options& o, nnops::Device device, Log& log, Parallel& parallel)
      : o_(o), device_(device), log_(log), par_(parallel) {}

  // Losses and predictions stay on the device until the split is done: one wait per evaluation.
  Evaluation evaluate(const Mlp& m, Workspace& ws, const Split& s) const {
    Tensor loss = Tensor::empty({1}, DType::F32, device_);
    Tensor total = Tensor::zeros({1}, DType::F32, device_);
    Tensor predictions = Tensor::empty({s.rows()}, DType::I32, device_);
    for (int64_t start = 0; start < s.rows(); start += o_.batch) {
      const int64_t count = std::min(o_.batch, s.rows() - start);
      const Tensor x = s.x.narrow(start, count);
      const Tensor y = ws.forward(m, x);
      if (o_.task == Task::Regress) {
        nnops::mse_loss(y, s.y.narrow(start, count), loss, nullptr, nnops::Reduction::Sum);
      } else {
        nnops::cross_entropy_loss(y, s.y.narrow(start, count), loss, nullptr,
                                  nnops::Reduction::Sum);
        Tensor predicted = predictions.narrow(start, count);
        nnops::argmax(y, predicted);
      }
      nnops::add_scaled(total, loss, 1.0f);
    }
    Evaluation e;
    e.loss =
        total.item() / static_cast<double>(o_.task == Task::Regress ? s.rows() * m.out : s.rows());
    if (o_.task == Task::Classify) {
      const auto classes = predictions.to_vector<int32_t>();
      const auto labels = s.y.to_vector<int32_t>();
      int64_t correct = 0;
      for (size_t r = 0; r < classes.size(); ++r) correct += classes[r] == labels[r];
      e.accuracy = static_cast<double>(correct) / s.rows();
    }
    return e;
  }

  // Writes the loss gradient for rows [start, start+count) into grad and adds the batch loss to
  // the epoch's sum on the device (read once per epoch: no wait per step).
  using LossFn = std::function<void(const Tensor& y, int64_t start, int64_t count, Tensor& grad,
                                    Tensor& epoch_sum)>;

  // Trains for `epochs` epochs (mini-batches in a seeded random order); logs each epoch and
  // returns the seconds spent.
  double run_phase(const char* phase, Mlp& m, const Split& train, const Split& heldout,
                   int64_t epochs, const LossFn& loss_fn, uint64_t order_seed) {
    Workspace ws(m, o_.batch);
    log_.epoch(phase, 0, epochs, std::numeric_limits<double>::quiet_NaN(), evaluate(m, ws, heldout),
               0, 0);
    const int64_t batches = train.rows() / o_.batch;  // the last partial batch is dropped
    if (batches == 0) throw std::runtime_error("--batch is larger than --train-samples");
    // Data parallel: this rank's rows of every batch (the same batches in the same order on
    // every rank, from the same seed).
    const int64_t shard = o_.batch / par_.size(), offset = par_.rank() * shard;
    std::shared_ptr<Parallel::ShardState> shard_state;
    std::vector<int64_t> order(batches);
    std::mt19937_64 rng(order_seed);
    nnops::AdamOptions adam;
    adam.lr = o_.lr;
    double train_seconds = 0.0;
    for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
      for (int64_t b = 0; b < batches; ++b) order[b] = b;
      std::shuffle(order.begin(), order.end(), rng);
      const auto e0 = Clock::now();
      Tensor epoch_sum = Tensor::zeros({1}, DType::F32, device_);
      for (int64_t b : order) {
        const int64_t start = b * o_.batch + offset;
        const Tensor x = train.x.narrow(start, shard);
        const Tensor y = ws.forward(m, x);
        Tensor grad = ws.output_grad();
        loss_fn(y, start, shard, grad, epoch_sum);
        if (par_.size() == 1) {
          ws.backward(m, x);
        } else {
          ws.backward(m, x, [this](const std::vector<Tensor*>& g) { par_.gradients_ready(g); });
          par_.finish_gradients();
        }
        if (par_.sharded_optimizer()) {
          par_.sharded_adam_step(m, ws, adam, shard_state);
        } else {
          ws.adam_step(m, adam);
        }
      }
      const double sum = par_.average(epoch_sum.item());  // waits for the epoch's work
      const double dt = seconds_since(e0);
      train_seconds += dt;
      const double samples = static_cast<double>(batches * o_.batch);
      log_.epoch(phase, epoch, epochs, sum / batches, evaluate(m, ws, heldout), samples / dt,
                 samples * m.flops_per_sample_train() / dt * 1e-9);
    }
    return train_seconds;
  }

  LossFn supervised_loss(const Split& train) {
    return [this, &train](const Tensor& y, int64_t start, int64_t count, Tensor& grad,
                          Tensor& epoch_sum) {
      if (o_.task == Task::Regress) {
        nnops::mse_loss(y, train.y.narrow(start, count), loss_, &grad);
      } else {
        nnops::cross_entropy_loss(y, train.y.narrow(start, count), loss_, &grad);
      }
      nnops::add_scaled(epoch_sum, loss_, 1.0f);
    };
  }

  // Student loss against the teacher's outputs: MSE on them (regression), or
  // alpha * kd_loss(T) + (1 - alpha) * cross-entropy on the labels (classification).
  LossFn distill_loss(const Split& train, const Tensor& teacher_out) {
    kd_grad_ = Tensor::empty({o_.batch, o_.out}, DType::F32, device_);
    kd_value_ = Tensor::empty({1}, DType::F32, device_);
    return [this, &train, &teacher_out](const Tensor& y, int64_t start, int64_t count, Tensor& grad,
                                        Tensor& epoch_sum) {
      const Tensor t = teacher_out.narrow(start, count);
      if (o_.task == Task::Regress) {
        nnops::mse_loss(y, t, loss_, &grad);
        nnops::add_scaled(epoch_sum, loss_, 1.0f);
        return;
      }
      nnops::cross_entropy_loss(y, train.y.narrow(start, count), loss_, &grad);
      Tensor kd_grad = kd_grad_.narrow(0, count);  // a data-parallel shard may be smaller
      nnops::kd_loss(y, t, o_.temperature, kd_value_, &kd_grad);
      nnops::add_scaled(grad, kd_grad, o_.alpha, 1.0f - o_.alpha);
      nnops::add_scaled(epoch_sum, kd_value_, o_.alpha);
      nnops::add_scaled(epoch_sum, loss_, 1.0f - o_.alpha);
    };
  }

  // The model's outputs on a whole split (teacher targets for distillation).
  Tensor outputs(const Mlp& m, const Split& s) const {
    Tensor out = Tensor::empty({s.rows(), m.out}, DType::F32, device_);
    Workspace ws(m, o_.batch);
    for (int64_t start = 0; start < s.rows(); start += o_.batch) {
      const int64_t count = std::min(o_.batch, s.rows() - start);
      Tensor y = ws.forward(m, s.x.narrow(start, count));
      Tensor dst = out.narrow(start, count);
      nnops::copy(dst, y);
    }
    return out;
  }

 private:
  const Options& o_;
  nnops::Device device_;
  Log& log_;
  Parallel& par_;
  Tensor loss_ = Tensor::empty({1}, DType::F32, device_);
  Tensor kd_grad_, kd_value_;
};

// A fresh model in the run's precision; with tensor parallelism this rank's shard of it (the
// whole model is drawn from the seed on every rank, so the shards are one process's weights).
Mlp create_model(const Options& o, int64_t hidden, nnops::Device device, uint64_t seed,
                 Parallel& par) {
  Mlp m = Mlp::create(o.in, hidden, o.out, o.activation, device, seed);
  if (o.bf16) m.use_bf16();
  return par.split(std::move(m));
}

// Parameters and kept weights of the whole model, from any shard of it (b2 is on every shard).
int64_t whole_parameters(const Mlp& m, Parallel& par) {
  if (!m.split()) return m.parameter_count();
  return par.tensor_sum(m.parameter_count() - m.b2.numel()) + m.b2.numel();
}
int64_t whole_nonzero(const Mlp& m, Parallel& par) {
  if (!m.split()) return m.nonzero_weights();
  return par.tensor_sum(m.nonzero_weights() - m.b2.numel()) + m.b2.numel();
}

// 2:4 groups lie whole in every shard (fc2's columns split at multiples of 4), so a split model
// prunes them in place; magnitude pruning ranks the whole weights across the shards.
void prune(Mlp& m, const Options& o, Parallel& par) {
  if (m.split() && o.prune_pattern != PrunePattern::TwoFour) {
    par.prune_split(m, o.prune_scope == PruneScope::Global, o.prune_amount);
  } else if (o.prune_pattern == PrunePattern::TwoFour) {
    nnops::nm_structured(m.w1, 2, 4, m.m1);
    nnops::nm_structured(m.w2, 2, 4, m.m2);
  } else if (o.prune_scope == PruneScope::Global) {
    nnops::global_unstructured({&m.w1, &m.w2}, nnops::PruneAmount::fraction(o.prune_amount),
                               {&m.m1, &m.m2});
  } else {
    nnops::l1_unstructured(m.w1, nnops::PruneAmount::fraction(o.prune_amount), m.m1);
    nnops::l1_unstructured(m.w2, nnops::PruneAmount::fraction(o.prune_amount), m.m2);
  }
  nnops::apply_mask(m.w1, m.m1);
  nnops::apply_mask(m.w2, m.m2);
  m.sync_working();
}

TensorMap to_checkpoint(const Mlp& m, const Options& o, ckpt::Metadata& meta_out);

// --sparse-execution: each pruned layer's training step (forward, backward with dx, weight
// gradient) timed at the batch size dense and on its compressed form (NM24 for a 2:4 mask,
// else CSR); the compressed form stays where it is faster. Then the whole model's forward at
// batch 64 and 1, dense against as chosen, and the checkpoint bytes.
void choose_sparse_execution(Mlp& m, const Options& o, nnops::Device device) {
  std::printf("sparse execution (forward + backward per layer at batch %lld):\n",
              (long long)o.batch);
  struct Layer {
    const char* name;
    const Tensor& w;
    const Tensor& mask;
    const Tensor& b;
    std::shared_ptr<nnops::SparseMatrix>& sparse;
  };
  for (Layer l : {Layer{"fc1", m.w1, m.m1, m.b1, m.s1}, Layer{"fc2", m.w2, m.m2, m.b2, m.s2}}) {
    const bool two_four = o.prune_pattern == PrunePattern::TwoFour;
    auto s = std::make_shared<nnops::SparseMatrix>(nnops::compress(
        l.w, l.mask, two_four ? nnops::SparseFormat::NM24 : nnops::SparseFormat::CSR));
    const int64_t out = l.w.dim(0), in = l.w.dim(1), n = o.batch;
    Tensor x = Tensor::empty({n, in}, DType::F32, device),
           dy = Tensor::empty({n, out}, DType::F32, device);
    nnops::fill_uniform(x, -1, 1, 1);
    nnops::fill_uniform(dy, -1, 1, 2);
    Tensor y = Tensor::empty({n, out}, DType::F32, device),
           dx = Tensor::empty({n, in}, DType::F32, device);
    Tensor dw = Tensor::empty({out, in}, DType::F32, device),
           db = Tensor::empty({out}, DType::F32, device);
    Tensor dv = Tensor::empty(s->values().shape(), DType::F32, device);
    const double dense = cli::best_ms(device, [&] {
      nnops::linear_forward(x, l.w, &l.b, y);
      nnops::linear_backward(x, l.w, dy, &dx, dw, &db);
    });
    const double sparse = cli::best_ms(device, [&] {
      nnops::sparse_linear_forward(x, *s, &l.b, y);
      nnops::sparse_linear_backward(x, *s, dy, &dx, &dv, &db);
    });
    const bool use = o.sparse_execution == Options::SparseExecution::Always || sparse < dense;
    std::printf("  %s: %s, %.1f%% pruned: %.2f ms compressed, %.2f ms dense -> %s\n", l.name,
                two_four ? "NM24" : "CSR", 100.0 * nnops::sparsity(l.mask), sparse, dense,
                use ? "compressed" : "dense");
    if (use) l.sparse = std::move(s);
  }
  // Inference of the whole model, dense against as chosen.
  std::shared_ptr<nnops::SparseMatrix> s1 = m.s1, s2 = m.s2;
  for (int64_t n : {int64_t(64), int64_t(1)}) {
    Tensor x = Tensor::empty({n, m.in}, DType::F32, device);
    nnops::fill_uniform(x, -1, 1, 3);
    Workspace ws(m, n);
    m.s1.reset(), m.s2.reset();
    const double dense = cli::best_ms(device, [&] { ws.forward(m, x); });
    m.s1 = s1, m.s2 = s2;
    const double chosen = cli::best_ms(device, [&] { ws.forward(m, x); });
    std::printf("  inference at batch %lld: %.3f ms as chosen, %.3f ms dense (%.2fx)\n",
                (long long)n, chosen, dense, dense / chosen);
  }
  ckpt::Metadata meta;
  const TensorMap compressed = to_checkpoint(m, o, meta);
  size_t bytes = 0;
  for (const auto& [name, t] : compressed) bytes += t.nbytes();
  const size_t dense_bytes = 4 * static_cast<size_t>(m.parameter_count());
  std::printf("  checkpoint tensors: %.2f MB compressed, %.2f MB dense FP32 (%.2fx)\n",
              bytes * 1e-6, dense_bytes * 1e-6, static_cast<double>(bytes) / dense_bytes);
}

// The weights of a pruned layer are stored compressed (examples/common/pruned_weights.hpp),
// with their form in `meta`; the file shrinks with the density.
TensorMap to_checkpoint(const Mlp& m, const Options& o, ckpt::Metadata& meta_out) {
  TensorMap t;
  ckpt::put_pruned(t, meta_out, "w1", m.w1, &m.m1);
  t.emplace("b1", m.b1.clone());
  ckpt::put_pruned(t, meta_out, "w2", m.w2, &m.m2);
  t.emplace("b2", m.b2.clone());
  // What evaluation needs to rebuild the same held-out data.
  const std::vector<int32_t> meta = {activation_code(m.activation),
                                     o.task == Task::Classify ? 1 : 0,
                                     static_cast<int32_t>(o.seed),
                                     static_cast<int32_t>(o.train_samples),
                                     static_cast<int32_t>(o.heldout_samples),
                                     static_cast<int32_t>(o.batch)};
  t.emplace("meta", Tensor::from_vector(meta, {6}));
  // The 64-bit seed as two 32-bit words (low, high); meta[2] keeps the low word.
  const std::vector<int32_t> seed_words = {static_cast<int32_t>(o.seed & 0xFFFFFFFFu),
                                           static_cast<int32_t>(o.seed >> 32)};
  t.emplace("seed", Tensor::from_vector(seed_words, {2}));
  t.emplace("noise", Tensor::from_vector(std::vector<float>{o.noise}, {1}));
  return t;
}

Mlp from_checkpoint(TensorMap& t, const ckpt::Metadata& metadata, const std::string& path,
                    nnops::Device device) {
  for (const char* key : {"b1", "b2", "meta", "noise"}) {
    if (!t.count(key)) throw std::runtime_error(path + ": missing entry '" + key + "'");
  }
  // Dense or compressed; before compression the masks were the dense entries m1 and m2.
  for (const auto& [weight, mask] :
       {std::pair<const char*, const char*>{"w1", "m1"}, {"w2", "m2"}}) {
    ckpt::PrunedWeight p = ckpt::take_pruned(t, metadata, weight, mask, path);
    t[weight] = std::move(p.w);
    t[mask] = std::move(p.mask);
  }
  Mlp m;
  const Tensor& w1 = t["w1"];
  const Tensor& w2 = t["w2"];
  if (w1.ndim() != 2 || w2.ndim() != 2 || w2.dim(1) != w1.dim(0) ||
      t["b1"].shape() != nnops::Shape{w1.dim(0)} || t["b2"].shape() != nnops::Shape{w2.dim(0)} ||
      t["m1"].shape() != w1.shape() || t["m2"].shape() != w2.shape() ||
      t["meta"].shape() != nnops::Shape{6} || t["meta"].dtype() != DType::I32) {
    throw std::runtime_error(path + ": the tensors do not form a two-layer MLP");
  }
  m.in = w1.dim(1), m.hidden = m.hidden_total = w1.dim(0), m.out = w2.dim(0), m.device = device;
  m.activation = activation_from_code(t["meta"].to_vector<int32_t>()[0]);
  m.w1 = t["w1"].to(device), m.b1 = t["b1"].to(device), m.w2 = t["w2"].to(device),
  m.b2 = t["b2"].to(device);
  m.m1 = t["m1"].to(device), m.m2 = t["m2"].to(device);
  return m;
}

struct SummaryRow {
  std::string model;
  int64_t params, nonzero;
  Evaluation eval;
  double seconds;
};

void print_summary(const std::vector<SummaryRow>& rows, const Options& o, nnops::Device device,
                   Log& log, const Mlp* pruned) {
  const bool classify = o.task == Task::Classify;
  std::printf("\n%-12s %12s %12s %14s %10s %10s\n", "model", "params", "non-zero",
              classify ? "held-out CE" : "held-out MSE", classify ? "accuracy" : "", "time (s)");
  for (const SummaryRow& r : rows) {
    std::printf("%-12s %12lld %12lld %14.6g", r.model.c_str(), (long long)r.params,
                (long long)r.nonzero, r.eval.loss);
    if (classify)
      std::printf(" %9.2f%%", 100.0 * r.eval.accuracy);
    else
      std::printf(" %10s", "");
    std::printf(" %10.2f\n", r.seconds);
    log.row("summary", r.model, -1, std::numeric_limits<double>::quiet_NaN(), r.eval, 0, 0,
            r.params, r.nonzero);
  }
  if (pruned) {
    const double s1 = nnops::sparsity(pruned->m1), s2 = nnops::sparsity(pruned->m2);
    std::printf("sparsity: fc1 %.4f, fc2 %.4f (%s, %s)\n", s1, s2,
                o.prune_pattern == PrunePattern::TwoFour ? "2:4" : "L1 unstructured",
                o.prune_scope == PruneScope::Global ? "global" : "per layer");
    Evaluation none;
    log.row("sparsity", "fc1", -1, s1, none, 0, 0, pruned->m1.numel(),
            static_cast<int64_t>(std::llround((1 - s1) * pruned->m1.numel())));
    log.row("sparsity", "fc2", -1, s2, none, 0, 0, pruned->m2.numel(),
            static_cast<int64_t>(std::llround((1 - s2) * pruned->m2.numel())));
  }
  std::printf("device: %s, precision: %s\n", nnops::to_string(device),
              o.bf16 ? "bf16 mixed (FP32 master weights)" : "fp32");
}

int run_on(const Options& options, nnops::Device device, Parallel& par);

int run(const Options& options) {
  // Data parallel on GPUs: each rank picks its GPU (in make_parallel) before the first probe, so
  // no rank makes a context on a GPU it will not use. Without --device or NNOPS_DEVICE, a GPU is
  // tried when one is visible, and the CPU taken when it is not usable.
  const char* env = std::getenv("NNOPS_DEVICE");
  const bool chosen = options.device || (env != nullptr && *env != '\0');
  nnops::Device device = options.device                    ? *options.device
                         : chosen                          ? nnops::default_device()
                         : nnops::cuda::device_count() > 0 ? nnops::Device::CUDA
                                                           : nnops::Device::CPU;
  const std::unique_ptr<Parallel> parallel =
      make_parallel(options.data_parallel, options.tensor_parallel, options.zero, device);
  if (device == nnops::Device::CUDA && !nnops::cuda_available()) {
    if (chosen) {
      throw std::runtime_error("--device cuda but no usable CUDA device (" +
                               nnops::cuda::unusable_reason() + ")");
    }
    device = nnops::Device::CPU;
    parallel->use_device(device);
  }
  return run_on(options, device, *parallel);
}

int run_on(const Options& options, const nnops::Device device, Parallel& par) {
  Options o = options;
  if (o.batch % par.size() != 0) {
    throw std::invalid_argument("--batch " + std::to_string(o.batch) +
                                " is not a multiple of the " + std::to_string(par.size()) +
                                " data-parallel ranks");
  }
  if (par.world_rank() != 0) {  // rank 0 logs and saves; the others only compute
    o.metrics_path.clear();
    o.save_dir.clear();
    if (!std::freopen("/dev/null", "w", stdout)) throw std::runtime_error("cannot mute rank");
  }
  Log log(o.metrics_path, Clock::now());

  if (!o.load_dir.empty()) {
    std::vector<SummaryRow> rows;
    for (const char* name : {"teacher", "student"}) {
      // safetensors; a folder saved before nnops-train wrote safetensors is read once from its
      // .nnops files.
      std::string path = o.load_dir + "/" + name + ".safetensors";
      TensorMap t;
      ckpt::Metadata metadata;
      if (std::filesystem::exists(path) ||
          !std::filesystem::exists(o.load_dir + "/" + name + ".nnops")) {
        ckpt::Safetensors file = ckpt::load_safetensors(path, /*require_checksum=*/true);
        t = std::move(file.tensors);
        metadata = std::move(file.metadata);
      } else {
        path = o.load_dir + "/" + name + ".nnops";
        t = load_checkpoint(path);
        std::printf("read %s (the format before safetensors)\n", path.c_str());
      }
      Mlp m = from_checkpoint(t, metadata, path, device);
      if (o.bf16) m.use_bf16();
      const auto meta = t["meta"].to_vector<int32_t>();
      Options data_opts = o;
      data_opts.task = meta[1] ? Task::Classify : Task::Regress;
      data_opts.seed = static_cast<uint32_t>(meta[2]);
      if (t.count("seed")) {
        const auto words = t["seed"].to_vector<int32_t>();
        if (words.size() != 2) throw std::runtime_error(path + ": bad seed");
        data_opts.seed = static_cast<uint64_t>(static_cast<uint32_t>(words[0])) |
                         static_cast<uint64_t>(static_cast<uint32_t>(words[1])) << 32;
      }
      data_opts.train_samples = meta[3], data_opts.heldout_samples = meta[4],
      data_opts.batch = meta[5];
      data_opts.noise = t["noise"].item();
      data_opts.out = m.out;
      if (meta[3] <= 0 || meta[4] <= 0 || meta[5] <= 0)
        throw std::runtime_error(path + ": bad metadata");
      const Dataset data =
          make_dataset({data_opts.task, m.in, m.out, data_opts.train_samples,
                        data_opts.heldout_samples, data_opts.noise, data_opts.seed},
                       device);
      Trainer trainer(data_opts, device, log, par);
      Workspace ws(m, data_opts.batch);
      const auto t0 = Clock::now();
      const Evaluation e = trainer.evaluate(m, ws, data.heldout);
      rows.push_back({name, m.parameter_count(), m.nonzero_weights(), e, seconds_since(t0)});
    }
    print_summary(rows, o, device, log, nullptr);
    return 0;
  }

  std::printf(
      "nnops %s: %s task, teacher %lld -> %lld -> %lld (%s), student hidden %lld, %lld train / "
      "%lld held-out samples, batch %lld, device %s, %s\n",
      NNOPS_VERSION_STRING, o.task == Task::Classify ? "classification" : "regression",
      (long long)o.in, (long long)o.hidden, (long long)o.out, activation_name(o.activation),
      (long long)o.student_hidden, (long long)o.train_samples, (long long)o.heldout_samples,
      (long long)o.batch, nnops::to_string(device), o.bf16 ? "bf16 mixed precision" : "fp32");
  const Dataset data = make_dataset(
      {o.task, o.in, o.out, o.train_samples, o.heldout_samples, o.noise, o.seed}, device);
  Trainer trainer(o, device, log, par);
  std::vector<SummaryRow> rows;
  if (par.size() > 1) {
    std::printf("data parallel: %d ranks, %lld rows of each batch per rank%s\n", par.size(),
                (long long)(o.batch / par.size()),
                par.sharded_optimizer() ? ", Adam state sharded (--zero 1)" : "");
  }
  if (par.tensor_size() > 1) {
    std::printf(
        "tensor parallel: %d ranks, %lld of the %lld hidden units (and %lld of the "
        "student's) per rank\n",
        par.tensor_size(), (long long)(o.hidden / par.tensor_size()), (long long)o.hidden,
        (long long)(o.student_hidden / par.tensor_size()));
  }

  // 1. Teacher (rank 0's initial weights on every rank).
  Mlp teacher = create_model(o, o.hidden, device, o.seed * 10 + 1, par);
  par.broadcast({&teacher.w1, &teacher.b1, &teacher.w2, &teacher.b2});
  double t = trainer.run_phase("teacher", teacher, data.train, data.heldout, o.epochs,
                               trainer.supervised_loss(data.train), o.seed * 10 + 2);
  Workspace ws(teacher, o.batch);
  rows.push_back({"teacher", whole_parameters(teacher, par), whole_nonzero(teacher, par),
                  trainer.evaluate(teacher, ws, data.heldout), t});

  // 2. Prune.
  auto t0 = Clock::now();
  prune(teacher, o, par);
  if (par.size() > 1) {
    // Every rank pruned its own, identical weights: the masks must agree bit for bit.
    const bool same = par.identical_on_all_ranks({&teacher.m1, &teacher.m2});
    std::printf("masks identical on all %d ranks: %s\n", par.size(), same ? "yes" : "NO");
    if (!same) throw std::runtime_error("the ranks' pruning masks differ");
  }
  if (o.sparse_execution != Options::SparseExecution::Off)
    choose_sparse_execution(teacher, o, device);
  const Evaluation pruned_eval = trainer.evaluate(teacher, ws, data.heldout);
  log.epoch("prune", 0, 0, std::numeric_limits<double>::quiet_NaN(), pruned_eval, 0, 0);
  rows.push_back({"pruned", whole_parameters(teacher, par), whole_nonzero(teacher, par),
                  pruned_eval, seconds_since(t0)});

  // 3. Fine-tune with the masks kept (masked Adam, fresh optimizer state).
  t = trainer.run_phase("finetune", teacher, data.train, data.heldout, o.finetune_epochs,
                        trainer.supervised_loss(data.train), o.seed * 10 + 3);
  rows.push_back({"fine-tuned", whole_parameters(teacher, par), whole_nonzero(teacher, par),
                  trainer.evaluate(teacher, ws, data.heldout), t});

  // 4. Distill into the student.
  t0 = Clock::now();
  const Tensor teacher_out = trainer.outputs(teacher, data.train);
  const double teacher_out_seconds = seconds_since(t0);
  teacher.sync_from_sparse();  // the dense weights again, for the summary and the checkpoint
  Mlp student = create_model(o, o.student_hidden, device, o.seed * 10 + 4, par);
  par.broadcast({&student.w1, &student.b1, &student.w2, &student.b2});
  t = trainer.run_phase("distill", student, data.train, data.heldout, o.distill_epochs,
                        trainer.distill_loss(data.train, teacher_out), o.seed * 10 + 5);
  Workspace ws_student(student, o.batch);
  rows.push_back({"student", whole_parameters(student, par), whole_nonzero(student, par),
                  trainer.evaluate(student, ws_student, data.heldout), t + teacher_out_seconds});
  if (o.task == Task::Classify) {
    // The same student trained from the same initialisation on the labels alone.
    Mlp scratch = create_model(o, o.student_hidden, device, o.seed * 10 + 4, par);
    par.broadcast({&scratch.w1, &scratch.b1, &scratch.w2, &scratch.b2});
    t = trainer.run_phase("scratch", scratch, data.train, data.heldout, o.distill_epochs,
                          trainer.supervised_loss(data.train), o.seed * 10 + 5);
    rows.push_back({"scratch", whole_parameters(scratch, par), whole_nonzero(scratch, par),
                    trainer.evaluate(scratch, ws_student, data.heldout), t});
  }
  // The whole models, for the summary and the checkpoints (every rank takes part).
  Mlp gathered_teacher, gathered_student;
  if (teacher.split())
    gathered_teacher = par.gather(teacher), gathered_student = par.gather(student);
  const Mlp& whole_teacher = teacher.split() ? gathered_teacher : teacher;
  const Mlp& whole_student = student.split() ? gathered_student : student;
  print_summary(rows, o, device, log, &whole_teacher);
  double train_seconds = 0.0;
  for (const SummaryRow& r : rows) train_seconds += r.seconds;
  if (par.tensor_size() > 1) {
    // Adam keeps two FP32 moments per trained value; --zero 1 shards them over the data ranks.
    const int64_t local = teacher.parameter_count();
    const double adam_bytes = 8.0 * local / (par.sharded_optimizer() ? par.size() : 1);
    std::printf(
        "tensor parallel: %d ranks; per rank: teacher %lld of %lld parameters, Adam state "
        "%.2f MB (one process: %.2f MB)\n",
        par.tensor_size(), (long long)local, (long long)whole_teacher.parameter_count(),
        adam_bytes * 1e-6, 8e-6 * whole_teacher.parameter_count());
  }
  if (par.size() > 1 || par.tensor_size() > 1) {
    std::printf(
        "%d ranks (%d tensor x %d data parallel); waiting on communication %.2f s of "
        "%.2f s\n",
        par.tensor_size() * par.size(), par.tensor_size(), par.size(), par.communication_seconds(),
        train_seconds);
  }

  if (!o.save_dir.empty()) {
    std::filesystem::create_directories(o.save_dir);
    for (const auto& [name, model] : {std::pair<const char*, const Mlp*>{"teacher", &whole_teacher},
                                      {"student", &whole_student}}) {
      ckpt::Metadata meta = {{"writer", "nnops-train"}, {"precision", o.bf16 ? "bf16" : "fp32"}};
      TensorMap tensors = to_checkpoint(*model, o, meta);
      ckpt::save_safetensors(o.save_dir + "/" + name + ".safetensors", tensors, meta);
    }
    std::printf("saved teacher.safetensors and student.safetensors to %s\n", o.save_dir.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace train

int main(int argc, char** argv) {
  return cli::run_program("nnops-train", argc, argv, [](int n, char** args) {
    const auto options = train::parse_options(n, args);
    return options ? train::run(*options) : 0;
  });
}
