// Compressed pruned weights: compress/decompress round trips (NM24 and CSR, F32 and BF16, groups
// keeping fewer than 2), the sparse linear layer's forward and backward against the dense one on
// the decompressed weight at every CPU level, sparse fine-tuning against masked dense
// fine-tuning, thread independence, and hostile arguments.
#include <omp.h>

#include <cstring>
#include <limits>

#include "nnops/detail/sparse_layout.hpp"
#include "test_util.hpp"

namespace nnops::test {
namespace {

struct Pruned {
  Tensor w, mask;
};

// A weight and a mask: 2:4 by magnitude (NM24) or unstructured at `amount` (CSR).
Pruned pruned(int64_t out, int64_t in, SparseFormat format, double amount, uint32_t seed) {
  Pruned p{on(Device::CPU, random_floats(out * in, seed), {out, in}),
           Tensor::from_vector(std::vector<uint8_t>(out * in, 1), {out, in})};
  if (format == SparseFormat::NM24) {
    nm_structured(p.w, 2, 4, p.mask);
  } else {
    l1_unstructured(p.w, PruneAmount::fraction(amount), p.mask);
  }
  return p;
}

std::vector<float> masked(const Pruned& p) {
  auto w = p.w.to_vector<float>();
  const auto m = p.mask.to_vector<uint8_t>();
  for (size_t i = 0; i < w.size(); ++i) w[i] = m[i] ? w[i] : 0.0f;
  return w;
}

TEST(Sparse, CompressDecompressRoundTripsExactly) {
  for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) {
    for (auto [out, in] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 4}, {7, 8}, {33, 100}, {5, 12}}) {
      SCOPED_TRACE((f == SparseFormat::NM24 ? "NM24 " : "CSR ") + std::to_string(out) + "x" +
                   std::to_string(in));
      Pruned p = pruned(out, in, f, 0.7, 10 + in);
      if (f == SparseFormat::NM24 && out > 1) {
        // A group keeping 1 and one keeping none, as iterative pruning leaves them.
        uint8_t* m = p.mask.data<uint8_t>();
        m[0] = m[1] = m[2] = 0, m[3] = 1;
        m[in + 0] = m[in + 1] = m[in + 2] = m[in + 3] = 0;
      }
      SparseMatrix s = compress(p.w, p.mask, f);
      EXPECT_EQ(s.nnz(), count_nonzero(p.mask));
      const size_t bytes = f == SparseFormat::NM24
                               ? size_t(out * in / 2 * 4 + out * ((in / 4 + 1) / 2))
                               : size_t((out + 1) * 8 + s.nnz() * 8);
      EXPECT_EQ(s.bytes(), bytes);
      Tensor back = poisoned({out, in}, Device::CPU);
      decompress(s, back);
      EXPECT_EQ(back.to_vector<float>(), masked(p));
      // BF16 weights: the values stay BF16, the round trip exact.
      Tensor w16 = Tensor::empty({out, in}, DType::BF16);
      cast(w16, p.w);
      SparseMatrix s16 = compress(w16, p.mask, f);
      EXPECT_EQ(s16.dtype(), DType::BF16);
      Tensor back16 = Tensor::empty({out, in}, DType::BF16),
             want16 = Tensor::empty({out, in}, DType::BF16);
      decompress(s16, back16);
      cast(want16, on(Device::CPU, masked(p), {out, in}));
      EXPECT_EQ(bf16_bits(back16), bf16_bits(want16));
    }
  }
}

TEST(Sparse, CompressWorksOnEveryDevice) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device";
  Pruned p = pruned(9, 16, SparseFormat::NM24, 0.5, 3);
  SparseMatrix s = compress(p.w.to(Device::CUDA), p.mask.to(Device::CUDA), SparseFormat::NM24);
  EXPECT_EQ(s.device(), Device::CUDA);
  Tensor back = Tensor::empty({9, 16}, DType::F32, Device::CUDA);
  decompress(s, back);
  EXPECT_EQ(back.to_vector<float>(), masked(p));
}

// The kept products in the stored order against the dense product of the decompressed weight:
// both within gamma_k * sum |x||w| of the exact value.
TEST(Sparse, LinearForwardMatchesDenseOnTheDecompressedWeight) {
  for_each_cpu_isa(Device::CPU, [&] {
    for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) {
      for (auto [out, in, amount] : {std::tuple<int64_t, int64_t, double>{33, 100, 0.9},
                                     std::tuple<int64_t, int64_t, double>{130, 200, 0.5}})
        // Batch rows: NM24's narrow kernel (1, 7; 65 and 130 past whole chunks of 64), padded
        // vectors (16, 30, 40; 100 past a chunk: 1-3 of them), whole chunks.
        for (int64_t n : {1, 7, 16, 30, 40, 64, 65, 100, 130}) {
          SCOPED_TRACE((f == SparseFormat::NM24 ? "NM24 n=" : "CSR n=") + std::to_string(n) +
                       " out=" + std::to_string(out));
          Pruned p = pruned(out, in, f, amount, 20 + n);
          SparseMatrix s = compress(p.w, p.mask, f);
          const auto xv = random_floats(n * in, 30 + n), bv = random_floats(out, 31);
          Tensor x = on(Device::CPU, xv, {n, in}), b = on(Device::CPU, bv, {out});
          Tensor y = poisoned({n, out}, Device::CPU);
          sparse_linear_forward(x, s, &b, y);
          const auto wv = masked(p);
          std::vector<double> ref(n * out), bound(n * out);
          for (int64_t r = 0; r < n; ++r)
            for (int64_t o = 0; o < out; ++o) {
              double acc = bv[o], mag = std::fabs(bv[o]);
              for (int64_t c = 0; c < in; ++c) {
                acc += double(xv[r * in + c]) * wv[o * in + c];
                mag += std::fabs(double(xv[r * in + c]) * wv[o * in + c]);
              }
              ref[r * out + o] = acc;
              bound[r * out + o] = (in + 1) * kEps32 * mag;
            }
          EXPECT_TRUE(all_within(y, ref, bound));
        }
    }
  });
}

// Pruned positions are skipped, not multiplied by zero: a NaN or inf of x in the columns of a
// group no row keeps (where NM24's unused slots point) never reaches y, on every path (the
// batch-wide kernel from 64 rows, the narrow one and the scalar loop below; CUDA's FP32 kernels),
// with groups keeping two, one and no values.
TEST(Sparse, PrunedColumnsOfXNeverReachY) {
  const int64_t out = 37, in = 68;
  Pruned p = pruned(out, in, SparseFormat::NM24, 0.5, 90);
  uint8_t* m = p.mask.data<uint8_t>();
  for (int64_t o = 0; o < out; ++o)  // group 0 keeps nothing in any row
    m[o * in + 0] = m[o * in + 1] = m[o * in + 2] = m[o * in + 3] = 0;
  m[in + 8] = m[in + 10] = m[in + 11] = 0, m[in + 9] = 1;                 // one kept
  m[2 * in + 12] = m[2 * in + 13] = m[2 * in + 14] = m[2 * in + 15] = 0;  // none
  const auto wv = masked(p);
  auto check = [&](Device device, SparseFormat f) {
    SparseMatrix s = compress(p.w.to(device), p.mask.to(device), f);
    for (int64_t n : {1, 7, 16, 40, 64, 65}) {
      SCOPED_TRACE((f == SparseFormat::NM24 ? "NM24 n=" : "CSR n=") + std::to_string(n));
      auto xv = random_floats(n * in, 91 + n);
      for (int64_t r = 0; r < n; ++r) {  // wherever an unused slot points, it is poison
        xv[r * in + 0] = xv[r * in + 3] = std::numeric_limits<float>::quiet_NaN();
        xv[r * in + 1] = std::numeric_limits<float>::infinity();
        xv[r * in + 2] = -std::numeric_limits<float>::infinity();
      }
      Tensor y = poisoned({n, out}, device);
      sparse_linear_forward(on(device, xv, {n, in}), s, nullptr, y);
      std::vector<double> ref(n * out), bound(n * out);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t o = 0; o < out; ++o) {
          double acc = 0, mag = 0;
          for (int64_t c = 0; c < in; ++c) {
            if (!m[o * in + c]) continue;
            acc += double(xv[r * in + c]) * wv[o * in + c];
            mag += std::fabs(double(xv[r * in + c]) * wv[o * in + c]);
          }
          ref[r * out + o] = acc;
          bound[r * out + o] = (in + 1) * kEps32 * mag;
        }
      EXPECT_TRUE(all_within(y, ref, bound));
    }
  };
  for_each_cpu_isa(Device::CPU, [&] {
    for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) check(Device::CPU, f);
  });
  if (!cuda_available()) return;
  // The FP32 kernels (tiled from 8 batch rows, and simple); the tensor-core ones multiply both
  // slots of every group by design (see nnops/sparse.hpp).
  for (const char* kernels : {"default", "simple"}) {
    SCOPED_TRACE(std::string("CUDA ") + kernels);
    if (std::string(kernels) == "simple") ::setenv("NNOPS_CUDA_SPARSE", "simple", 1);
    for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) check(Device::CUDA, f);
    ::unsetenv("NNOPS_CUDA_SPARSE");
  }
}

// (row, column) of every stored slot, (-1, -1) for NM24's unused ones: the layout of
// nnops/sparse.hpp decoded independently of the kernels.
std::vector<std::pair<int64_t, int64_t>> slot_positions(const SparseMatrix& s) {
  std::vector<std::pair<int64_t, int64_t>> pos;
  if (s.format() == SparseFormat::NM24) {
    const auto meta = s.metadata().to_vector<uint8_t>();
    const int64_t groups = s.cols() / 4, meta_cols = (groups + 1) / 2;
    for (int64_t o = 0; o < s.rows(); ++o)
      for (int64_t g = 0; g < groups; ++g) {
        const unsigned nib = (meta[o * meta_cols + g / 2] >> (4 * (g % 2))) & 0xFu;
        const int64_t p0 = nib & 3u, p1 = nib >> 2;
        pos.push_back(p0 <= p1 ? std::make_pair(o, 4 * g + p0) : std::make_pair(-1L, -1L));
        pos.push_back(p0 < p1 ? std::make_pair(o, 4 * g + p1) : std::make_pair(-1L, -1L));
      }
  } else {
    const auto row_ptr = s.row_ptr().to_vector<int64_t>();
    const auto col = s.col().to_vector<int32_t>();
    for (int64_t o = 0; o < s.rows(); ++o)
      for (int64_t e = row_ptr[o]; e < row_ptr[o + 1]; ++e) pos.emplace_back(o, col[e]);
  }
  return pos;
}

TEST(Sparse, LinearBackwardMatchesDenseOnTheDecompressedWeight) {
  for_each_cpu_isa(Device::CPU, [&] {
    for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) {
      // Shapes across the kernels' blocks (96 source rows, 256 output rows per dense block of
      // dvalues) and both dvalues paths (a dot product per slot below a quarter kept, the
      // dense gradient's blocks at or above).
      const std::tuple<int64_t, int64_t, double> shapes[] = {
          {33, 100, 0.9}, {130, 104, 0.5}, {300, 40, 0.6}};
      for (auto [out, in, amount] : shapes)
        for (int64_t n : {1, 7, 16, 33, 64, 65, 300}) {  // 300: dvalues over 3 batch chunks
          SCOPED_TRACE((f == SparseFormat::NM24 ? "NM24 n=" : "CSR n=") + std::to_string(n) +
                       " out=" + std::to_string(out) + " in=" + std::to_string(in));
          Pruned p = pruned(out, in, f, amount, 60 + n);
          if (f == SparseFormat::NM24) {  // a group keeping one and one keeping none
            uint8_t* m = p.mask.data<uint8_t>();
            m[0] = m[1] = m[2] = 0, m[3] = 1;
            m[in + 4] = m[in + 5] = m[in + 6] = m[in + 7] = 0;
          }
          SparseMatrix s = compress(p.w, p.mask, f);
          const auto xv = random_floats(n * in, 70 + n), dyv = random_floats(n * out, 71 + n);
          Tensor x = on(Device::CPU, xv, {n, in}), dy = on(Device::CPU, dyv, {n, out});
          Tensor dx = poisoned({n, in}, Device::CPU), db = poisoned({out}, Device::CPU);
          Tensor dvalues = poisoned(s.values().shape(), Device::CPU);
          sparse_linear_backward(x, s, dy, &dx, &dvalues, &db);
          const auto wv = masked(p);
          // dx: sums of `out` products; dvalues: sums of n products; db in double.
          std::vector<double> dx_ref(n * in), dx_bound(n * in);
          for (int64_t r = 0; r < n; ++r)
            for (int64_t c = 0; c < in; ++c) {
              double acc = 0, mag = 0;
              for (int64_t o = 0; o < out; ++o) {
                acc += double(dyv[r * out + o]) * wv[o * in + c];
                mag += std::fabs(double(dyv[r * out + o]) * wv[o * in + c]);
              }
              dx_ref[r * in + c] = acc;
              dx_bound[r * in + c] = (out + 1) * kEps32 * mag;
            }
          EXPECT_TRUE(all_within(dx, dx_ref, dx_bound));
          const auto pos = slot_positions(s);
          std::vector<double> dv_ref(pos.size(), 0.0), dv_bound(pos.size(), 0.0);
          for (size_t e = 0; e < pos.size(); ++e) {
            if (pos[e].first < 0) continue;  // unused: exactly 0
            double acc = 0, mag = 0;
            for (int64_t r = 0; r < n; ++r) {
              const double t = double(dyv[r * out + pos[e].first]) * xv[r * in + pos[e].second];
              acc += t;
              mag += std::fabs(t);
            }
            dv_ref[e] = acc;
            dv_bound[e] = (n + 1) * kEps32 * mag;
          }
          EXPECT_TRUE(all_within(dvalues, dv_ref, dv_bound));
          if (f == SparseFormat::NM24) {
            // The dense weight gradient's kept entries, bit for bit: the same GEMM micro-kernel
            // products, each summed over the batch in order.
            Tensor dw = poisoned({out, in}, Device::CPU);
            linear_backward(x, p.w, dy, nullptr, dw, nullptr);
            const auto dense = dw.to_vector<float>(), got = dvalues.to_vector<float>();
            int64_t differ = 0;
            for (size_t e = 0; e < pos.size(); ++e)
              if (pos[e].first >= 0 &&
                  std::memcmp(&got[e], &dense[pos[e].first * in + pos[e].second], 4) != 0)
                ++differ;
            EXPECT_EQ(differ, 0) << "dvalues differ from the dense gradient's bits";
          }
          std::vector<double> db_ref(out), db_bound(out);
          for (int64_t o = 0; o < out; ++o) {
            double acc = 0;
            for (int64_t r = 0; r < n; ++r) acc += dyv[r * out + o];
            db_ref[o] = acc;
            db_bound[o] = kEps32 * std::fabs(acc);  // summed in double, rounded once
          }
          EXPECT_TRUE(all_within(db, db_ref, db_bound));
          // Each output on its own gives the same bits.
          Tensor dv_only = poisoned(s.values().shape(), Device::CPU);
          sparse_linear_backward(x, s, dy, nullptr, &dv_only, nullptr);
          EXPECT_EQ(dv_only.to_vector<float>(), dvalues.to_vector<float>());
        }
    }
  });
}

// Fine-tuning a pruned layer on its compressed values equals fine-tuning the dense weight with
// its mask: 10 Adam steps of an MSE regression, weights within 1e-5.
TEST(Sparse, SparseFineTuningMatchesMaskedDense) {
  for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) {
    const int64_t n = 32, out = 24, in = 40;
    Pruned p = pruned(out, in, f, 0.8, 80);
    apply_mask(p.w, p.mask);
    SparseMatrix s = compress(p.w, p.mask, f);
    Tensor x = on(Device::CPU, random_floats(n * in, 81), {n, in});
    Tensor target = on(Device::CPU, random_floats(n * out, 82), {n, out});
    Tensor y = Tensor::empty({n, out}), grad = Tensor::empty({n, out}), loss = Tensor::empty({1});
    Tensor dw = Tensor::empty({out, in}), dvalues = Tensor::empty(s.values().shape());
    AdamOptions adam;
    adam.lr = 1e-2f;
    AdamState dense_state, sparse_state;
    for (int step = 0; step < 10; ++step) {
      linear_forward(x, p.w, nullptr, y);
      mse_loss(y, target, loss, &grad);
      linear_backward(x, p.w, grad, nullptr, dw, nullptr);
      adam_step(adam, p.w, dw, dense_state, &p.mask);
      sparse_linear_forward(x, s, nullptr, y);
      mse_loss(y, target, loss, &grad);
      sparse_linear_backward(x, s, grad, nullptr, &dvalues, nullptr);
      adam_step(adam, s.values(), dvalues, sparse_state);
    }
    Tensor back = Tensor::empty({out, in});
    decompress(s, back);
    const auto a = back.to_vector<float>(), b = p.w.to_vector<float>();
    for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-5) << i;
    EXPECT_EQ(count_nonzero(p.mask), s.nnz());
  }
}

// The CUDA kernels against the CPU's on the same inputs: forward, dx, dvalues and db, with the
// default kernels (the tiled forward from 8 batch rows) and with NNOPS_CUDA_SPARSE=simple.
TEST(Sparse, CudaAgreesWithCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device";
  for (const char* kernels : {"default", "simple"}) {
    SCOPED_TRACE(std::string("NNOPS_CUDA_SPARSE=") + kernels);
    ::setenv("NNOPS_CUDA_SPARSE", kernels, 1);
    for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) {
      for (int64_t n : {1, 7, 8, 33, 64, 65}) {
        const int64_t out = 33, in = 100;
        SCOPED_TRACE((f == SparseFormat::NM24 ? "NM24 n=" : "CSR n=") + std::to_string(n));
        Pruned p = pruned(out, in, f, 0.9, 90 + n);
        Tensor wg = p.w.to(Device::CUDA), mg = p.mask.to(Device::CUDA);
        SparseMatrix sc = compress(p.w, p.mask, f), sg = compress(wg, mg, f);
        const auto xv = random_floats(n * in, 91), dyv = random_floats(n * out, 92);
        const auto bv = random_floats(out, 93);
        Tensor x = on(Device::CPU, xv, {n, in}), dy = on(Device::CPU, dyv, {n, out});
        Tensor b = on(Device::CPU, bv, {out});
        Tensor xg = x.to(Device::CUDA), dyg = dy.to(Device::CUDA), bg = b.to(Device::CUDA);
        Tensor y = Tensor::empty({n, out}), yg = poisoned({n, out}, Device::CUDA);
        sparse_linear_forward(x, sc, &b, y);
        sparse_linear_forward(xg, sg, &bg, yg);
        Tensor dx = Tensor::empty({n, in}), dxg = poisoned({n, in}, Device::CUDA);
        Tensor dv = Tensor::empty(sc.values().shape()),
               dvg = poisoned(sc.values().shape(), Device::CUDA);
        Tensor db = Tensor::empty({out}), dbg = poisoned({out}, Device::CUDA);
        sparse_linear_backward(x, sc, dy, &dx, &dv, &db);
        sparse_linear_backward(xg, sg, dyg, &dxg, &dvg, &dbg);
        // Both sum at most max(in, out, n) products of unit-order values in float, in orders
        // that differ: a few hundred u apart at most.
        const double tol = 200 * kEps32;
        auto close = [&](const Tensor& gpu, const Tensor& cpu) {
          const auto c = cpu.to_vector<float>();
          return all_close(gpu, std::vector<double>(c.begin(), c.end()), tol, tol);
        };
        EXPECT_TRUE(close(yg, y));
        EXPECT_TRUE(close(dxg, dx));
        EXPECT_TRUE(close(dvg, dv));
        EXPECT_TRUE(close(dbg, db));
      }
    }
  }
  ::unsetenv("NNOPS_CUDA_SPARSE");
}

// NM24 codes as mma.sp metadata, one at a time and eight to a word (the staged kernel's form):
// two different indices, the kept values' positions unchanged. Runs on every machine.
TEST(Sparse, TensorCoreMetadataKeepsEveryKeptPosition) {
  for (unsigned code = 0; code < 16; ++code) {
    const detail::Nm24Group g = detail::nm24_decode(code);
    const unsigned m = detail::nm24_mma_code(code);
    SCOPED_TRACE("code " + std::to_string(code));
    EXPECT_NE(m & 3u, m >> 2);  // mma.sp wants two different indices
    if (g.used0) EXPECT_EQ(m & 3u, g.p0);
    if (g.used1) EXPECT_EQ(m >> 2, g.p1);
    if (g.used0 && g.used1) EXPECT_EQ(m, code);
    // Eight to a word: the code at every position among random neighbours.
    for (int pos = 0; pos < 8; ++pos) {
      const uint32_t word = (0x9E3779B9u * (code + 1) + 0x7F4A7C15u * pos) & ~(0xFu << (4 * pos));
      const uint32_t codes = word | code << (4 * pos);
      uint32_t expect = 0;
      for (int j = 0; j < 8; ++j)
        expect |= detail::nm24_mma_code(codes >> (4 * j) & 0xFu) << (4 * j);
      EXPECT_EQ(detail::nm24_mma_codes(codes), expect) << "position " << pos;
    }
  }
}

// The 2:4 forward on sparse tensor cores (BF16 x and values, FP32 sums) against double sums of
// the same BF16 values, for both kernels (NNOPS_CUDA_SPARSE=mma-direct, and mma-staged where the
// depth is a multiple of 64: one slice, the ring's three, and more, with outputs and batch rows
// past its 128 x 128 blocks) and both readings of the metadata register (NNOPS_CUDA_SPARSE_META);
// the default, halves, must be the one that holds. Some groups keep one value or none (their
// codes take nm24_mma_code's other branch).
TEST(Sparse, CudaTensorCoreForwardMatchesDoubleSums) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device";
  struct Shape3 {
    int64_t out, in, n;
  };
  bool passes[2] = {true, true};
  const char* layouts[2] = {"halves", "rows"};
  for (const char* kernel : {"mma-direct", "mma-staged"}) {
    for (int layout = 0; layout < 2; ++layout) {
      ::setenv("NNOPS_CUDA_SPARSE", kernel, 1);
      ::setenv("NNOPS_CUDA_SPARSE_META", layouts[layout], 1);
      for (const Shape3 sh : {Shape3{16, 32, 8}, Shape3{33, 100, 1}, Shape3{17, 36, 7},
                              Shape3{64, 128, 32}, Shape3{130, 260, 65}, Shape3{1, 64, 1},
                              Shape3{7, 192, 33}, Shape3{130, 256, 129}, Shape3{257, 320, 7}}) {
        SCOPED_TRACE(std::string(kernel) + " " + layouts[layout] +
                     " out=" + std::to_string(sh.out) + " in=" + std::to_string(sh.in) +
                     " n=" + std::to_string(sh.n));
        Pruned p = pruned(sh.out, sh.in, SparseFormat::NM24, 0.5, 70 + sh.in);
        // Every ninth kept entry dropped: groups keeping one value, and a few none.
        auto mask = p.mask.to_vector<uint8_t>();
        for (size_t i = 0, kept = 0; i < mask.size(); ++i)
          if (mask[i] && ++kept % 9 == 0) mask[i] = 0;
        p.mask = Tensor::from_vector(mask, {sh.out, sh.in});
        Tensor wb = Tensor::empty({sh.out, sh.in}, DType::BF16),
               xb = Tensor::empty({sh.n, sh.in}, DType::BF16);
        cast(wb, p.w);
        cast(xb, on(Device::CPU, random_floats(sh.n * sh.in, 71), {sh.n, sh.in}));
        const auto bv = random_floats(sh.out, 72);
        SparseMatrix sg =
            compress(wb.to(Device::CUDA), p.mask.to(Device::CUDA), SparseFormat::NM24);
        Tensor yg = poisoned({sh.n, sh.out}, Device::CUDA);
        const Tensor bg = on(Device::CUDA, bv, {sh.out});
        sparse_linear_forward(xb.to(Device::CUDA), sg, &bg, yg);
        // Reference and bound: the kept products in double; FP32 sums of in/2 products are
        // within (in/2) u of the sum of their magnitudes (4x margin for the tensor cores' order).
        Tensor w32 = Tensor::empty({sh.out, sh.in}), x32 = Tensor::empty({sh.n, sh.in});
        cast(w32, wb);
        cast(x32, xb);
        const auto w = w32.to_vector<float>(), x = x32.to_vector<float>();
        std::vector<double> ref(sh.n * sh.out), bound(sh.n * sh.out);
        for (int64_t r = 0; r < sh.n; ++r) {
          for (int64_t o = 0; o < sh.out; ++o) {
            double sum = bv[o], mag = std::fabs(bv[o]);
            for (int64_t c = 0; c < sh.in; ++c) {
              if (!mask[o * sh.in + c]) continue;
              const double prod = double(w[o * sh.in + c]) * x[r * sh.in + c];
              sum += prod;
              mag += std::fabs(prod);
            }
            ref[r * sh.out + o] = sum;
            bound[r * sh.out + o] = 4.0 * (sh.in / 2 + 2) * kEps32 * mag + 1e-6;
          }
        }
        const ::testing::AssertionResult ok = all_within(yg, ref, bound);
        if (!ok) {
          passes[layout] = false;
          std::printf("%s, metadata layout %s: %s\n", kernel, layouts[layout], ok.message());
        }
      }
    }
  }
  ::unsetenv("NNOPS_CUDA_SPARSE");
  ::unsetenv("NNOPS_CUDA_SPARSE_META");
  std::printf("mma.sp metadata layouts: halves %s, rows %s\n", passes[0] ? "match" : "differ",
              passes[1] ? "match" : "differ");
  EXPECT_TRUE(passes[0]) << "the default metadata layout (halves) is wrong"
                         << (passes[1] ? "; rows matches: make it the default" : ", rows too");
}

TEST(Sparse, BitsDoNotDependOnThreadCount) {
  for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) {  // CSR at 90%: the dot path
    SCOPED_TRACE(f == SparseFormat::NM24 ? "NM24" : "CSR");
    Pruned p = pruned(300, 400, f, 0.9, 40);
    SparseMatrix s = compress(p.w, p.mask, f);
    Tensor x = on(Device::CPU, random_floats(96 * 400, 41), {96, 400});
    Tensor a = Tensor::empty({96, 300}), b = Tensor::empty({96, 300});
    const int threads = omp_get_max_threads();
    Tensor dy = on(Device::CPU, random_floats(96 * 300, 42), {96, 300});
    Tensor dx_a = Tensor::empty({96, 400}), dx_b = Tensor::empty({96, 400});
    Tensor dv_a = Tensor::empty(s.values().shape()), dv_b = Tensor::empty(s.values().shape());
    sparse_linear_forward(x, s, nullptr, a);
    sparse_linear_backward(x, s, dy, &dx_a, &dv_a, nullptr);
    omp_set_num_threads(1);
    sparse_linear_forward(x, s, nullptr, b);
    sparse_linear_backward(x, s, dy, &dx_b, &dv_b, nullptr);
    omp_set_num_threads(threads);
    EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
    EXPECT_EQ(dx_a.to_vector<float>(), dx_b.to_vector<float>());
    EXPECT_EQ(dv_a.to_vector<float>(), dv_b.to_vector<float>());
  }
}

TEST(Sparse, HostileArguments) {
  Pruned p = pruned(3, 8, SparseFormat::CSR, 0.25, 50);  // 6 of 8 kept per row: not 2:4
  EXPECT_TRUE(throws_error([&] { compress(p.w, p.mask, SparseFormat::NM24); }, "nnops::compress",
                           "row 0, group 0"));
  Pruned odd = pruned(3, 6, SparseFormat::CSR, 0.5, 51);
  EXPECT_TRUE(throws_error([&] { compress(odd.w, odd.mask, SparseFormat::NM24); },
                           "nnops::compress", "multiple of 4"));
  Tensor mask5 = Tensor::zeros({3, 5}, DType::U8);
  EXPECT_TRUE(
      throws_error([&] { compress(p.w, mask5, SparseFormat::CSR); }, "nnops::compress", "mask"));
  SparseMatrix s = compress(p.w, p.mask, SparseFormat::CSR);
  Tensor x = on(Device::CPU, random_floats(16, 52), {2, 8}), y = poisoned({2, 3}, Device::CPU);
  Tensor x7 = on(Device::CPU, random_floats(14, 53), {2, 7}),
         b4 = on(Device::CPU, random_floats(4, 54), {4});
  EXPECT_TRUE(throws_error([&] { sparse_linear_forward(x7, s, nullptr, y); },
                           "nnops::sparse_linear_forward", "x must be [N, 8]"));
  EXPECT_TRUE(throws_error([&] { sparse_linear_forward(x, s, &b4, y); },
                           "nnops::sparse_linear_forward", "bias"));
  Tensor y_wrong = poisoned({2, 4}, Device::CPU);
  EXPECT_TRUE(throws_error([&] { sparse_linear_forward(x, s, nullptr, y_wrong); },
                           "nnops::sparse_linear_forward", "y"));
  SparseMatrix empty;
  EXPECT_TRUE(throws_error([&] { sparse_linear_forward(x, empty, nullptr, y); },
                           "nnops::sparse_linear_forward", "empty"));
  Tensor dy = on(Device::CPU, random_floats(6, 55), {2, 3}), dx = poisoned({2, 8}, Device::CPU);
  Tensor dv = poisoned(s.values().shape(), Device::CPU), dv_wrong = poisoned({5}, Device::CPU);
  Tensor dy_wrong = on(Device::CPU, random_floats(8, 56), {2, 4});
  EXPECT_TRUE(throws_error([&] { sparse_linear_backward(x, s, dy_wrong, &dx, &dv, nullptr); },
                           "nnops::sparse_linear_backward", "dy"));
  EXPECT_TRUE(throws_error([&] { sparse_linear_backward(x, s, dy, &dx, &dv_wrong, nullptr); },
                           "nnops::sparse_linear_backward", "dvalues"));
  EXPECT_TRUE(throws_error([&] { sparse_linear_backward(x, s, dy, &dx, &s.values(), nullptr); },
                           "nnops::sparse_linear_backward", "overlap"));
  EXPECT_TRUE(throws_error([&] { sparse_linear_backward(x7, s, dy, &dx, &dv, nullptr); },
                           "nnops::sparse_linear_backward", "x must be [N, 8]"));
  for (float v : dx.to_vector<float>()) ASSERT_TRUE(std::isnan(v));
  for (float v : dv.to_vector<float>()) ASSERT_TRUE(std::isnan(v));
  Tensor back = poisoned({3, 7}, Device::CPU);
  EXPECT_TRUE(throws_error([&] { decompress(s, back); }, "nnops::decompress", "w"));
  for (float v : y.to_vector<float>()) ASSERT_TRUE(std::isnan(v));
  for (float v : back.to_vector<float>()) ASSERT_TRUE(std::isnan(v));
}

}  // namespace
}  // namespace nnops::test
