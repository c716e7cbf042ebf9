// Tensor construction, transfers, views and the device queries.
#include <cstdlib>

#include "test_util.hpp"

namespace nnops::test {
namespace {

class TensorTest : public DeviceTest {};

TEST_P(TensorTest, FromVectorRoundTripsEveryDType) {
  const std::vector<float> f = random_floats(33, 1);
  EXPECT_EQ(Tensor::from_vector(f, {3, 11}, device()).to_vector<float>(), f);
  const std::vector<int32_t> i{-5, 0, 7, 2147483647};
  EXPECT_EQ(Tensor::from_vector(i, {4}, device()).to_vector<int32_t>(), i);
  const std::vector<uint8_t> u{0, 1, 255};
  EXPECT_EQ(Tensor::from_vector(u, {3, 1}, device()).to_vector<uint8_t>(), u);
}

TEST_P(TensorTest, ShapeQueries) {
  Tensor t = Tensor::empty({2, 3, 5}, DType::F32, device());
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.ndim(), 3);
  EXPECT_EQ(t.numel(), 30);
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.dim(-1), 5);
  EXPECT_EQ(t.nbytes(), 120u);
  EXPECT_EQ(t.device(), device());
  EXPECT_TRUE(throws_error([&] { t.dim(3); }, "nnops::Tensor::dim", "out of range"));
  EXPECT_TRUE(throws_error([&] { t.dim(-4); }, "nnops::Tensor::dim"));
}

TEST_P(TensorTest, ZerosAreZero) {
  Tensor t = Tensor::zeros({7, 33}, DType::F32, device());
  for (float v : t.to_vector<float>()) ASSERT_EQ(v, 0.0f);
  Tensor m = Tensor::zeros({1023}, DType::U8, device());
  for (uint8_t v : m.to_vector<uint8_t>()) ASSERT_EQ(v, 0);
}

TEST_P(TensorTest, CloneAndToCopyTheData) {
  const std::vector<float> f = random_floats(257, 2);
  Tensor a = Tensor::from_vector(f, {257}, device());
  Tensor b = a.clone();
  EXPECT_NE(a.raw_data(), b.raw_data());
  EXPECT_EQ(b.to_vector<float>(), f);
  Tensor c = a.to(Device::CPU);
  EXPECT_EQ(c.device(), Device::CPU);
  EXPECT_EQ(c.to_vector<float>(), f);
  Tensor d = c.to(device());
  EXPECT_EQ(d.to_vector<float>(), f);
}

TEST_P(TensorTest, ItemReadsOneElement) {
  EXPECT_EQ(Tensor::from_vector(std::vector<float>{2.5f}, {1}, device()).item(), 2.5f);
  EXPECT_EQ(Tensor::from_vector(std::vector<int32_t>{-3}, {}, device()).item<int32_t>(), -3);
  Tensor two = Tensor::zeros({2}, DType::F32, device());
  EXPECT_TRUE(throws_error([&] { two.item(); }, "nnops::Tensor::item", "exactly 1"));
  EXPECT_TRUE(throws_error([&] { two.item<int32_t>(); }, "nnops::Tensor::item", "F32"));
}

TEST_P(TensorTest, ZeroSizeTensorsAreDefined) {
  Tensor t = Tensor::empty({0, 5}, DType::F32, device());
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.numel(), 0);
  EXPECT_TRUE(t.to_vector<float>().empty());
  EXPECT_EQ(t.clone().numel(), 0);
}

NNOPS_INSTANTIATE_DEVICES(TensorTest);

TEST(Tensor, HostMemoryIs64ByteAligned) {
  for (int64_t n : {1, 7, 33, 1023}) {
    Tensor t = Tensor::empty({n});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u) << n;
  }
}

TEST(Tensor, WrapIsANonOwningView) {
  std::vector<float> storage = random_floats(12, 3);
  Tensor view = Tensor::wrap(storage.data(), {3, 4});
  EXPECT_TRUE(view.is_view());
  EXPECT_EQ(view.raw_data(), storage.data());
  view.data<float>()[5] = 42.0f;
  EXPECT_EQ(storage[5], 42.0f);
  EXPECT_TRUE(throws_error([] { Tensor::wrap(static_cast<float*>(nullptr), {2}); },
                           "nnops::Tensor::wrap", "null"));
}

TEST(Tensor, MoveLeavesTheSourceUndefined) {
  Tensor a = Tensor::zeros({4});
  Tensor b = std::move(a);
  EXPECT_TRUE(b.defined());
  EXPECT_EQ(b.numel(), 4);
}

TEST(Tensor, BadShapesAndDTypesAreErrors) {
  EXPECT_TRUE(throws_error([] { Tensor::empty({2, -1}); }, "nnops::Tensor::empty", "negative"));
  EXPECT_TRUE(throws_error(
      [] {
        Tensor::empty({int64_t(1) << 62, 8});
      },
      "nnops::Tensor::empty", "too large"));
  EXPECT_TRUE(throws_error(
      [] {
        Tensor::from_vector(std::vector<float>(5), {2, 3});
      },
      "nnops::Tensor::from_vector", "5 values"));
  Tensor f = Tensor::zeros({3});
  EXPECT_TRUE(throws_error([&] { f.to_vector<int32_t>(); }, "nnops::Tensor::to_vector", "F32"));
  EXPECT_TRUE(throws_error([&] { f.data<uint8_t>(); }, "nnops::Tensor::data"));
  Tensor undefined;
  EXPECT_FALSE(undefined.defined());
  EXPECT_TRUE(throws_error([&] { undefined.clone(); }, "nnops::Tensor::to", "undefined"));
}

TEST(Device, CudaTensorsWithoutAGpuAreErrors) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is usable here; this checks the no-GPU path";
  EXPECT_TRUE(throws_error([] { Tensor::empty({4}, DType::F32, Device::CUDA); },
                           "nnops::Tensor::empty", "CUDA"));
  Tensor cpu = Tensor::zeros({4});
  EXPECT_TRUE(throws_error([&] { cpu.to(Device::CUDA); }, "nnops::Tensor::empty", "CUDA"));
}

TEST(Device, DefaultDeviceFollowsTheEnvironment) {
  const char* saved = std::getenv("NNOPS_DEVICE");
  const std::string restore = saved ? saved : "";
  unsetenv("NNOPS_DEVICE");
  EXPECT_EQ(default_device(), cuda_available() ? Device::CUDA : Device::CPU);
  setenv("NNOPS_DEVICE", "cpu", 1);
  EXPECT_EQ(default_device(), Device::CPU);
  setenv("NNOPS_DEVICE", "cuda", 1);
  if (cuda_available()) {
    EXPECT_EQ(default_device(), Device::CUDA);
  } else {
    EXPECT_TRUE(
        throws_error([] { default_device(); }, "nnops::default_device", "NNOPS_DEVICE=cuda"));
  }
  setenv("NNOPS_DEVICE", "tpu", 1);
  EXPECT_TRUE(throws_error([] { default_device(); }, "nnops::default_device", "'tpu'"));
  if (saved)
    setenv("NNOPS_DEVICE", restore.c_str(), 1);
  else
    unsetenv("NNOPS_DEVICE");
}

TEST(Device, Names) {
  EXPECT_STREQ(to_string(Device::CPU), "CPU");
  EXPECT_STREQ(to_string(DType::U8), "U8");
  EXPECT_EQ(dtype_size(DType::I32), 4u);
  EXPECT_EQ(Tensor::zeros({2, 3}, DType::U8).describe(), "U8 [2, 3] on CPU");
}

}  // namespace
}  // namespace nnops::test
