// The synthetic tasks: inputs from N(0, 1); targets from a fixed random two-layer tanh network
// of the inputs plus Gaussian noise (regression), or the argmax of its noisy outputs
// (classification). Everything is drawn with Philox seeds, so a seed gives the same data on
// every device and every run.
#pragma once

#include <nnops/nnops.hpp>

#include "options.hpp"

namespace train {

struct Split {
  nnops::Tensor x;  // [rows, in]
  nnops::Tensor y;  // regression: F32 [rows, out]; classification: I32 [rows]
  int64_t rows() const { return x.dim(0); }
};

struct Dataset {
  Split train, heldout;
};

struct DataSpec {
  Task task;
  int64_t in, out, train_samples, heldout_samples;
  float noise;
  uint64_t seed;
};

Dataset make_dataset(const DataSpec& spec, nnops::Device device);

}  // namespace train
