// Umbrella header: the whole public API of nnops.
#pragma once

#include "nnops/activation.hpp"
#include "nnops/attention.hpp"
#include "nnops/device.hpp"
#include "nnops/elementwise.hpp"
#include "nnops/embedding.hpp"
#include "nnops/error.hpp"
#include "nnops/gemm.hpp"
#include "nnops/loss.hpp"
#include "nnops/norm.hpp"
#include "nnops/optim.hpp"
#include "nnops/prune.hpp"
#include "nnops/random.hpp"
#include "nnops/rope.hpp"
#include "nnops/tensor.hpp"
#include "nnops/tensor_ops.hpp"
#include "nnops/version.hpp"
