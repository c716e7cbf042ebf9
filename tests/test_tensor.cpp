// Tensor construction, transfers, views and the device queries.
#include <algorithm>
#include <cstdlib>

#ifdef NNOPS_TEST_CUDA_RUNTIME
#include <cuda_runtime.h>
#endif

#include "nnops/cuda.hpp"
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
  EXPECT_TRUE(throws_error([&] { undefined.clone(); }, "nnops::Tensor::clone", "undefined"));
}

TEST(Tensor, MovedFromTensorsAreUndefined) {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  Tensor b = std::move(a);
  EXPECT_FALSE(a.defined());  // NOLINT(bugprone-use-after-move): the state after a move is API
  EXPECT_EQ(a.numel(), 0);
  EXPECT_TRUE(a.shape().empty());
  EXPECT_EQ(a.raw_data(), nullptr);
  EXPECT_TRUE(throws_error([&] { fill(a, 7.0f); }, "nnops::fill", "undefined"));
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
  Tensor c;
  c = std::move(b);
  EXPECT_FALSE(b.defined());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(c.numel(), 4);
  AdamState st;
  st.exp_avg = Tensor::zeros({3});
  st.step = 5;
  AdamState st2 = std::move(st);
  EXPECT_FALSE(st.exp_avg.defined());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(st.step, 0);
  EXPECT_EQ(st2.step, 5);
  SgdState sg;
  sg.momentum_buffer = Tensor::zeros({3});
  SgdState sg2 = std::move(sg);
  EXPECT_FALSE(sg.momentum_buffer.defined());  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(sg2.momentum_buffer.defined());
}

TEST(Tensor, ConstWrappedMemoryIsReadOnly) {
  static const float kTable[4] = {1, 2, 3, 4};
  Tensor t = Tensor::wrap(kTable, {4});
  EXPECT_TRUE(t.is_read_only());
  EXPECT_TRUE(
      throws_error([&] { fill(t, 0.0f); }, "nnops::fill", "t (F32 [4] on CPU) is read-only"));
  Tensor y = Tensor::zeros({4});
  EXPECT_TRUE(throws_error([&] { add_scaled(t, y, 1.0f); }, "nnops::add_scaled", "read-only"));
  EXPECT_TRUE(throws_error([&] { t.data<float>(); }, "nnops::Tensor::data", "read-only"));
  // Reading is fine: as an input, a copy, or through const access.
  activation_forward(Activation::ReLU, t, y);
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
  const Tensor& ct = t;
  EXPECT_EQ(ct.data<float>()[2], 3.0f);
  Tensor view = t.narrow(1, 2);
  EXPECT_TRUE(view.is_read_only());
  EXPECT_TRUE(throws_error([&] { fill(view, 0.0f); }, "nnops::fill", "read-only"));
  EXPECT_FALSE(t.clone().is_read_only());
  float mutable_table[2] = {5, 6};
  EXPECT_FALSE(Tensor::wrap(mutable_table, {2}).is_read_only());
}

class TensorOpsTest : public DeviceTest {};

TEST_P(TensorOpsTest, NarrowViewsRowsAndKeepsTheOwnerAlive) {
  const auto v = random_floats(7 * 3, 4);
  Tensor view;
  {
    Tensor owner = on(device(), v, {7, 3});
    view = owner.narrow(2, 4);
  }  // the owner is gone; the view still holds its storage
  EXPECT_EQ(view.shape(), (Shape{4, 3}));
  EXPECT_TRUE(view.is_view());
  EXPECT_EQ(view.to_vector<float>(), std::vector<float>(v.begin() + 6, v.begin() + 18));
  fill(view, 2.0f);  // writes through to the shared storage
  EXPECT_EQ(view.narrow(3, 1).to_vector<float>(), std::vector<float>(3, 2.0f));
  EXPECT_EQ(view.narrow(4, 0).numel(), 0);
  EXPECT_TRUE(throws_error([&] { view.narrow(3, 2); }, "nnops::Tensor::narrow", "outside"));
  EXPECT_TRUE(throws_error([&] { view.narrow(-1, 1); }, "nnops::Tensor::narrow", "outside"));
}

TEST_P(TensorOpsTest, CopyBetweenTensorsOnAnyDevices) {
  for (int64_t n : {1, 7, 1023}) {
    const auto v = random_floats(n, 11 + n);
    Tensor src = on(device(), v, {n});
    Tensor dst = poisoned({n}, device());
    copy(dst, src);
    EXPECT_EQ(dst.to_vector<float>(), v);
    Tensor host = poisoned({n}, Device::CPU);
    copy(host, src);
    EXPECT_EQ(host.to_vector<float>(), v);
    Tensor back = poisoned({n}, device());
    copy(back, host);
    EXPECT_EQ(back.to_vector<float>(), v);
    copy(back, back);  // in place: a no-op
    EXPECT_EQ(back.to_vector<float>(), v);
  }
  Tensor buf = on(device(), random_floats(8, 1), {8});
  Tensor lo = buf.narrow(0, 5), hi = buf.narrow(3, 5);
  const auto before = buf.to_vector<float>();
  EXPECT_TRUE(throws_error([&] { copy(hi, lo); }, "nnops::copy", "partly overlaps"));
  EXPECT_EQ(buf.to_vector<float>(), before);
  Tensor wrong = Tensor::zeros({8}, DType::I32, device());
  EXPECT_TRUE(throws_error([&] { copy(wrong, buf); }, "nnops::copy", "dtypes must match"));
  Tensor shape = Tensor::zeros({2, 4}, DType::F32, device());
  EXPECT_TRUE(throws_error([&] { copy(shape, buf); }, "nnops::copy", "shapes must match"));
}

TEST_P(TensorOpsTest, ArgmaxOverTheLastDimension) {
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 33}, {33, 1023}}) {
    const auto x = random_floats(rows * cols, 21 + cols);
    Tensor out = Tensor::from_vector(std::vector<int32_t>(rows, -7), {rows}, device());
    argmax(on(device(), x, {rows, cols}), out);
    const auto got = out.to_vector<int32_t>();
    for (int64_t r = 0; r < rows; ++r) {
      const auto row = x.begin() + r * cols;
      ASSERT_EQ(got[r], std::max_element(row, row + cols) - row) << "row " << r;
    }
  }
  // Ties give the first index; NaN wins, the first NaN of a row (torch.argmax).
  Tensor x = on(device(), {1, 3, 3, 0, 5, kNaN, 6, kNaN, -1, -1, -1, -1}, {3, 4});
  Tensor out = Tensor::zeros({3}, DType::I32, device());
  argmax(x, out);
  EXPECT_EQ(out.to_vector<int32_t>(), (std::vector<int32_t>{1, 1, 0}));
  // Higher rank: the output drops the last dimension.
  Tensor x3 = on(device(), random_floats(2 * 3 * 5, 3), {2, 3, 5});
  Tensor out2 = Tensor::zeros({2, 3}, DType::I32, device());
  argmax(x3, out2);
  Tensor bad = Tensor::zeros({6}, DType::I32, device());
  EXPECT_TRUE(throws_error([&] { argmax(x3, bad); }, "nnops::argmax", "must be [2, 3]"));
  Tensor empty_rows = Tensor::zeros({3}, DType::I32, device());
  EXPECT_TRUE(throws_error(
      [&] {
        argmax(Tensor::empty({3, 0}, DType::F32, device()), empty_rows);
      },
      "nnops::argmax", "empty row"));
}

TEST_P(TensorOpsTest, CountNonzero) {
  for (int64_t n : {0, 1, 7, 1023, 100003}) {
    std::vector<uint8_t> m(n);
    int64_t expected = 0;
    for (int64_t i = 0; i < n; ++i) {
      m[i] = static_cast<uint8_t>((i * 7919) % 5 == 0 ? 0 : i % 3 + 1);
      expected += m[i] != 0;
    }
    EXPECT_EQ(count_nonzero(Tensor::from_vector(m, {n}, device())), expected) << n;
  }
}

TEST_P(TensorOpsTest, ReshapeIsAViewOfTheSameElements) {
  const auto v = random_floats(6 * 4, 5);
  Tensor view;
  {
    Tensor owner = on(device(), v, {6, 4});
    view = owner.reshape({2, 3, 4});
  }  // the owner is gone; the view keeps the storage
  EXPECT_EQ(view.shape(), (Shape{2, 3, 4}));
  EXPECT_TRUE(view.is_view());
  EXPECT_EQ(view.to_vector<float>(), v);
  Tensor rows = view.reshape({24}).narrow(4, 4);
  fill(rows, 7.0f);  // writes through to the shared storage
  EXPECT_EQ(view.to_vector<float>()[5], 7.0f);
  EXPECT_EQ(Tensor::empty({0, 3}, DType::F32, device()).reshape({3, 0, 5}).numel(), 0);
  EXPECT_TRUE(throws_error([&] { view.reshape({5, 5}); }, "nnops::Tensor::reshape",
                           "cannot be viewed as [5, 5]"));
  EXPECT_TRUE(throws_error([&] { view.reshape({-4, -6}); }, "nnops::Tensor::reshape",
                           "negative"));
}

// Reference: y[i] = x[offset of i under the permutation], element by element in double loops.
std::vector<float> permuted_reference(const std::vector<float>& x, const Shape& shape,
                                      const std::vector<int>& dims) {
  const int n = static_cast<int>(shape.size());
  std::vector<int64_t> stride(n, 1);
  for (int d = n - 2; d >= 0; --d) stride[d] = stride[d + 1] * shape[d + 1];
  std::vector<float> y(x.size());
  std::vector<int64_t> index(n, 0);
  for (size_t i = 0; i < y.size(); ++i) {
    int64_t rest = static_cast<int64_t>(i), offset = 0;
    for (int d = n - 1; d >= 0; --d) {
      const int64_t size = shape[dims[d]];
      offset += rest % size * stride[dims[d]];
      rest /= size;
    }
    y[i] = x[offset];
  }
  return y;
}

TEST_P(TensorOpsTest, PermuteReordersDimensions) {
  struct Case {
    Shape shape;
    std::vector<int> dims;
  };
  const std::vector<Case> cases = {
      {{7}, {0}},
      {{33, 7}, {1, 0}},
      {{2, 7, 3, 16}, {0, 2, 1, 3}},  // split attention heads
      {{2, 3, 7, 16}, {0, 2, 1, 3}},  // and merge them back
      {{1, 5, 1, 3}, {3, 2, 1, 0}},
      {{3, 4, 5, 2, 3}, {4, 0, 3, 1, 2}},
      {{2, 1, 33}, {1, 0, 2}},  // only size-1 moves: a plain copy
  };
  for (const Case& c : cases) {
    const int64_t n = numel_of(c.shape);
    const auto x = random_floats(n, 31 + static_cast<uint32_t>(n));
    Shape out_shape;
    for (int d : c.dims) out_shape.push_back(c.shape[d]);
    Tensor y = poisoned(out_shape, device());
    permute(on(device(), x, c.shape), c.dims, y);
    EXPECT_EQ(y.to_vector<float>(), permuted_reference(x, c.shape, c.dims))
        << shape_to_string(c.shape);
  }
  // Every element size: BF16 (2 bytes) and U8 move as bits.
  std::vector<uint8_t> bytes(2 * 3 * 5);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7);
  Tensor yb = Tensor::zeros({5, 3, 2}, DType::U8, device());
  permute(Tensor::from_vector(bytes, {2, 3, 5}, device()), {2, 1, 0}, yb);
  const auto got = yb.to_vector<uint8_t>();
  for (int64_t k = 0; k < 5; ++k)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t i = 0; i < 2; ++i) ASSERT_EQ(got[(k * 3 + j) * 2 + i], bytes[(i * 3 + j) * 5 + k]);
  Tensor xf = on(device(), random_floats(3 * 4, 2), {3, 4});
  Tensor xh = Tensor::empty({3, 4}, DType::BF16, device());
  cast(xh, xf);
  Tensor yh = Tensor::empty({4, 3}, DType::BF16, device()), yf = poisoned({4, 3}, device());
  permute(xh, {1, 0}, yh);
  Tensor back = poisoned({4, 3}, device());
  cast(back, yh);
  Tensor xr = poisoned({3, 4}, device());
  cast(xr, xh);
  permute(xr, {1, 0}, yf);
  EXPECT_EQ(back.to_vector<float>(), yf.to_vector<float>());
  // Errors leave y untouched.
  Tensor out = on(device(), random_floats(12, 9), {4, 3});
  const auto before = out.to_vector<float>();
  EXPECT_TRUE(throws_error([&] { permute(xf, {0, 0}, out); }, "nnops::permute",
                           "not a permutation"));
  EXPECT_TRUE(throws_error([&] { permute(xf, {1}, out); }, "nnops::permute", "dims has 1"));
  EXPECT_TRUE(throws_error([&] { permute(xf, {0, 1}, out); }, "nnops::permute", "must be [3, 4]"));
  EXPECT_TRUE(throws_error([&] { permute(xf, {1, 0}, xh); }, "nnops::permute", "y"));
  Tensor self = on(device(), random_floats(16, 3), {4, 4});
  EXPECT_TRUE(throws_error([&] { permute(self, {1, 0}, self); }, "nnops::permute", "overlap"));
  EXPECT_EQ(out.to_vector<float>(), before);
}

NNOPS_INSTANTIATE_DEVICES(TensorOpsTest);

TEST(CudaStream, GuardRestoresTheDefaultStream) {
  EXPECT_EQ(cuda::current_stream(), nullptr) << "the per-thread default stream";
  {
    cuda::StreamGuard guard(nullptr);
    EXPECT_EQ(cuda::current_stream(), nullptr);
  }
  EXPECT_EQ(cuda::current_stream(), nullptr);
  if (!cuda_available()) {
    EXPECT_EQ(cuda::device_count(), 0);
    EXPECT_TRUE(throws_error([] { cuda::set_device(0); }, "nnops::cuda::set_device"));
  }
}

#ifdef NNOPS_TEST_CUDA_RUNTIME
TEST(CudaStream, OpsRunOnTheGuardedStream) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device";
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  {
    cuda::StreamGuard guard(stream);
    EXPECT_EQ(cuda::current_stream(), static_cast<cuda::Stream>(stream));
    // Allocation, fill, product and read-back all ordered on `stream`.
    Tensor a = Tensor::empty({257, 129}, DType::F32, Device::CUDA);
    fill_uniform(a, -1.0f, 1.0f, 5);
    Tensor c = Tensor::empty({257, 257}, DType::F32, Device::CUDA);
    matmul(a, a, c, GemmOptions{false, true});
    Tensor a_cpu = Tensor::empty({257, 129});
    fill_uniform(a_cpu, -1.0f, 1.0f, 5);
    EXPECT_EQ(a.to_vector<float>(), a_cpu.to_vector<float>());
    Tensor c_cpu = Tensor::empty({257, 257});
    matmul(a_cpu, a_cpu, c_cpu, GemmOptions{false, true});
    const auto cv = c_cpu.to_vector<float>();
    // 129-term dot products of |x| <= 1: both within gamma_129 * 129 of the exact value.
    EXPECT_TRUE(all_close(c, std::vector<double>(cv.begin(), cv.end()), 2 * 129 * 129 * kEps32, 0));
  }
  EXPECT_EQ(cuda::current_stream(), nullptr);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  EXPECT_GE(cuda::device_count(), 1);
  cuda::set_device(0);
}
#endif

TEST(Device, CudaTensorsWithoutAGpuAreErrors) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is usable here; this checks the no-GPU path";
  EXPECT_TRUE(throws_error([] { Tensor::empty({4}, DType::F32, Device::CUDA); },
                           "nnops::Tensor::empty", "CUDA"));
  Tensor cpu = Tensor::zeros({4});
  EXPECT_TRUE(throws_error([&] { cpu.to(Device::CUDA); }, "nnops::Tensor::to", "CUDA"));
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
