// The CUDA execution model where it meets the machine: which device, which stream, which memory,
// which error. Several threads and streams, the cudaMalloc fallback, launch-size limits. The
// cases that need a GPU skip without one; the probe's answer is checked everywhere.
#include <atomic>
#include <cstdlib>
#include <thread>

#ifdef NNOPS_TEST_CUDA_RUNTIME
#include <cuda_runtime.h>
#endif

#include "nnops/cuda.hpp"
#include "test_util.hpp"

namespace nnops::test {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda::unusable_reason()

TEST(CudaContext, UnusableReasonSaysWhyThereIsNoGpu) {
  if (cuda_available()) {
    EXPECT_EQ(cuda::unusable_reason(), "");
    EXPECT_GE(cuda::device_count(), 1);
    return;
  }
  // Without a GPU (or without CUDA in the build) the reason is spelt out, and every way into
  // the device says it.
  const std::string why = cuda::unusable_reason();
  EXPECT_FALSE(why.empty());
  EXPECT_TRUE(throws_error([] { Tensor::empty({4}, DType::F32, Device::CUDA); },
                           "nnops::Tensor::empty", "CUDA"));
  EXPECT_TRUE(throws_error([] { cuda::synchronize_stream(); }, "nnops::cuda::synchronize_stream"));
  EXPECT_EQ(cuda::current_stream(), nullptr);
  cuda::empty_cache();  // nothing to give back: not an error
}

// NNOPS_CUDA_ATTENTION and set_attention_kernel pick the CUDA attention kernels in any build,
// as for the GEMM below (the attention tests run both kernels on a GPU).
TEST(CudaContext, AttentionKernelChoice) {
  const char* saved = std::getenv("NNOPS_CUDA_ATTENTION");
  const std::string restore = saved ? saved : "";
  ::unsetenv("NNOPS_CUDA_ATTENTION");
  EXPECT_EQ(cuda::attention_kernel(), cuda::AttentionKernel::Default);
  ::setenv("NNOPS_CUDA_ATTENTION", "tiled", 1);
  EXPECT_EQ(cuda::attention_kernel(), cuda::AttentionKernel::Tiled);
  cuda::set_attention_kernel(cuda::AttentionKernel::Simple);  // the call wins over the variable
  EXPECT_EQ(cuda::attention_kernel(), cuda::AttentionKernel::Simple);
  cuda::set_attention_kernel(cuda::AttentionKernel::Default);
  ::setenv("NNOPS_CUDA_ATTENTION", "flash", 1);
  EXPECT_TRUE(throws_error([] { cuda::attention_kernel(); },
                           "nnops::attention_forward/backward: NNOPS_CUDA_ATTENTION", "flash"));
  if (cuda_available()) {
    Tensor q = Tensor::zeros({1, 1, 4, 32}, DType::F32, Device::CUDA);
    Tensor out = Tensor::zeros({1, 1, 4, 32}, DType::F32, Device::CUDA);
    EXPECT_TRUE(throws_error([&] { attention_forward(q, q, q, out, nullptr); },
                             "nnops::attention_forward", "NNOPS_CUDA_ATTENTION"));
  }
  if (saved)
    ::setenv("NNOPS_CUDA_ATTENTION", restore.c_str(), 1);
  else
    ::unsetenv("NNOPS_CUDA_ATTENTION");
}

// NNOPS_CUDA_GEMM and set_gemm_kernel pick the tensor-core GEMM family in any build; an unknown
// value of the variable is an error that names it, at the first product that asks (the GEMM
// tests run every family on a GPU: GemmPath::CudaMma, CudaWgmma, CudaWgmmaTma).
TEST(CudaContext, GemmKernelChoice) {
  const char* saved = std::getenv("NNOPS_CUDA_GEMM");
  const std::string restore = saved ? saved : "";
  ::unsetenv("NNOPS_CUDA_GEMM");
  EXPECT_EQ(cuda::gemm_kernel(), cuda::GemmKernel::Default);
  ::setenv("NNOPS_CUDA_GEMM", "mma", 1);
  EXPECT_EQ(cuda::gemm_kernel(), cuda::GemmKernel::Mma);
  cuda::set_gemm_kernel(cuda::GemmKernel::Simt);  // the call wins over the variable
  EXPECT_EQ(cuda::gemm_kernel(), cuda::GemmKernel::Simt);
  cuda::set_gemm_kernel(cuda::GemmKernel::Default);
  ::setenv("NNOPS_CUDA_GEMM", "wmma", 1);
  EXPECT_EQ(cuda::gemm_kernel(), cuda::GemmKernel::Wmma);
  ::setenv("NNOPS_CUDA_GEMM", "wgmma", 1);
  EXPECT_EQ(cuda::gemm_kernel(), cuda::GemmKernel::Wgmma);
  ::setenv("NNOPS_CUDA_GEMM", "wgmma_tma", 1);
  EXPECT_EQ(cuda::gemm_kernel(), cuda::GemmKernel::WgmmaTma);
  ::setenv("NNOPS_CUDA_GEMM", "cutlass", 1);
  EXPECT_TRUE(throws_error([] { cuda::gemm_kernel(); }, "nnops::matmul: NNOPS_CUDA_GEMM", "cutlass"));
  if (cuda_available()) {
    Tensor a = Tensor::zeros({4, 4}, DType::F32, Device::CUDA);
    Tensor c = Tensor::zeros({4, 4}, DType::F32, Device::CUDA);
    EXPECT_TRUE(throws_error([&] { matmul(a, a, c); }, "nnops::matmul", "NNOPS_CUDA_GEMM"));
  }
  if (saved)
    ::setenv("NNOPS_CUDA_GEMM", restore.c_str(), 1);
  else
    ::unsetenv("NNOPS_CUDA_GEMM");
}

// A cross-entropy target out of range, enqueued and not waited for.
void enqueue_bad_target(Tensor& loss) {
  Tensor logits = Tensor::zeros({4, 5}, DType::F32, Device::CUDA);
  Tensor targets = Tensor::from_vector(std::vector<int32_t>{0, 1, 9, 2}, {4}, Device::CUDA);
  cross_entropy_loss(logits, targets, loss, nullptr);
}

TEST(CudaContext, ADeviceErrorReachesOnlyTheThreadThatCausedIt) {
  SKIP_WITHOUT_GPU();
  Tensor loss = Tensor::zeros({1}, DType::F32, Device::CUDA);
  enqueue_bad_target(loss);
  // Another thread's synchronising calls neither see nor clear it.
  std::thread other([] {
    Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}, Device::CUDA);
    EXPECT_EQ(t.to_vector<float>()[2], 3.0f);
    EXPECT_NO_THROW(synchronize(Device::CUDA));
  });
  other.join();
  EXPECT_TRUE(throws_error([&] { loss.item(); }, "nnops::cross_entropy_loss", "outside"));
  EXPECT_NO_THROW(loss.item()) << "a reported error is cleared";
}

#ifdef NNOPS_TEST_CUDA_RUNTIME
TEST(CudaContext, ADeviceErrorIsReportedOnItsOwnStream) {
  SKIP_WITHOUT_GPU();
  cudaStream_t s1, s2;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking), cudaSuccess);
  {
    cuda::StreamGuard on_s1(s1);
    Tensor loss = Tensor::zeros({1}, DType::F32, Device::CUDA);
    enqueue_bad_target(loss);
    {
      cuda::StreamGuard on_s2(s2);
      Tensor t = Tensor::zeros({8}, DType::F32, Device::CUDA);
      EXPECT_NO_THROW(cuda::synchronize_stream());
      EXPECT_EQ(t.to_vector<float>()[7], 0.0f);
    }
    EXPECT_TRUE(throws_error([] { cuda::synchronize_stream(); }, "nnops::cross_entropy_loss"));
  }
  // synchronize(Device::CUDA) reports what any of this thread's streams recorded.
  {
    cuda::StreamGuard on_s2(s2);
    Tensor loss = Tensor::zeros({1}, DType::F32, Device::CUDA);
    enqueue_bad_target(loss);
  }
  EXPECT_TRUE(throws_error([] { synchronize(Device::CUDA); }, "nnops::cross_entropy_loss"));
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
}

TEST(CudaContext, SynchronizeWaitsForWorkQueuedByAnotherThread) {
  SKIP_WITHOUT_GPU();
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  Tensor a = Tensor::empty({2048, 2048}, DType::F32, Device::CUDA);
  Tensor c = Tensor::empty({2048, 2048}, DType::F32, Device::CUDA);
  fill_uniform(a, -1.0f, 1.0f, 3);
  synchronize(Device::CUDA);
  std::thread producer([&] {
    cuda::StreamGuard guard(stream);
    for (int i = 0; i < 8; ++i) matmul(a, a, c);  // about a TFLOP of queued work
  });
  producer.join();
  synchronize(Device::CUDA);
  EXPECT_EQ(cudaStreamQuery(stream), cudaSuccess) << "synchronize returned before the work ended";
  cudaStreamDestroy(stream);
}
#endif

// The cudaMalloc/cudaFree fallback for devices without memory pools, forced in a child process
// (the choice is made when a device is first probed).
void ops_without_memory_pools() {
  setenv("NNOPS_CUDA_POOL", "off", 1);
  const auto x = random_floats(257 * 129, 5);
  Tensor a = Tensor::from_vector(x, {257, 129}, Device::CUDA);
  Tensor c = Tensor::empty({257, 257}, DType::F32, Device::CUDA);
  matmul(a, a, c, GemmOptions{false, true});
  Tensor a_cpu = Tensor::from_vector(x, {257, 129}), c_cpu = Tensor::empty({257, 257});
  matmul(a_cpu, a_cpu, c_cpu, GemmOptions{false, true});
  const auto got = c.to_vector<float>(), want = c_cpu.to_vector<float>();
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, double(std::fabs(got[i] - want[i])));
  for (int i = 0; i < 100; ++i) Tensor t = Tensor::empty({1 << 16}, DType::F32, Device::CUDA);
  synchronize(Device::CUDA);
  std::_Exit(worst < 1e-3 ? 0 : 1);
}

TEST(CudaContextDeathTest, WithoutMemoryPoolsEveryOpStillRuns) {
  SKIP_WITHOUT_GPU();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(ops_without_memory_pools(), ::testing::ExitedWithCode(0), "");
}

// More rows than one grid dimension of 128-row tiles holds (65535 x 128): the row tiles go in
// grid.x.
TEST(CudaContext, LinearOverMoreRowsThanOneGridDimension) {
  SKIP_WITHOUT_GPU();
  const int64_t rows = 65535 * 128 + 7, in = 3, out = 2;
  const auto xv = random_floats(static_cast<size_t>(rows * in), 8);
  const auto wv = random_floats(in * out, 9);
  Tensor x = Tensor::from_vector(xv, {rows, in}, Device::CUDA);
  Tensor w = Tensor::from_vector(wv, {out, in}, Device::CUDA);
  Tensor y = Tensor::empty({rows, out}, DType::F32, Device::CUDA);
  linear_forward(x, w, nullptr, y);
  const auto got = y.to_vector<float>();
  for (int64_t r : {int64_t(0), int64_t(65535) * 128 - 1, int64_t(65535) * 128, rows - 1}) {
    for (int64_t o = 0; o < out; ++o) {
      double ref = 0;
      for (int64_t k = 0; k < in; ++k) ref += double(xv[r * in + k]) * wv[o * in + k];
      EXPECT_NEAR(got[r * out + o], ref, 1e-5) << "row " << r;
    }
  }
}

// More slices than one launch of a block each would take: blocks stride over them.
TEST(CudaContext, StructuredPruningOverManySlices) {
  SKIP_WITHOUT_GPU();
  const int64_t slices = 70001;
  const auto wv = random_floats(slices * 2, 10);
  Tensor w_cpu = Tensor::from_vector(wv, {slices, 2});
  Tensor m_cpu = Tensor::from_vector(std::vector<uint8_t>(slices * 2, 1), {slices, 2});
  Tensor w = w_cpu.to(Device::CUDA), m = m_cpu.to(Device::CUDA);
  ln_structured(w_cpu, PruneAmount::fraction(0.4), 2, 0, m_cpu);
  ln_structured(w, PruneAmount::fraction(0.4), 2, 0, m);
  EXPECT_EQ(m.to_vector<uint8_t>(), m_cpu.to_vector<uint8_t>());
}

TEST(CudaContext, EmptyCacheKeepsLiveTensors) {
  SKIP_WITHOUT_GPU();
  Tensor keep = Tensor::from_vector(random_floats(1 << 20, 11), {1 << 20}, Device::CUDA);
  { Tensor gone = Tensor::empty({1 << 24}, DType::F32, Device::CUDA); }
  cuda::empty_cache();
  EXPECT_EQ(keep.to_vector<float>(), random_floats(1 << 20, 11));
}

// Tensors remember their GPU: an op over tensors of two GPUs names both, and an op on another
// GPU's tensors runs there whatever the calling thread's device.
TEST(CudaContext, TensorsRememberTheirGpu) {
  SKIP_WITHOUT_GPU();
  Tensor a = Tensor::zeros({3}, DType::F32, Device::CUDA);
  EXPECT_EQ(a.device_index(), cuda::current_device());
  if (cuda::device_count() < 2) GTEST_SKIP() << "one GPU: the two-GPU half needs two";
  const int first = cuda::current_device(), second = (first + 1) % cuda::device_count();
  cuda::set_device(second);
  Tensor b = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}, Device::CUDA);
  EXPECT_EQ(b.device_index(), second);
  cuda::set_device(first);
  EXPECT_TRUE(throws_error([&] { add_scaled(a, b, 1.0f); }, "nnops::add_scaled", "CUDA:"));
  Tensor c = Tensor::zeros({3}, DType::F32, Device::CUDA);
  copy(c, b);  // a peer copy
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  add_scaled(b, b, 1.0f);  // runs on b's GPU
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{2, 4, 6}));
}

}  // namespace
}  // namespace nnops::test
