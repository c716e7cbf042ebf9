// nnops::dist over MPI, run by CTest under mpiexec with two ranks (and alone): collectives against
// sums computed locally from every rank's (seeded) data, buckets, the non-blocking form,
// mismatched tensor lists, and a rank that dies.
#include <cmath>
#include <cstdlib>
#include <limits>

#include "nnops/dist.hpp"
#include "test_util.hpp"

namespace nnops::test {
namespace {

dist::Communicator& comm() {
  static dist::Communicator c = dist::Communicator::world();
  return c;
}

// Rank r's data for tensor t: reproducible on every rank.
std::vector<float> data_of(int r, int t, int64_t n) {
  return random_floats(static_cast<size_t>(n), 1000u * static_cast<uint32_t>(r) + t);
}

// Sum over ranks in rank order, in double (MPI's order may differ: tolerance N u).
std::vector<double> expected_sum(int t, int64_t n, double scale = 1.0) {
  std::vector<double> s(static_cast<size_t>(n), 0.0);
  for (int r = 0; r < comm().size(); ++r) {
    const auto v = data_of(r, t, n);
    for (int64_t i = 0; i < n; ++i) s[i] += v[i];
  }
  for (double& x : s) x *= scale;
  return s;
}

double tol() {
  return comm().size() * kEps32;
}

TEST(Dist, AllreduceOfOddSizes) {
  const std::vector<int64_t> sizes = {0, 1, 7, 1000003};
  std::vector<Tensor> ts;
  for (size_t t = 0; t < sizes.size(); ++t)
    ts.push_back(Tensor::from_vector(data_of(comm().rank(), int(t), sizes[t]), {sizes[t]}));
  std::vector<Tensor*> ptrs;
  for (auto& t : ts) ptrs.push_back(&t);
  comm().allreduce(ptrs);
  for (size_t t = 0; t < sizes.size(); ++t)
    EXPECT_TRUE(all_close(ts[t], expected_sum(int(t), sizes[t]), 0, tol())) << sizes[t];
}

TEST(Dist, SmallTensorsShareABucketAndALargeOneGoesAlone) {
  comm().set_bucket_bytes(4096);  // 1024 floats
  std::vector<Tensor> ts;
  for (int t = 0; t < 50; ++t) ts.push_back(Tensor::from_vector(data_of(comm().rank(), t, 7), {7}));
  ts.push_back(Tensor::from_vector(data_of(comm().rank(), 50, 10000), {100, 100}));
  std::vector<Tensor*> ptrs;
  for (auto& t : ts) ptrs.push_back(&t);
  comm().allreduce(ptrs, dist::Op::Mean);
  for (int t = 0; t < 50; ++t)
    EXPECT_TRUE(all_close(ts[t], expected_sum(t, 7, 1.0 / comm().size()), 0, 2 * tol()));
  EXPECT_TRUE(all_close(ts[50], expected_sum(50, 10000, 1.0 / comm().size()), 0, 2 * tol()));
  comm().set_bucket_bytes(size_t(25) << 20);
}

TEST(Dist, NonBlockingAllreduce) {
  Tensor a = Tensor::from_vector(data_of(comm().rank(), 1, 333), {333});
  Tensor b = Tensor::from_vector(data_of(comm().rank(), 2, 5), {5});
  dist::Request req = comm().allreduce_async({&a, &b});
  EXPECT_TRUE(req.pending());
  req.wait();
  EXPECT_FALSE(req.pending());
  EXPECT_TRUE(all_close(a, expected_sum(1, 333), 0, tol()));
  EXPECT_TRUE(all_close(b, expected_sum(2, 5), 0, tol()));
}

TEST(Dist, BroadcastEveryDType) {
  const int root = comm().size() - 1;
  Tensor f = Tensor::from_vector(data_of(comm().rank(), 3, 77), {7, 11});
  Tensor i = Tensor::from_vector(std::vector<int32_t>(5, comm().rank() * 10 + 1), {5});
  Tensor u = Tensor::from_vector(std::vector<uint8_t>(3, uint8_t(comm().rank() + 2)), {3});
  comm().broadcast({&f, &i, &u}, root);
  EXPECT_EQ(f.to_vector<float>(), data_of(root, 3, 77));
  EXPECT_EQ(i.to_vector<int32_t>(), std::vector<int32_t>(5, root * 10 + 1));
  EXPECT_EQ(u.to_vector<uint8_t>(), std::vector<uint8_t>(3, uint8_t(root + 2)));
}

TEST(Dist, ReduceScatterAndAllgather) {
  const int n = comm().size();
  const int64_t chunk = 1001;
  Tensor in = Tensor::from_vector(data_of(comm().rank(), 4, chunk * n), {chunk * n});
  Tensor out = poisoned({chunk}, Device::CPU);
  comm().reduce_scatter(in, out);
  const auto full = expected_sum(4, chunk * n);
  const std::vector<double> mine(full.begin() + comm().rank() * chunk,
                                 full.begin() + (comm().rank() + 1) * chunk);
  EXPECT_TRUE(all_close(out, mine, 0, tol()));
  Tensor gathered = poisoned({chunk * n}, Device::CPU);
  comm().allgather(out, gathered);
  EXPECT_TRUE(all_close(gathered, full, 0, tol()));
  // A read-only input is fine; a read-only output is not.
  const std::vector<float> in_values = in.to_vector<float>();
  Tensor in_const = Tensor::wrap(static_cast<const float*>(in_values.data()), {chunk * n});
  Tensor out2 = poisoned({chunk}, Device::CPU);
  comm().reduce_scatter(in_const, out2);
  EXPECT_TRUE(all_close(out2, mine, 0, tol()));
  EXPECT_TRUE(throws_error([&] { comm().allgather(out2, in_const); }, "nnops::dist::allgather",
                           "read-only"));
  Tensor wrong = Tensor::zeros({chunk + 1});
  EXPECT_TRUE(throws_error([&] { comm().reduce_scatter(in, wrong); }, "nnops::dist::reduce_scatter",
                           "rank " + std::to_string(comm().rank())));
}

// split: one group of everyone (ranked in reverse by key), groups of one, and groups by parity;
// a collective in a group reduces over its members only.
TEST(Dist, SplitMakesGroups) {
  const int rank = comm().rank(), size = comm().size();
  dist::Communicator all = comm().split(0, size - 1 - rank);
  EXPECT_EQ(all.size(), size);
  EXPECT_EQ(all.rank(), size - 1 - rank);
  Tensor t = Tensor::from_vector(std::vector<float>{static_cast<float>(rank + 1)}, {1});
  all.allreduce({&t});
  EXPECT_EQ(t.item(), static_cast<float>(size * (size + 1) / 2));
  dist::Communicator alone = comm().split(rank, 0);
  EXPECT_EQ(alone.size(), 1);
  EXPECT_EQ(alone.rank(), 0);
  Tensor u = Tensor::from_vector(std::vector<float>{static_cast<float>(rank + 1)}, {1});
  alone.allreduce({&u});
  EXPECT_EQ(u.item(), static_cast<float>(rank + 1));
  dist::Communicator parity = comm().split(rank % 2, rank);
  int members = 0, sum = 0;
  for (int r = rank % 2; r < size; r += 2) ++members, sum += r + 1;
  EXPECT_EQ(parity.size(), members);
  Tensor v = Tensor::from_vector(std::vector<float>{static_cast<float>(rank + 1)}, {1});
  parity.allreduce({&v});
  EXPECT_EQ(v.item(), static_cast<float>(sum));
  // A group of a group works too, and a negative color is refused.
  EXPECT_EQ(parity.split(0, 0).size(), members);
  EXPECT_THROW(comm().split(-1, 0), Error);
}

// Pruning a weight split across the ranks, by rows (column-parallel) and by columns
// (row-parallel): every rank's mask is exactly its part of the mask one process computes on the
// whole weight, ties (many equal magnitudes, +0 and -0, NaN) and a prior mask included.
TEST(Dist, ShardedL1PruningEqualsOneProcess) {
  const int rank = comm().rank(), size = comm().size();
  const int64_t R = 7, C = 33;
  auto whole = random_floats(R * C, 77);
  for (float& v : whole) v = std::round(v * 8.0f) / 8.0f;  // magnitudes repeat often
  whole[5] = 0.0f, whole[6] = -0.0f, whole[40] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint8_t> prior(R * C, 1);
  for (int64_t i = 0; i < R * C; i += 9) prior[i] = 0;  // pruned before
  for (const PruneAmount& amount :
       {PruneAmount::fraction(0.5), PruneAmount::fraction(0.3), PruneAmount::count(17),
        PruneAmount::fraction(1.0), PruneAmount::fraction(0.0)}) {
    Tensor full_mask = Tensor::from_vector(prior, {R, C});
    l1_unstructured(Tensor::from_vector(whole, {R, C}), amount, full_mask);
    const auto expected = full_mask.to_vector<uint8_t>();
    for (bool by_rows : {true, false}) {
      SCOPED_TRACE(by_rows ? "rows split" : "columns split");
      const int64_t parts = by_rows ? R : C;
      const int64_t lo = parts * rank / size, hi = parts * (rank + 1) / size;
      const int64_t rows = by_rows ? hi - lo : R, cols = by_rows ? C : hi - lo;
      std::vector<float> w(rows * cols);
      std::vector<uint8_t> m(rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t at = (by_rows ? lo + r : r) * C + (by_rows ? c : lo + c);
          w[r * cols + c] = whole[at];
          m[r * cols + c] = prior[at];
        }
      Tensor shard = Tensor::from_vector(w, {rows, cols});
      Tensor mask = Tensor::from_vector(m, {rows, cols});
      const dist::ShardPlacement where{R, C, by_rows ? lo : 0, by_rows ? 0 : lo};
      dist::l1_unstructured(comm(), shard, where, amount, mask);
      const auto got = mask.to_vector<uint8_t>();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t at = (by_rows ? lo + r : r) * C + (by_rows ? c : lo + c);
          ASSERT_EQ(got[r * cols + c], expected[at]) << "entry " << at;
        }
    }
  }
  // Shards that do not tile the weight, or a count beyond what is kept, fail on every rank.
  Tensor shard = Tensor::from_vector(std::vector<float>(3, 1.0f), {1, 3});
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(3, 1), {1, 3});
  EXPECT_THROW(dist::l1_unstructured(comm(), shard, {size + 1, 3, rank, 0},
                                     PruneAmount::fraction(0.5), mask),
               Error);
  EXPECT_THROW(dist::l1_unstructured(comm(), shard, {size, 3, rank, 0},
                                     PruneAmount::count(3 * size + 1), mask),
               Error);
  EXPECT_EQ(mask.to_vector<uint8_t>(), std::vector<uint8_t>(3, 1));
}

// Global pruning over the two layers of a tensor-parallel MLP: the first split by rows, the
// second by columns (with a rank holding no columns when there are more ranks than columns is
// not a case: every rank holds some). The masks are exactly one process's global_unstructured.
TEST(Dist, ShardedGlobalPruningEqualsOneProcess) {
  const int rank = comm().rank(), size = comm().size();
  const int64_t H = 9, IN = 7, OUT = 5;
  auto w1 = random_floats(H * IN, 81), w2 = random_floats(OUT * H, 82);
  for (float& v : w1) v = std::round(v * 4.0f) / 4.0f;  // ties within and across the tensors
  for (float& v : w2) v = std::round(v * 4.0f) / 4.0f;
  std::vector<uint8_t> p1(H * IN, 1), p2(OUT * H, 1);
  p1[3] = 0, p2[11] = 0;
  for (const PruneAmount& amount : {PruneAmount::fraction(0.5), PruneAmount::count(40),
                                    PruneAmount::fraction(1.0), PruneAmount::fraction(0.0)}) {
    Tensor whole1 = Tensor::from_vector(w1, {H, IN}), whole2 = Tensor::from_vector(w2, {OUT, H});
    Tensor full1 = Tensor::from_vector(p1, {H, IN}), full2 = Tensor::from_vector(p2, {OUT, H});
    global_unstructured({&whole1, &whole2}, amount, {&full1, &full2});
    const auto e1 = full1.to_vector<uint8_t>(), e2 = full2.to_vector<uint8_t>();
    const int64_t lo = H * rank / size, hi = H * (rank + 1) / size, n = hi - lo;
    std::vector<float> s1(n * IN), s2(OUT * n);
    std::vector<uint8_t> m1(n * IN), m2(OUT * n);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < IN; ++c)
        s1[r * IN + c] = w1[(lo + r) * IN + c], m1[r * IN + c] = p1[(lo + r) * IN + c];
    for (int64_t r = 0; r < OUT; ++r)
      for (int64_t c = 0; c < n; ++c)
        s2[r * n + c] = w2[r * H + lo + c], m2[r * n + c] = p2[r * H + lo + c];
    Tensor shard1 = Tensor::from_vector(s1, {n, IN}), shard2 = Tensor::from_vector(s2, {OUT, n});
    Tensor mask1 = Tensor::from_vector(m1, {n, IN}), mask2 = Tensor::from_vector(m2, {OUT, n});
    dist::global_unstructured(comm(), {&shard1, &shard2}, {{H, IN, lo, 0}, {OUT, H, 0, lo}}, amount,
                              {&mask1, &mask2});
    const auto g1 = mask1.to_vector<uint8_t>(), g2 = mask2.to_vector<uint8_t>();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < IN; ++c) ASSERT_EQ(g1[r * IN + c], e1[(lo + r) * IN + c]);
    for (int64_t r = 0; r < OUT; ++r)
      for (int64_t c = 0; c < n; ++c) ASSERT_EQ(g2[r * n + c], e2[r * H + lo + c]);
  }
  // One weight held as two row blocks per rank (a fused gate-and-up projection split by rows):
  // the same masks as l1_unstructured on the whole weight.
  {
    Tensor whole1 = Tensor::from_vector(w1, {H, IN}), full1 = Tensor::from_vector(p1, {H, IN});
    l1_unstructured(whole1, PruneAmount::fraction(0.5), full1);
    const auto e1 = full1.to_vector<uint8_t>();
    const int64_t half = H / 2 + 1;  // blocks [0, half) and [half, H), each split over the ranks
    std::vector<Tensor> ws, ms;
    std::vector<dist::ShardPlacement> where;
    std::vector<int64_t> first_rows;
    for (const auto& [start, rows] : {std::pair<int64_t, int64_t>{0, half}, {half, H - half}}) {
      const int64_t lo = start + rows * rank / size,
                    n = rows * (rank + 1) / size - rows * rank / size;
      std::vector<float> s(w1.begin() + lo * IN, w1.begin() + (lo + n) * IN);
      std::vector<uint8_t> m(p1.begin() + lo * IN, p1.begin() + (lo + n) * IN);
      ws.push_back(Tensor::from_vector(s, {n, IN}));
      ms.push_back(Tensor::from_vector(m, {n, IN}));
      where.push_back({H, IN, lo, 0});
      first_rows.push_back(lo);
    }
    dist::l1_unstructured(comm(), {&ws[0], &ws[1]}, where, PruneAmount::fraction(0.5),
                          {&ms[0], &ms[1]});
    for (int b = 0; b < 2; ++b) {
      const auto got = ms[b].to_vector<uint8_t>();
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], e1[first_rows[b] * IN + i]);
    }
  }
  // Lists of different lengths are refused before anything is touched.
  Tensor shard = Tensor::from_vector(std::vector<float>(3, 1.0f), {1, 3});
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(3, 1), {1, 3});
  EXPECT_THROW(dist::global_unstructured(comm(), {&shard}, {}, PruneAmount::fraction(0.5), {&mask}),
               Error);
  EXPECT_EQ(mask.to_vector<uint8_t>(), std::vector<uint8_t>(3, 1));
}

TEST(Dist, MismatchedTensorListsAreAnErrorOnEveryRank) {
  if (comm().size() < 2) GTEST_SKIP() << "needs two ranks to disagree";
  Tensor a = Tensor::zeros({4}), b = Tensor::zeros({comm().rank() == 0 ? 5 : 6});
  EXPECT_TRUE(throws_error(
      [&] {
        comm().allreduce({&a, &b});
      },
      "nnops::dist::allreduce", "different tensor lists"));
  std::vector<Tensor*> some = {&a};
  if (comm().rank() == 1) some.push_back(&b);
  EXPECT_TRUE(throws_error([&] { comm().allreduce(some); }, "nnops::dist::allreduce",
                           "different tensor lists"));
  // Nothing is left half-done: the communicator still works.
  Tensor c = Tensor::from_vector(data_of(comm().rank(), 5, 3), {3});
  comm().allreduce({&c});
  EXPECT_TRUE(all_close(c, expected_sum(5, 3), 0, tol()));
}

TEST(Dist, BadArgumentsNameTheCallAndTheRank) {
  Tensor a = Tensor::zeros({4}), i = Tensor::zeros({4}, DType::I32);
  const std::string rank = "rank " + std::to_string(comm().rank());
  EXPECT_TRUE(
      throws_error([&] { comm().broadcast({&a}, comm().size()); }, "nnops::dist::broadcast", rank));
  EXPECT_TRUE(throws_error(
      [&] {
        comm().allreduce({&a, nullptr});
      },
      "nnops::dist::allreduce", rank));
  EXPECT_TRUE(throws_error([&] { comm().allreduce({&i}); }, "nnops::dist::allreduce", "F32"));
  comm().barrier();
}

TEST(Dist, NcclCollectivesOnCudaTensors) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device (the NCCL path needs one)";
  const int n = comm().size(), r = comm().rank();
  Tensor a = on(Device::CUDA, data_of(r, 6, 1000003), {1000003});
  Tensor b = on(Device::CUDA, data_of(r, 7, 7), {7});
  comm().allreduce({&a, &b}, dist::Op::Mean);
  EXPECT_TRUE(all_close(a, expected_sum(6, 1000003, 1.0 / n), 0, 2 * tol()));
  EXPECT_TRUE(all_close(b, expected_sum(7, 7, 1.0 / n), 0, 2 * tol()));
  Tensor c = on(Device::CUDA, data_of(r, 8, 5), {5});
  comm().broadcast({&c}, 0);
  EXPECT_EQ(c.to_vector<float>(), data_of(0, 8, 5));
  const int64_t chunk = 333;
  Tensor in = on(Device::CUDA, data_of(r, 9, chunk * n), {chunk * n});
  Tensor out = poisoned({chunk}, Device::CUDA), all = poisoned({chunk * n}, Device::CUDA);
  comm().reduce_scatter(in, out);
  comm().allgather(out, all);
  EXPECT_TRUE(all_close(all, expected_sum(9, chunk * n), 0, tol()));
}

// Run only by the rank-death check (tests/CMakeLists.txt): rank 1 dies before a collective; the
// launcher must end the job, so rank 0 does not wait forever.
TEST(DistDeath, ARankThatDiesEndsTheJob) {
  if (std::getenv("NNOPS_DIST_DIE") == nullptr) GTEST_SKIP() << "run by dist.rank_death only";
  if (comm().rank() == 1) std::_Exit(3);
  Tensor a = Tensor::zeros({4});
  comm().allreduce({&a});
}

}  // namespace
}  // namespace nnops::test

int main(int argc, char** argv) {
  nnops::dist::Environment mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  // Only rank 0 prints its results; every rank's failures still fail its exit code.
  if (nnops::test::comm().rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  return RUN_ALL_TESTS();
}
