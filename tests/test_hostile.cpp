// Hostile input: NaN and infinities propagate as in PyTorch, zero-size tensors are fine
// everywhere, element counts beyond 32 bits index correctly, and a failed allocation is an
// nnops::Error after which the library keeps working.
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "test_util.hpp"

namespace nnops::test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

class HostileTest : public DeviceTest {};

TEST_P(HostileTest, NaNPropagatesThroughActivations) {
  for (Activation a :
       {Activation::ReLU, Activation::LeakyReLU, Activation::GELU, Activation::GELUTanh,
        Activation::SiLU, Activation::Sigmoid, Activation::Tanh}) {
    Tensor x = on(device(), {kNaN, 1.0f}, {2}), y = poisoned({2}, device());
    activation_forward(a, x, y);
    EXPECT_TRUE(std::isnan(y.to_vector<float>()[0])) << to_string(a) << "(NaN) must be NaN";
  }
}

TEST_P(HostileTest, SoftmaxOfARowWithInfinity) {
  // PyTorch: softmax([inf, 1]) = [nan, nan] (inf - inf); a row with -inf entries is fine.
  Tensor x = on(device(), {kInf, 1.0f, -kInf, 0.0f}, {2, 2}), y = poisoned({2, 2}, device());
  softmax_forward(x, y);
  const auto v = y.to_vector<float>();
  EXPECT_TRUE(std::isnan(v[0]) && std::isnan(v[1]));
  EXPECT_EQ(v[2], 0.0f);
  EXPECT_EQ(v[3], 1.0f);
  log_softmax_forward(x, y);
  EXPECT_EQ(y.to_vector<float>()[2], -kInf);
}

TEST_P(HostileTest, LossesWithNaNInputs) {
  Tensor loss = poisoned({1}, device()), grad = poisoned({2, 3}, device());
  mse_loss(on(device(), {kNaN, 0, 0, 0, 0, 0}, {2, 3}), Tensor::zeros({2, 3}, DType::F32, device()),
           loss, &grad);
  EXPECT_TRUE(std::isnan(loss.item()));
  cross_entropy_loss(on(device(), {kNaN, 0, 0, 1, 2, 3}, {2, 3}),
                     Tensor::from_vector(std::vector<int32_t>{0, 2}, {2}, device()), loss, &grad);
  EXPECT_TRUE(std::isnan(loss.item()));
  // A NaN row that is ignored does not poison the loss.
  cross_entropy_loss(on(device(), {kNaN, 0, 0, 1, 2, 3}, {2, 3}),
                     Tensor::from_vector(std::vector<int32_t>{-100, 2}, {2}, device()), loss,
                     &grad);
  EXPECT_FALSE(std::isnan(loss.item()));
}

TEST_P(HostileTest, ClipGradNormWithNaNPropagatesLikePyTorch) {
  Tensor g = on(device(), {kNaN, 1.0f}, {2});
  EXPECT_TRUE(std::isnan(clip_grad_norm({&g}, 1.0f)));
  EXPECT_TRUE(std::isnan(g.to_vector<float>()[1])) << "PyTorch multiplies by the NaN coefficient";
}

TEST_P(HostileTest, ZeroSizeTensorsEverywhere) {
  Tensor e = Tensor::empty({0, 4}, DType::F32, device()),
         e2 = Tensor::empty({0, 4}, DType::F32, device()),
         w = Tensor::empty({3, 4}, DType::F32, device());
  fill_uniform(w, -1, 1, 1);
  Tensor y = Tensor::empty({0, 3}, DType::F32, device()),
         c = Tensor::empty({0, 0}, DType::F32, device());
  matmul(e, Tensor::empty({4, 0}, DType::F32, device()), c);
  linear_forward(e, w, nullptr, y);
  Tensor dw = poisoned({3, 4}, device()), db = poisoned({3}, device());
  linear_backward(e, w, y, nullptr, dw, &db);
  for (float v : dw.to_vector<float>()) EXPECT_EQ(v, 0.0f) << "an empty batch has zero gradient";
  for (float v : db.to_vector<float>()) EXPECT_EQ(v, 0.0f);
  Tensor c2 = poisoned({2, 3}, device());
  matmul(Tensor::empty({2, 0}, DType::F32, device()), Tensor::empty({0, 3}, DType::F32, device()),
         c2);  // k = 0: c = 0
  for (float v : c2.to_vector<float>()) EXPECT_EQ(v, 0.0f);
  activation_forward(Activation::GELU, e, e2);
  activation_backward(Activation::GELU, e, e, e2);
  softmax_forward(e, e2);
  softmax_backward(e, e, e2);
  Tensor loss = poisoned({1}, device());
  mse_loss(e, e2, loss, nullptr, Reduction::Sum);
  EXPECT_EQ(loss.item(), 0.0f);
  mse_loss(e, e2, loss, nullptr, Reduction::Mean);
  EXPECT_TRUE(std::isnan(loss.item())) << "PyTorch: mean of nothing is NaN";
  AdamState st;
  Tensor p = Tensor::empty({0}, DType::F32, device()), g = Tensor::empty({0}, DType::F32, device());
  adam_step(AdamOptions{}, p, g, st);
  EXPECT_EQ(st.step, 1);
  Tensor mask = Tensor::empty({0}, DType::U8, device());
  l1_unstructured(p, PruneAmount::fraction(0.5), mask);
  EXPECT_EQ(sparsity(mask), 0.0);
  fill_normal(p, 0, 1, 1);
  EXPECT_EQ(clip_grad_norm({&g}, 1.0f), 0.0);
}

TEST(Hostile, ElementCountsBeyond32Bits) {
  // 2^31 + 9 bytes: every index past 2^31 must be reached (int32 arithmetic would wrap).
  const int64_t n = (int64_t(1) << 31) + 9;
  Tensor mask = Tensor::zeros({n}, DType::U8);
  uint8_t* m = mask.data<uint8_t>();
  m[0] = 1;
  m[n - 1] = 1;
  m[(int64_t(1) << 31) + 3] = 1;
  EXPECT_DOUBLE_EQ(sparsity(mask), 1.0 - 3.0 / static_cast<double>(n));
  EXPECT_EQ(mask.numel(), n);
  EXPECT_EQ(mask.nbytes(), static_cast<size_t>(n));
}

TEST(Hostile, FailedAllocationIsAnErrorAndTheLibraryGoesOn) {
  try {
    Tensor huge = Tensor::empty({int64_t(1) << 44});  // 64 TiB
    FAIL() << "allocating 64 TiB succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("70368744177664 bytes"), std::string::npos) << e.what();
  }
  Tensor ok = Tensor::zeros({1023});
  fill_uniform(ok, 0, 1, 3);
  EXPECT_EQ(ok.numel(), 1023);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define NNOPS_TEST_UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define NNOPS_TEST_UNDER_SANITIZER 1
#endif
#endif

// Caps this process's address space at its current size plus `headroom` bytes (soft limit
// only, so it can be moved again).
void limit_address_space(size_t headroom) {
  long pages = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr || std::fscanf(f, "%ld", &pages) != 1) std::abort();
  std::fclose(f);
  rlimit r{};
  getrlimit(RLIMIT_AS, &r);
  r.rlim_cur = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + headroom;
  if (setrlimit(RLIMIT_AS, &r) != 0) std::abort();
}

// Calls `op`, which must throw an nnops::Error starting with `fn` and naming `bytes`.
bool fails_naming(const std::function<void()>& op, const std::string& fn,
                  const std::string& bytes) {
  try {
    op();
    std::fprintf(stderr, "%s: no error\n", fn.c_str());
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(fn + ":", 0) == 0 && msg.find(bytes) != std::string::npos) return true;
    std::fprintf(stderr, "%s: unexpected message: %s\n", fn.c_str(), msg.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: not an nnops::Error: %s\n", fn.c_str(), e.what());
  }
  return false;
}

// Run in a child process (a death test), whose address space is capped below what the op needs.
void out_of_memory_inside_ops() {
  const int64_t n = 50'000'000;
  Tensor w = Tensor::empty({10, n / 10}), g = Tensor::empty({10, n / 10});
  fill_uniform(w, -1.0f, 1.0f, 1);  // also starts the OpenMP threads before the cap
  fill_uniform(g, -1.0f, 1.0f, 2);
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(n, 1), {10, n / 10});
  const float w0 = w.to_vector<float>()[0];
  Tensor mask2 = Tensor::from_vector(std::vector<uint8_t>(n, 1), {10, n / 10});
  bool ok = true;
  limit_address_space(32 << 20);
  // Per-slice norms over 5M slices: 40 MB, beyond the cap.
  ok &= fails_naming([&] { ln_structured(w, PruneAmount::fraction(0.5), 2, 1, mask); },
                     "nnops::ln_structured", "bytes");
  if (count_nonzero(mask) != n) ok = false, std::fprintf(stderr, "the mask was written\n");
  // Unstructured selection is a radix select: no memory in proportion to the weights, so it
  // runs under the same cap.
  l1_unstructured(w, PruneAmount::fraction(0.5), mask);
  if (count_nonzero(mask) != n / 2) ok = false, std::fprintf(stderr, "l1 pruned the wrong count\n");
  // With 1 MiB of address space left the radix select's histograms may not fit (memory the
  // allocator kept from earlier calls may serve them): the call either prunes or throws an Error
  // naming the function with the mask untouched, never std::terminate from an OpenMP region.
  const int64_t kept = count_nonzero(mask2);
  limit_address_space(1 << 20);
  try {
    l1_unstructured(w, PruneAmount::fraction(0.5), mask2);
  } catch (const Error& e) {
    if (std::string(e.what()).rfind("nnops::l1_unstructured:", 0) != 0)
      ok = false, std::fprintf(stderr, "unexpected message: %s\n", e.what());
    if (count_nonzero(mask2) != kept) ok = false, std::fprintf(stderr, "l1 wrote the mask\n");
  }
  // Adam's two moments need 400 MB: with room for one, neither may be kept.
  limit_address_space(300 << 20);
  AdamState st;
  ok &= fails_naming([&] { adam_step(AdamOptions{}, w, g, st); }, "nnops::adam_step",
                     "200000000 bytes");
  if (st.exp_avg.defined() || st.exp_avg_sq.defined() || st.step != 0)
    ok = false, std::fprintf(stderr, "adam_step changed its state\n");
  if (w.to_vector<float>()[0] != w0) ok = false, std::fprintf(stderr, "adam_step wrote w\n");
  ok &= fails_naming([] { Tensor::empty({int64_t(1) << 30}); }, "nnops::Tensor::empty",
                     "4294967296 bytes");
  std::_Exit(ok ? 0 : 1);
}

// The child's whole run, with anything escaping it named on stderr.
void out_of_memory_inside_ops_reporting() {
  try {
    out_of_memory_inside_ops();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "escaped: %s\n", e.what());
    std::_Exit(2);
  }
}

TEST(HostileDeathTest, OutOfMemoryInsideOpsIsAnErrorNamingTheFunction) {
#ifdef NNOPS_TEST_UNDER_SANITIZER
  GTEST_SKIP() << "address-space limits cannot be used under sanitizers (shadow memory)";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(out_of_memory_inside_ops_reporting(), ::testing::ExitedWithCode(0), "");
#endif
}

TEST(Hostile, DeviceAllocationLargerThanTheDevice) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device";
  try {
    Tensor huge = Tensor::empty({int64_t(1) << 42}, DType::F32, Device::CUDA);  // 16 TiB
    FAIL() << "allocating 16 TiB on the device succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("17592186044416 bytes"), std::string::npos) << e.what();
  }
  Tensor ok = Tensor::zeros({1023}, DType::F32, Device::CUDA);  // the device is still usable
  EXPECT_EQ(ok.to_vector<float>(), std::vector<float>(1023, 0.0f));
}

TEST_P(HostileTest, AliasingRules) {
  // Allowed: element-wise outputs over their inputs. Refused: GEMM outputs over inputs.
  Tensor a = on(device(), random_floats(16, 1), {4, 4});
  const auto before = a.to_vector<float>();
  EXPECT_TRUE(throws_error([&] { matmul(a, a, a); }, "nnops::matmul", "alias"));
  EXPECT_EQ(a.to_vector<float>(), before);
  Tensor dy = on(device(), random_floats(16, 2), {4, 4});
  EXPECT_TRUE(throws_error([&] { linear_backward(a, a, dy, &dy, a, nullptr); },
                           "nnops::linear_backward", "alias"));
  add_scaled(a, a, 1.0f, 0.0f);  // y aliasing x is allowed
  EXPECT_EQ(a.to_vector<float>(), before);
}

NNOPS_INSTANTIATE_DEVICES(HostileTest);

}  // namespace
}  // namespace nnops::test
