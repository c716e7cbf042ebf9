// nnops-gpt: a transformer language model's life on nnops' public API. Trains the teacher
// with AdamW, prunes it (2:4 by default), fine-tunes it with the masks kept and distills it into
// a smaller student; prints progress lines and a summary, and optionally writes metrics (CSV),
// checkpoints (safetensors), generated text and the replay files of bench/torch_gpt.py.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nnops/nnops.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "cli.hpp"
#include "corpus.hpp"
#include "model.hpp"
#include "options.hpp"
#include "parallel.hpp"
#include "safetensors.hpp"
#include "trainer.hpp"

namespace gpt {
namespace {

using nnops::DType;
using nnops::Tensor;
using Clock = std::chrono::steady_clock;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// This program's peak resident set: VmHWM of /proc/self/status, which belongs to this image
// (getrusage's maxrss keeps a parent's peak across fork and exec, a Python launcher's included).
double peak_resident_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Every logged point goes to stdout and, with --metrics, to a CSV file that tools/plot-training
// reads (rows of kind "step", and the entropy floor as kind "floor").
class Log {
 public:
  Log(const std::string& path, Clock::time_point start) : start_(start) {
    if (path.empty()) return;
    csv_ = std::fopen(path.c_str(), "w");
    if (!csv_) throw std::runtime_error("cannot write metrics file '" + path + "'");
    std::fprintf(csv_,
                 "kind,phase,step,train_loss,heldout_loss,lr,tokens_per_s,mfu,elapsed_s,params,"
                 "nonzero\n");
  }
  ~Log() {
    if (csv_) std::fclose(csv_);
  }
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  void step(const char* phase, int64_t step, int64_t steps, double train_loss, double heldout,
            double lr, double tokens_per_s, double mfu) {
    char train[32] = "-", held[32] = "-";
    if (!std::isnan(train_loss)) std::snprintf(train, sizeof train, "%.4f", train_loss);
    if (!std::isnan(heldout)) std::snprintf(held, sizeof held, "%.4f", heldout);
    std::printf(
        "[%-8s] step %5lld/%-5lld loss %-7s held-out %-7s lr %.2e %8.0f tok/s MFU %5.1f%% %7.1f "
        "s\n",
        phase, (long long)step, (long long)steps, train, held, lr, tokens_per_s, 100.0 * mfu,
        seconds_since(start_));
    std::fflush(stdout);
    row("step", phase, step, train_loss, heldout, lr, tokens_per_s, mfu, -1, -1);
  }
  void row(const char* kind, const std::string& phase, int64_t step, double train_loss,
           double heldout, double lr, double tokens_per_s, double mfu, int64_t params,
           int64_t nonzero) {
    if (!csv_) return;
    std::fprintf(csv_, "%s,%s,%lld,%.9g,%.9g,%.9g,%.9g,%.9g,%.6f,%lld,%lld\n", kind, phase.c_str(),
                 (long long)step, train_loss, heldout, lr, tokens_per_s, mfu, seconds_since(start_),
                 (long long)params, (long long)nonzero);
    std::fflush(csv_);
  }

 private:
  FILE* csv_ = nullptr;
  Clock::time_point start_;
};

struct PhaseResult {
  std::string model;
  double heldout = kNaN;
  int64_t params = 0, nonzero = 0;
  double tokens_per_s = kNaN;
};

// What --dump writes for one phase: the starting weights and masks, the batches, the losses.
struct Dump {
  std::string dir;
  std::vector<int32_t> windows;
  std::vector<float> losses, lrs;
};

class Run {
 public:
  Run(const Options& o, nnops::Device device, const Corpus& corpus, Log& log, double gemm_gflops,
      Parallel& par)
      : o_(o), device_(device), corpus_(corpus), log_(log), gemm_gflops_(gemm_gflops), par_(par) {}

  // Trains `model` for `steps` steps; with a teacher, on alpha * CE + (1 - alpha) * KD against
  // its logits. Returns the tokens per second of the training steps.
  double train(const char* phase, Model& model, int64_t steps, double peak_lr, uint64_t seed,
               const Model* teacher, Dump* dump) {
    // Every rank draws the same batches and takes its share of their sequences.
    const int64_t B = o_.batch / par_.size(), T = model.config().context;
    const size_t share = static_cast<size_t>(B * (T + 1));
    const size_t offset = static_cast<size_t>(par_.rank()) * share;
    Workspace ws(model, B, T);
    std::unique_ptr<Workspace> teacher_ws;
    if (teacher) teacher_ws = std::make_unique<Workspace>(*teacher, B, T);
    for (Parameter& p : model.parameters()) p.adam = nnops::AdamState();  // a fresh optimizer
    Batcher batches(corpus_.train, o_.batch, T, seed);
    std::vector<Tensor*> grads;
    for (Parameter& p : model.parameters()) grads.push_back(&p.grad);
    std::vector<int32_t> mine(share);
    Tensor loss = Tensor::empty({1}, DType::F32, device_);
    Tensor kd = Tensor::empty({1}, DType::F32, device_);
    Tensor kd_grad = Tensor::empty({B * T, model.config().vocab}, DType::F32, device_);
    Tensor window_sum = Tensor::zeros({1}, DType::F32, device_);
    log_.step(phase, 0, steps, kNaN, heldout(model, &ws), 0, 0, 0);
    if (!memory_reported_) {  // the teacher phase's: the largest
      memory_reported_ = true;
      const double mib = 1.0 / (1 << 20);
      std::printf(
          "memory per rank: weights and gradients %.1f MiB, AdamW state %.1f MiB, activations "
          "and scratch %.1f MiB (batch %lld x %lld tokens per rank)\n",
          2.0 * 4 * model.parameter_count() * mib, 2.0 * 4 * model.parameter_count() * mib,
          ws.bytes() * mib, (long long)B, (long long)T);
    }
    double train_seconds = 0;
    auto t0 = Clock::now();
    int64_t window_steps = 0;
    Tensor inputs, targets;
    StepOptions so;
    so.weight_decay = o_.weight_decay;
    so.clip = o_.clip;
    for (int64_t s = 1; s <= steps; ++s) {
      const std::vector<int32_t>& w = batches.next();
      if (dump) dump->windows.insert(dump->windows.end(), w.begin(), w.end());
      std::copy(w.begin() + offset, w.begin() + offset + share, mine.begin());
      to_inputs_and_targets(mine, B, T, device_, inputs, targets);
      const Tensor logits = ws.forward(model, inputs);
      Tensor grad = ws.logits_grad();
      nnops::cross_entropy_loss(logits, targets, loss, &grad);
      if (teacher) {
        const Tensor teacher_logits = teacher_ws->forward(*teacher, inputs);
        nnops::kd_loss(logits, teacher_logits, o_.temperature, kd, &kd_grad);
        nnops::add_scaled(grad, kd_grad, 1.0f - o_.alpha, o_.alpha);
        nnops::add_scaled(loss, kd, 1.0f - o_.alpha, o_.alpha);
      }
      ws.backward(model);
      par_.average(grads);  // the mean over ranks: the gradient of the whole batch
      so.lr = learning_rate(s, steps, o_.warmup, peak_lr, o_.min_lr_ratio);
      optimizer_step(model, so);
      nnops::add_scaled(window_sum, loss, 1.0f);
      ++window_steps;
      if (dump) {
        dump->losses.push_back(loss.item());
        dump->lrs.push_back(static_cast<float>(so.lr));
      }
      if (s % o_.log_every == 0 || s == steps) {
        // Waits for the device, and for the other ranks.
        const double mean = par_.average(window_sum.item() / static_cast<double>(window_steps));
        const double dt = seconds_since(t0);
        train_seconds += dt;
        const double tps = static_cast<double>(window_steps * o_.batch * T) / dt;
        const double mfu = tps * model.train_flops_per_token() * 1e-9 / gemm_gflops_;
        log_.step(phase, s, steps, mean, heldout(model, &ws), so.lr, tps, mfu);
        nnops::fill(window_sum, 0.0f);
        window_steps = 0;
        t0 = Clock::now();  // evaluation is not training time
      }
    }
    return steps > 0 ? static_cast<double>(steps * o_.batch * T) / train_seconds : kNaN;
  }

  // The same windows whatever the workspace's batch: a training phase lends its own (per rank,
  // batch / ranks sequences), so evaluating never holds a second set of activations.
  double heldout(const Model& model, Workspace* lent = nullptr) {
    const int64_t batch = o_.batch / par_.size();
    std::unique_ptr<Workspace> own;
    if (!lent) own = std::make_unique<Workspace>(model, batch, model.config().context);
    return heldout_loss(model, lent ? *lent : *own, corpus_.heldout, batch,
                        o_.eval_batches * par_.size());
  }

  void print_sample(const char* name, const Model& model) {
    if (o_.sample_bytes == 0) return;
    // The prompt: the held-out text's first full sentence start, 24 bytes of it.
    const auto& h = corpus_.heldout;
    size_t start = 0;
    for (size_t i = 0; i + 1 < h.size() && i < 512; ++i) {
      if (h[i] == '.' && (h[i + 1] == ' ' || h[i + 1] == '\n')) {
        start = i + 2;
        break;
      }
    }
    const size_t len = std::min<size_t>(
        {24, h.size() - std::min(start, h.size()), static_cast<size_t>(model.config().context)});
    const std::string prompt(h.begin() + start, h.begin() + start + len);
    const std::string text = sample(model, prompt, o_.sample_bytes, o_.sample_temperature, o_.seed);
    std::printf("--- %s sample (temperature %.2f) ---\n%s", name, o_.sample_temperature,
                printable(prompt).c_str());
    std::printf("%s\n---\n", printable(text).c_str());
  }

 private:
  static std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char c : s)
      out += (c == '\n' || (c >= 32 && c < 127)) ? static_cast<char>(c) : '?';
    return out;
  }
  const Options& o_;
  nnops::Device device_;
  const Corpus& corpus_;
  Log& log_;
  double gemm_gflops_;
  Parallel& par_;
  bool memory_reported_ = false;
};

ckpt::Metadata dump_metadata(const Options& o, const char* phase, int64_t steps, double lr) {
  char buf[64];
  auto num = [&](double v) {
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return std::string(buf);
  };
  return {{"phase", phase},
          {"steps", std::to_string(steps)},
          {"batch", std::to_string(o.batch)},
          {"lr", num(lr)},
          {"warmup", std::to_string(o.warmup)},
          {"min_lr_ratio", num(o.min_lr_ratio)},
          {"weight_decay", num(o.weight_decay)},
          {"clip", num(o.clip)},
          {"beta1", num(StepOptions{}.beta1)},
          {"beta2", num(StepOptions{}.beta2)},
          {"eps", num(StepOptions{}.eps)},
          {"precision", o.bf16 ? "bf16" : "fp32"},
          {"norm_eps", num(o.model.norm_eps)},
          {"rope_theta", num(o.model.rope_theta)}};
}

void write_dump_start(const Options& o, const Model& m, const char* phase, int64_t steps,
                      double lr) {
  SavedState st;
  st.seed = o.seed;
  st.extra = dump_metadata(o, phase, steps, lr);
  save_model(o.dump_dir + "/" + phase + "-start.safetensors", m, st, /*dense=*/true);
}

void write_dump_steps(const Options& o, const Dump& d, const char* phase, int64_t steps) {
  ckpt::TensorMap t;
  t["windows"] = Tensor::from_vector(d.windows, {steps, o.batch, o.model.context + 1});
  t["loss"] = Tensor::from_vector(d.losses, {steps});
  t["lr"] = Tensor::from_vector(d.lrs, {steps});
  ckpt::save_safetensors(o.dump_dir + "/" + phase + "-steps.safetensors", t,
                         dump_metadata(o, phase, steps, 0));
}

void print_summary(const std::vector<PhaseResult>& rows, const Corpus& corpus, Log& log) {
  std::printf("\nsummary (%s; held-out loss in nats per byte)\n", corpus.source.c_str());
  std::printf("  %-10s %10s %10s %8s %12s %12s %10s\n", "model", "held-out", "perplexity", "bits/B",
              "parameters", "non-zero", "tok/s");
  for (const PhaseResult& r : rows) {
    char tps[32] = "-";
    if (!std::isnan(r.tokens_per_s)) std::snprintf(tps, sizeof tps, "%.0f", r.tokens_per_s);
    std::printf("  %-10s %10.4f %10.3f %8.3f %12lld %12lld %10s\n", r.model.c_str(), r.heldout,
                std::exp(r.heldout), r.heldout / std::log(2.0), (long long)r.params,
                (long long)r.nonzero, tps);
    log.row("summary", r.model, -1, kNaN, r.heldout, kNaN, r.tokens_per_s, kNaN, r.params,
            r.nonzero);
  }
  if (corpus.entropy_floor >= 0) {
    std::printf(
        "  %-10s %10.4f %10.3f %8.3f   (the grammar's entropy rate: no model does better)\n",
        "floor", corpus.entropy_floor, std::exp(corpus.entropy_floor),
        corpus.entropy_floor / std::log(2.0));
  }
}

int run(const Options& options) {
  const nnops::Device device = options.device.value_or(nnops::default_device());
  const std::unique_ptr<Parallel> par =
      make_parallel(options.data_parallel, options.tensor_parallel, device);
  Options o = options;
  if (o.batch % par->size() != 0) {
    throw std::invalid_argument("--batch " + std::to_string(o.batch) + " does not split over " +
                                std::to_string(par->size()) + " ranks");
  }
  if (par->world_rank() != 0) {  // rank 0 reports and saves; the others only compute
    o.metrics_path.clear();
    o.save_dir.clear();
    // A split model samples on every rank (each forward is collective).
    if (par->tensor_size() == 1) o.sample_bytes = 0;
    if (!std::freopen("/dev/null", "w", stdout)) throw std::runtime_error("cannot silence rank");
  }
  const auto start = Clock::now();
  Log log(o.metrics_path, start);
  const Corpus corpus = load_corpus(o.data_path, o.seed, o.corpus_bytes, o.model.context);
  std::printf("nnops-gpt on %s: %s, %lld train / %lld held-out bytes", nnops::to_string(device),
              corpus.source.c_str(), (long long)corpus.train.size(),
              (long long)corpus.heldout.size());
  if (corpus.entropy_floor >= 0) {
    std::printf(", entropy floor %.4f nats/byte", corpus.entropy_floor);
    log.row("floor", "grammar", -1, kNaN, corpus.entropy_floor, kNaN, kNaN, kNaN, -1, -1);
  }
  std::printf("\n");
  const double gflops = measured_gemm_gflops(device);
  // Each rank measures its own share of the machine; the job's peak is all ranks' together.
  const int ranks = par->size() * par->tensor_size();
  std::printf("GEMM rate at start-up: %.1f GFLOP/s%s (the reference of MFU)\n", gflops,
              ranks > 1 ? (" per rank, x " + std::to_string(ranks) + " ranks").c_str() : "");
  if (par->size() > 1) {
    std::printf("data parallel over %d ranks, %lld sequences each per step\n", par->size(),
                (long long)(o.batch / par->size()));
  }
  if (par->tensor_size() > 1) {
    std::printf(
        "tensor parallel over %d ranks: %lld of %lld heads, %lld of %lld key/value heads "
        "and %lld of %lld MLP units per rank\n",
        par->tensor_size(), (long long)(o.model.heads / par->tensor_size()),
        (long long)o.model.heads, (long long)(o.model.kv_heads / par->tensor_size()),
        (long long)o.model.kv_heads, (long long)(o.model.hidden() / par->tensor_size()),
        (long long)o.model.hidden());
  }
  Run r(o, device, corpus, log, gflops * ranks, *par);
  std::vector<PhaseResult> rows;

  if (!o.load_dir.empty()) {
    for (const char* name : {"teacher", "student"}) {
      Model m = load_model(o.load_dir + "/" + name + ".safetensors", device);
      if (o.bf16) m.use_bf16();
      rows.push_back({name, r.heldout(m), m.parameter_count(), m.nonzero_parameters(), kNaN});
      r.print_sample(name, m);
    }
    print_summary(rows, corpus, log);
    return 0;
  }
  if (!o.dump_dir.empty()) std::filesystem::create_directories(o.dump_dir);

  const Config& tc = o.model;
  Model teacher(tc, device, o.seed);
  if (o.bf16) teacher.use_bf16();
  par->split(teacher);
  std::printf(
      "teacher: %s, %lld layers, dim %lld, %lld heads (%lld key/value), context %lld, "
      "%.0f MFLOP per training token\n",
      arch_name(tc.arch), (long long)tc.layers, (long long)tc.dim, (long long)tc.heads,
      (long long)tc.kv_heads, (long long)tc.context, teacher.train_flops_per_token() * 1e-6);
  Dump dump;
  if (!o.dump_dir.empty()) write_dump_start(o, teacher, "teacher", o.steps, o.lr);
  double tps = r.train("teacher", teacher, o.steps, o.lr, o.seed + 101, nullptr,
                       o.dump_dir.empty() ? nullptr : &dump);
  if (!o.dump_dir.empty()) write_dump_steps(o, dump, "teacher", o.steps);
  rows.push_back({"teacher", r.heldout(teacher), par->parameters(teacher, false),
                  par->parameters(teacher, true), tps});

  if (par->tensor_size() > 1 && o.prune_pattern == PrunePattern::Unstructured) {
    par->prune_l1(teacher, o.prune_amount);
  } else {  // 2:4 groups lie whole in every shard
    prune(teacher, o.prune_pattern, o.prune_amount);
  }
  if (o.sparse_execution != Options::SparseExecution::Off) {
    choose_sparse_execution(teacher, o.prune_pattern,
                            o.sparse_execution == Options::SparseExecution::Always,
                            (o.batch / par->size()) * tc.context);
  }
  const double pruned = r.heldout(teacher);
  log.step("prune", 0, 0, kNaN, pruned, 0, 0, 0);
  rows.push_back({o.prune_pattern == PrunePattern::TwoFour ? "pruned 2:4" : "pruned L1", pruned,
                  par->parameters(teacher, false), par->parameters(teacher, true), kNaN});

  Dump fdump;
  if (!o.dump_dir.empty())
    write_dump_start(o, teacher, "finetune", o.finetune_steps, o.finetune_lr);
  tps = r.train("finetune", teacher, o.finetune_steps, o.finetune_lr, o.seed + 202, nullptr,
                o.dump_dir.empty() ? nullptr : &fdump);
  if (!o.dump_dir.empty()) write_dump_steps(o, fdump, "finetune", o.finetune_steps);
  rows.push_back({"fine-tuned", r.heldout(teacher), par->parameters(teacher, false),
                  par->parameters(teacher, true), tps});
  const int64_t teacher_steps = o.finetune_steps;

  const Config sc = o.student();
  std::printf("student: %lld layers, dim %lld, %lld heads (%lld key/value)\n", (long long)sc.layers,
              (long long)sc.dim, (long long)sc.heads, (long long)sc.kv_heads);
  Model student(sc, device, o.seed + 7);
  if (o.bf16) student.use_bf16();
  par->split(student);
  tps = r.train("distill", student, o.distill_steps, o.lr, o.seed + 303, &teacher, nullptr);
  rows.push_back({"student", r.heldout(student), par->parameters(student, false),
                  par->parameters(student, true), tps});

  teacher.sync_from_sparse();  // the dense weights again, for the checkpoint
  print_summary(rows, corpus, log);
  r.print_sample("teacher", teacher);
  r.print_sample("student", student);
  if (par->tensor_size() > 1) {
    std::printf("tensor parallel: all-reduces of the split products took %.2f s of %.1f s\n",
                par->tensor_seconds(), seconds_since(start));
  }
  // A split model is gathered whole for its checkpoint (every rank takes part).
  std::unique_ptr<Model> whole_teacher, whole_student;
  if (par->tensor_size() > 1 && !options.save_dir.empty()) {
    whole_teacher = par->gather(teacher);
    whole_student = par->gather(student);
  }
  if (!o.save_dir.empty()) {
    std::filesystem::create_directories(o.save_dir);
    SavedState st;
    st.seed = o.seed;
    st.step = teacher_steps;
    st.extra["phase"] = "finetune";
    save_model(o.save_dir + "/teacher.safetensors", whole_teacher ? *whole_teacher : teacher, st);
    st.step = o.distill_steps;
    st.extra["phase"] = "distill";
    save_model(o.save_dir + "/student.safetensors", whole_student ? *whole_student : student, st);
    std::printf("saved teacher.safetensors and student.safetensors to %s\n", o.save_dir.c_str());
  }
  std::printf("total %.1f s, peak resident memory %.1f MiB\n", seconds_since(start),
              peak_resident_mib());
  return 0;
}

}  // namespace
}  // namespace gpt

int main(int argc, char** argv) {
  return cli::run_program("nnops-gpt", argc, argv, [](int n, char** args) {
    const auto options = gpt::parse_options(n, args);
    return options ? gpt::run(*options) : 0;
  });
}
