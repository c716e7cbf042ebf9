// A tensor-parallel group's collectives (see tensor_group.hpp).
#include "tensor_group.hpp"

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace shards {

using nnops::DType;
using nnops::Tensor;

void TensorGroup::sum(Tensor& partial) {
  const auto t0 = std::chrono::steady_clock::now();
  comm_.allreduce({&partial}, nnops::dist::Op::Sum);
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double TensorGroup::sum(double value) {
  Tensor mine = Tensor::from_vector(std::vector<float>{static_cast<float>(value)}, {1});
  Tensor all = Tensor::empty({size()}, DType::F32);
  comm_.allgather(mine, all);
  double total = 0.0;
  for (float v : all.to_vector<float>()) total += v;
  return total;
}

int64_t TensorGroup::sum_count(int64_t value) {
  const auto v = static_cast<uint64_t>(value);
  Tensor digits = Tensor::from_vector(
      std::vector<float>{float(v & 0xFFFF), float((v >> 16) & 0xFFFF), float(v >> 32)}, {3});
  Tensor all = Tensor::empty({3 * size()}, DType::F32);
  comm_.allgather(digits, all);
  const auto d = all.to_vector<float>();
  uint64_t total = 0;
  for (int r = 0; r < size(); ++r) {
    total += static_cast<uint64_t>(d[3 * r]) + (static_cast<uint64_t>(d[3 * r + 1]) << 16) +
             (static_cast<uint64_t>(d[3 * r + 2]) << 32);
  }
  return static_cast<int64_t>(total);
}

Tensor TensorGroup::stack(const Tensor& shard) {
  // Through the host, in FP32 (allgather's type; U8 values are exact in it): once per model.
  const Tensor host = shard.to(nnops::Device::CPU);
  std::vector<float> values;
  if (host.dtype() == DType::U8) {
    const auto bytes = host.to_vector<uint8_t>();
    values.assign(bytes.begin(), bytes.end());
  } else {
    values = host.to_vector<float>();
  }
  Tensor mine = Tensor::from_vector(values, {shard.numel()});
  Tensor all = Tensor::empty({shard.numel() * size()}, DType::F32);
  comm_.allgather(mine, all);
  if (host.dtype() != DType::U8) return all.to(shard.device());
  const auto f = all.to_vector<float>();
  return Tensor::from_vector(std::vector<uint8_t>(f.begin(), f.end()), {all.numel()},
                             shard.device());
}

ParallelGroups make_groups(bool data_parallel, int t) {
  nnops::dist::Communicator world = nnops::dist::Communicator::world();
  const int size = world.size(), rank = world.rank();
  if (size % t != 0 || (!data_parallel && size != t)) {
    throw std::invalid_argument("--tensor-parallel " + std::to_string(t) + " under " +
                                std::to_string(size) + " ranks: the world must be " +
                                (data_parallel
                                     ? "a multiple of " + std::to_string(t) + " ranks"
                                     : std::to_string(t) + " ranks (or add --data-parallel)"));
  }
  TensorGroup tensor(world.split(rank / t, rank % t));
  nnops::dist::Communicator data = t > 1 ? world.split(rank % t, rank / t) : world;
  return {world, data, std::move(tensor)};
}

}  // namespace shards
