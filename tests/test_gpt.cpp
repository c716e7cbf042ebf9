// nnops-gpt: the grammar's exact entropy against sampling, every parameter's gradient against
// finite differences (both architectures), a --quick run through every phase on every device,
// checkpoints that round-trip bit for bit, --data files, bad flags, and (when a pip PyTorch is
// importable) bench/torch_gpt.py's step-for-step comparison.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "checkpoint.hpp"
#include "corpus.hpp"
#include "model.hpp"
#include "safetensors.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

namespace nnops::test {
namespace {

namespace fs = std::filesystem;

struct ProgramRun {
  int exit_code;
  std::string output;
};

std::string test_name() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "_" + info->name();
  for (char& c : name)
    if (c == '/') c = '_';
  return name;
}

std::string scratch(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("nnops_gpt_" + test_name() + "_" + name);
  fs::remove_all(p);
  return p.string();
}

ProgramRun run_command(const std::string& cmd) {
  const std::string log = scratch("output.txt");
  const int status = std::system((cmd + " > " + log + " 2>&1").c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

ProgramRun run_gpt(const std::string& args) {
  const char* env = std::getenv("NNOPS_GPT");  // the GPU pack runs the tests from elsewhere
  return run_command(std::string(env ? env : NNOPS_GPT_PATH) + " " + args);
}

// The held-out loss of a summary row ("  teacher   1.2345 ...").
double summary_loss(const std::string& output, const std::string& model) {
  const std::regex row("\\n  " + model + " +([0-9.]+) ");
  std::smatch m;
  if (!std::regex_search(output, m, row)) return NAN;
  return std::stod(m[1]);
}

TEST(GptCorpus, GrammarEntropyMatchesSampledSentences) {
  // Per sentence: -log p has a standard deviation of a few nats and the length about ten bytes;
  // over 40000 sentences the means sit within 0.05 nats and 0.15 bytes of the exact figures
  // (about 5 standard errors).
  const int64_t sentences = 40000;
  int64_t bytes = 0;
  const double logp = gpt::Grammar::sample_log_probability(7, sentences, bytes);
  EXPECT_NEAR(-logp / sentences, gpt::Grammar::entropy_per_sentence(), 0.05);
  EXPECT_NEAR(static_cast<double>(bytes) / sentences, gpt::Grammar::mean_sentence_bytes(), 0.15);
  EXPECT_GT(gpt::Grammar::entropy_rate(), 0.2);
  EXPECT_LT(gpt::Grammar::entropy_rate(), 1.0);
  // Seeded and cut to length.
  EXPECT_EQ(gpt::Grammar::generate(3, 1001), gpt::Grammar::generate(3, 1001));
  EXPECT_EQ(gpt::Grammar::generate(3, 1001).size(), 1001u);
  EXPECT_NE(gpt::Grammar::generate(3, 1001), gpt::Grammar::generate(4, 1001));
}

// Cross-entropy of the model on fixed tokens (a fresh workspace each time).
double model_loss(const gpt::Model& m, const Tensor& inputs, const Tensor& targets) {
  gpt::Workspace ws(m, inputs.dim(0), m.config().context);
  Tensor loss = Tensor::empty({1}, DType::F32, m.device());
  cross_entropy_loss(ws.forward(m, inputs), targets, loss, nullptr);
  return loss.item();
}

class GptGradient : public ::testing::TestWithParam<gpt::Arch> {};

TEST_P(GptGradient, EveryParameterMatchesFiniteDifferences) {
  gpt::Config c;
  c.arch = GetParam();
  c.layers = 2, c.dim = 16, c.heads = 4, c.context = 7;
  c.kv_heads = c.arch == gpt::Arch::Llama ? 2 : 4;  // grouped-query attention in llama
  gpt::Model m(c, Device::CPU, 5);
  // Larger weights than the 0.02 initialisation, so every gradient is well above rounding.
  uint64_t seed = 100;
  for (gpt::Parameter& p : m.parameters()) {
    if (p.value.ndim() == 2) {
      fill_normal(p.value, 0.0f, 0.25f, ++seed);
    } else {
      fill_uniform(p.value, p.name.find("ln_") != std::string::npos ? 0.7f : -0.2f,
                   p.name.find("ln_") != std::string::npos ? 1.3f : 0.2f, ++seed);
    }
  }
  const int64_t b = 2, t = 6;  // shorter than the context
  std::vector<int32_t> tok(b * t), next(b * t);
  for (int64_t i = 0; i < b * t; ++i) {
    tok[i] = static_cast<int32_t>((i * 37 + 11) % 256);
    next[i] = static_cast<int32_t>((i * 101 + 3) % 256);
  }
  const Tensor inputs = Tensor::from_vector(tok, {b, t}),
               targets = Tensor::from_vector(next, {b * t});
  gpt::Workspace ws(m, b, c.context);
  Tensor loss = Tensor::empty({1});
  Tensor grad = ws.logits_grad();  // placeholder until the forward fixes the shape
  const Tensor logits = ws.forward(m, inputs);
  grad = ws.logits_grad();
  cross_entropy_loss(logits, targets, loss, &grad);
  ws.backward(m);
  // The directional derivative along a random direction d against the central difference
  // (L(w + h d) - L(w - h d)) / 2h. The loss (about 6) carries FP32 rounding of a few 1e-7
  // relative from sums of up to a few hundred terms, about 3e-6 absolute, so the difference is
  // good to 3e-6 / h = 1e-3; the h^2 term adds about 1e-4 at h = 3e-3.
  const float h = 3e-3f;
  for (gpt::Parameter& p : m.parameters()) {
    const auto w0 = p.value.to_vector<float>();
    const auto d = random_floats(w0.size(), static_cast<uint32_t>(++seed));
    const auto g = p.grad.to_vector<float>();
    double analytic = 0;
    for (size_t i = 0; i < d.size(); ++i) analytic += static_cast<double>(g[i]) * d[i];
    std::vector<float> w(w0.size());
    double l[2];
    for (int side = 0; side < 2; ++side) {
      const float s = side == 0 ? h : -h;
      for (size_t i = 0; i < w.size(); ++i) w[i] = w0[i] + s * d[i];
      p.value = Tensor::from_vector(w, p.value.shape());
      l[side] = model_loss(m, inputs, targets);
    }
    p.value = Tensor::from_vector(w0, p.value.shape());
    const double numeric = (l[0] - l[1]) / (2.0 * h);
    EXPECT_NEAR(numeric, analytic, 2e-3 + 1e-2 * std::fabs(analytic)) << p.name;
    // The key bias adds q.b to every score of a query alike, which softmax ignores: its
    // gradient is exactly 0 (up to rounding). Every other gradient must be large enough to mean
    // something.
    if (p.name.find("attn.k.bias") != std::string::npos) {
      EXPECT_LT(std::fabs(analytic), 1e-6) << p.name;
    } else {
      EXPECT_GT(std::fabs(analytic), 1e-3) << p.name << ": a gradient this small proves nothing";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Arch, GptGradient, ::testing::Values(gpt::Arch::Gpt2, gpt::Arch::Llama),
                         [](const auto& info) { return std::string(gpt::arch_name(info.param)); });

class GptRun : public DeviceTest {};

TEST_P(GptRun, QuickRunLearnsInEveryPhase) {
  for (const char* arch : {"gpt2", "llama"}) {
    const std::string extra = std::string(arch) == "llama" ? " --kv-heads 2" : "";
    const ProgramRun r = run_gpt(std::string("--quick --arch ") + arch + extra + " --device " +
                                 (device() == Device::CPU ? "cpu" : "cuda") + " --sample 40");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // A uniform guess costs log(256) = 5.55 nats per byte; --quick trains far below it, and the
    // floor bounds every model from below.
    const double teacher = summary_loss(r.output, "teacher"),
                 tuned = summary_loss(r.output, "fine-tuned");
    const double student = summary_loss(r.output, "student"),
                 floor = summary_loss(r.output, "floor");
    EXPECT_LT(teacher, 2.5) << r.output;
    EXPECT_LT(tuned, 2.6) << r.output;
    EXPECT_LT(student, 3.5) << r.output;
    EXPECT_GT(teacher, floor);
    EXPECT_NE(r.output.find("pruned 2:4"), std::string::npos);
    EXPECT_NE(r.output.find("--- student sample"), std::string::npos);
  }
}

NNOPS_INSTANTIATE_DEVICES(GptRun);

// BF16 products (FP32 masters) follow the FP32 run: every phase's held-out loss within 2%
// (rounding the products' operands to 8 bits perturbs each step by about 2^-9 relative).
TEST(GptRun, Bf16MixedPrecisionTracksFp32) {
  const ProgramRun fp32 = run_gpt("--quick --device cpu --arch llama --kv-heads 2");
  const ProgramRun bf16 =
      run_gpt("--quick --device cpu --arch llama --kv-heads 2 --precision bf16");
  ASSERT_EQ(fp32.exit_code, 0) << fp32.output;
  ASSERT_EQ(bf16.exit_code, 0) << bf16.output;
  for (const char* model : {"teacher", "fine-tuned", "student"}) {
    const double a = summary_loss(fp32.output, model), b = summary_loss(bf16.output, model);
    EXPECT_NEAR(b, a, 0.02 * a) << model;
    EXPECT_NE(a, b) << model << ": the BF16 run computed nothing in BF16";
  }
}

// --sparse-execution always: the pruned products run compressed through fine-tuning and the
// teacher's distillation outputs, and every phase's held-out loss follows the masked dense run
// within 1e-4 relative (the sums differ only in order).
TEST(GptRun, SparseExecutionTrainsLikeMaskedDense) {
  const std::string args = "--quick --device cpu --prune-pattern unstructured --prune-amount 0.9";
  const ProgramRun dense = run_gpt(args);
  const ProgramRun sparse = run_gpt(args + " --sparse-execution always");
  ASSERT_EQ(dense.exit_code, 0) << dense.output;
  ASSERT_EQ(sparse.exit_code, 0) << sparse.output;
  EXPECT_NE(sparse.output.find("12 of 12 pruned products run compressed"), std::string::npos)
      << sparse.output;
  for (const char* model : {"pruned L1", "fine-tuned", "student"}) {
    const double a = summary_loss(dense.output, model), b = summary_loss(sparse.output, model);
    EXPECT_NEAR(b, a, 1e-4 * a) << model;
  }
  const ProgramRun bad = run_gpt("--quick --sparse-execution always --precision bf16");
  EXPECT_EQ(bad.exit_code, 2);
}

TEST(GptRun, PruningKeepsExactlyHalfOfEveryLinearWeight) {
  gpt::Config c;
  c.arch = gpt::Arch::Llama;
  c.layers = 1, c.dim = 32, c.heads = 2, c.kv_heads = 1, c.context = 8;
  gpt::Model m(c, Device::CPU, 3);
  const int64_t before = m.nonzero_parameters();
  gpt::prune(m, gpt::PrunePattern::TwoFour, 0.5);
  int64_t prunable = 0;
  for (const gpt::Parameter& p : m.parameters()) {
    if (!p.prunable) {
      EXPECT_FALSE(p.mask.defined()) << p.name;
      continue;
    }
    prunable += p.value.numel();
    const auto w = p.value.to_vector<float>();
    const auto mask = p.mask.to_vector<uint8_t>();
    for (size_t g = 0; g < w.size(); g += 4) {
      int kept = 0;
      for (size_t i = g; i < g + 4; ++i) {
        kept += mask[i];
        if (!mask[i]) ASSERT_EQ(w[i], 0.0f) << p.name;
      }
      ASSERT_EQ(kept, 2) << p.name << " group " << g / 4;
    }
  }
  EXPECT_EQ(m.nonzero_parameters(), before - prunable / 2);
}

TEST(GptCheckpoint, SaveAndLoadRoundTripBitForBit) {
  const std::string dir = scratch("ckpt");
  const ProgramRun r = run_gpt("--quick --arch llama --kv-heads 2 --device cpu --save " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"teacher", "student"}) {
    const std::string path = dir + "/" + name + ".safetensors";
    gpt::SavedState st;
    const gpt::Model m = gpt::load_model(path, Device::CPU, &st);
    EXPECT_EQ(st.seed, 1u);
    const std::string again = dir + "/" + name + "-again.safetensors";
    gpt::save_model(again, m, st);
    const auto a = ckpt::load_safetensors(path, true), b = ckpt::load_safetensors(again, true);
    ASSERT_EQ(a.tensors.size(), b.tensors.size());
    for (const auto& [key, t] : a.tensors) {
      ASSERT_EQ(b.tensors.count(key), 1u) << key;
      const Tensor& u = b.tensors.at(key);
      ASSERT_EQ(t.nbytes(), u.nbytes()) << key;
      EXPECT_EQ(std::memcmp(t.raw_data(), u.raw_data(), t.nbytes()), 0) << key;
    }
    EXPECT_EQ(a.metadata, b.metadata);
  }
  // The teacher holds its 2:4-pruned weights compressed, and AdamW moments under PyTorch's
  // names; the dense parameters (norms, embeddings, output) whole.
  const auto teacher = ckpt::load_safetensors(dir + "/teacher.safetensors", true);
  EXPECT_EQ(teacher.tensors.count("h.0.attn.q.weight.nm24_values"), 1u);
  EXPECT_EQ(teacher.metadata.at("nnops.pruned.h.0.attn.q.weight"), "nm24 64,64");
  EXPECT_EQ(teacher.tensors.count("optimizer.h.0.attn.q.weight.exp_avg_sq"), 1u);
  EXPECT_EQ(teacher.tensors.count("lm_head.weight"), 1u);
  // --load evaluates the saved models to the held-out losses of the run that saved them.
  const ProgramRun loaded = run_gpt("--quick --device cpu --load " + dir);
  ASSERT_EQ(loaded.exit_code, 0) << loaded.output;
  EXPECT_EQ(summary_loss(loaded.output, "teacher"), summary_loss(r.output, "fine-tuned"));
  EXPECT_EQ(summary_loss(loaded.output, "student"), summary_loss(r.output, "student"));
}

TEST(GptData, TrainsOnAFileAndRefusesOneTooShort) {
  const std::string path = scratch("text.txt");
  {
    std::ofstream f(path, std::ios::binary);
    for (int i = 0; i < 400; ++i) f << "line " << (i % 7) << ": the quick brown fox.\n";
  }
  const ProgramRun r = run_gpt("--quick --device cpu --context 32 --data " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(path), std::string::npos);
  EXPECT_EQ(r.output.find("floor"), std::string::npos);           // unknown for a file
  EXPECT_LT(summary_loss(r.output, "teacher"), 2.5) << r.output;  // repetitive text
  const std::string tiny = scratch("tiny.txt");
  std::ofstream(tiny) << "too short";
  const ProgramRun bad = run_gpt("--quick --device cpu --data " + tiny);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("needs at least"), std::string::npos) << bad.output;
  const ProgramRun missing = run_gpt("--quick --device cpu --data " + scratch("absent"));
  EXPECT_NE(missing.output.find("cannot read --data file"), std::string::npos) << missing.output;
}

TEST(GptOptions, BadFlagsAreOneLineErrors) {
  struct Case {
    const char* args;
    const char* message;
  };
  for (const Case& c :
       {Case{"--dim 250 --heads 4", "not a multiple of --heads"},
        Case{"--arch llama --heads 4 --kv-heads 3", "not a multiple of --kv-heads"},
        Case{"--arch gpt2 --kv-heads 2", "no grouped-query attention"},
        Case{"--arch llama --dim 12 --heads 4", "even head dimension"},
        Case{"--student-dim 100", "not a multiple of the head width"},
        Case{"--arch bert", "--arch must be gpt2 or llama"}, Case{"--lr 0", "--lr needs a number"},
        Case{"--steps", "needs a value"}, Case{"--frobnicate 1", "unknown flag"}}) {
    const ProgramRun r = run_gpt(std::string("--quick ") + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << ": " << r.output;
  }
}

// Two ranks, each on half of every batch, train like one process on the whole batch: the
// saved weights of all phases agree within 1e-5 (the mean of two half-batch gradients is the
// full batch's gradient up to the order of the sums).
#ifdef NNOPS_MPIEXEC
// Both runs' checkpoints: masks (and compressed forms' metadata) bit for bit, weights and AdamW
// moments within 1e-5.
void expect_same_checkpoints(const std::string& one, const std::string& many) {
  for (const char* name : {"teacher", "student"}) {
    const auto a = ckpt::load_safetensors(one + "/" + name + ".safetensors", true);
    const auto b = ckpt::load_safetensors(many + "/" + name + ".safetensors", true);
    ASSERT_EQ(a.tensors.size(), b.tensors.size());
    for (const auto& [key, t] : a.tensors) {
      if (t.dtype() != DType::F32) {
        EXPECT_EQ(t.to_vector<uint8_t>(), b.tensors.at(key).to_vector<uint8_t>()) << key;
        continue;
      }
      const auto x = t.to_vector<float>(), y = b.tensors.at(key).to_vector<float>();
      for (size_t i = 0; i < x.size(); ++i)
        ASSERT_NEAR(x[i], y[i], 1e-5) << name << " " << key << "[" << i << "]";
    }
  }
}

std::string gpt_program() {
  const char* env = std::getenv("NNOPS_GPT");
  return env ? env : NNOPS_GPT_PATH;
}

// nnops-gpt under mpiexec, one thread per rank (up to four ranks share two cores).
ProgramRun run_gpt_ranks(int ranks, const std::string& args) {
  return run_command("OMP_NUM_THREADS=1 " + std::string(NNOPS_MPIEXEC) + " -x OMP_NUM_THREADS -n " +
                     std::to_string(ranks) + " " + gpt_program() + args);
}
#endif

TEST(GptDataParallel, TwoRanksTrainLikeOneProcess) {
#ifndef NNOPS_MPIEXEC
  GTEST_SKIP() << "nnops built without MPI";
#else
  const std::string args =
      " --quick --device cpu --arch llama --kv-heads 2 --steps 8 --finetune-steps 4 "
      "--distill-steps 4 --log-every 4";
  const std::string one = scratch("one"), two = scratch("two");
  const ProgramRun single = run_command(gpt_program() + args + " --save " + one);
  ASSERT_EQ(single.exit_code, 0) << single.output;
  const ProgramRun ranks = run_gpt_ranks(2, args + " --data-parallel --save " + two);
  ASSERT_EQ(ranks.exit_code, 0) << ranks.output;
  EXPECT_NE(ranks.output.find("data parallel over 2 ranks"), std::string::npos) << ranks.output;
  expect_same_checkpoints(one, two);
#endif
}

// Tensor parallelism: heads and MLP units split over two ranks, for both architectures (llama
// with grouped-query attention and its fused gate-and-up projection), pruned 2:4 and by L1
// ranked across the shards; then two tensor x two data-parallel ranks. Every checkpoint within
// 1e-5 of one process's through all four phases, masks exact.
TEST(GptTensorParallel, RanksTrainLikeOneProcess) {
#ifndef NNOPS_MPIEXEC
  GTEST_SKIP() << "nnops built without MPI";
#else
  const std::string common =
      " --quick --device cpu --student-dim 64 --steps 8 --finetune-steps 4 --distill-steps 4 "
      "--log-every 4";
  struct Case {
    std::string flags;
    int ranks;
    std::string parallel;
  };
  for (const Case& c :
       {Case{"--arch gpt2", 2, "--tensor-parallel 2"},
        Case{"--arch llama --kv-heads 2", 2, "--tensor-parallel 2"},
        Case{"--arch llama --kv-heads 2 --prune-pattern unstructured", 2, "--tensor-parallel 2"},
        Case{"--arch gpt2 --prune-pattern unstructured", 4,
             "--tensor-parallel 2 --data-parallel"}}) {
    SCOPED_TRACE(c.flags + " " + c.parallel);
    const std::string one = scratch("one"), many = scratch("many");
    const ProgramRun single =
        run_command(gpt_program() + common + " " + c.flags + " --save " + one);
    ASSERT_EQ(single.exit_code, 0) << single.output;
    const ProgramRun ranks =
        run_gpt_ranks(c.ranks, common + " " + c.flags + " " + c.parallel + " --save " + many);
    ASSERT_EQ(ranks.exit_code, 0) << ranks.output;
    EXPECT_NE(ranks.output.find("tensor parallel over 2 ranks"), std::string::npos) << ranks.output;
    expect_same_checkpoints(one, many);
  }
  // Heads that do not split over the ranks are refused before anything runs.
  const ProgramRun uneven =
      run_command(gpt_program() + common + " --arch llama --kv-heads 1 --tensor-parallel 2");
  EXPECT_EQ(uneven.exit_code, 2) << uneven.output;
  EXPECT_NE(uneven.output.find("--tensor-parallel 2 needs --heads"), std::string::npos)
      << uneven.output;
#endif
}

// bench/torch_gpt.py with a Python whose torch is recent enough (NNOPS_TORCH_PYTHON, else
// python3): nnops-gpt's first 20 losses of both phases within 1e-4 of PyTorch's in FP32, and
// within 2e-2 in BF16 mixed precision (the script rounds where nnops-gpt does).
TEST(GptParity, MatchesPyTorchStepForStep) {
  const char* env = std::getenv("NNOPS_TORCH_PYTHON");
  const std::string python = env ? env : "python3";
  const ProgramRun probe = run_command(
      python +
      " -c \"import torch, safetensors, sys; v = tuple(int(x) for x in "
      "torch.__version__.split('+')[0].split('.')[:2]); sys.exit(0 if v >= (2, 4) else 3)\"");
  if (probe.exit_code != 0) {
    GTEST_SKIP() << "no Python with torch >= 2.4 and safetensors (set NNOPS_TORCH_PYTHON)";
  }
  const char* gpt = std::getenv("NNOPS_GPT") ? std::getenv("NNOPS_GPT") : NNOPS_GPT_PATH;
  for (const char* precision : {"fp32", "bf16"}) {
    for (const char* arch : {"gpt2", "llama"}) {
      const ProgramRun r =
          run_command(python + " " + NNOPS_SOURCE_DIR + "/bench/torch_gpt.py --nnops-gpt " + gpt +
                      " --arch " + arch + " --precision " + precision);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      EXPECT_NE(r.output.find("agree"), std::string::npos) << r.output;
    }
  }
}

}  // namespace
}  // namespace nnops::test
