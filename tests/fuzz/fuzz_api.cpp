// libFuzzer target for the public API: random ops, shapes (zero sizes included), dtypes,
// devices, aliasing, options and amounts. Every call must either succeed with a result that
// passes its check (a double reference for matmul, invariants for the others) or throw
// nnops::Error with its outputs untouched. Crashes, sanitizer reports and hangs fail.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "nnops/nnops.hpp"

namespace {

using namespace nnops;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_api: check failed: %s\n", what);
  std::abort();
}

struct Gen {
  FuzzedDataProvider& p;
  int64_t dim() { return p.ConsumeIntegralInRange<int64_t>(0, 9); }
  float value() {
    switch (p.ConsumeIntegralInRange(0, 15)) {
      case 0:
        return NAN;
      case 1:
        return INFINITY;
      case 2:
        return -INFINITY;
      case 3:
        return 1e4f;
      default:
        return p.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f);
    }
  }
  float option() {
    switch (p.ConsumeIntegralInRange(0, 7)) {
      case 0:
        return NAN;
      case 1:
        return -1.0f;
      case 2:
        return 0.0f;
      case 3:
        return 2.0f;
      default:
        return p.ConsumeFloatingPointInRange<float>(0.0f, 1.0f);
    }
  }
  DType dtype(DType usual) {
    if (p.ConsumeIntegralInRange(0, 15) != 0) return usual;
    return static_cast<DType>(p.ConsumeIntegralInRange(0, 2));
  }
  // A tensor of the shape (or, rarely, a perturbed one), with fuzzed contents.
  Tensor tensor(Shape shape, DType usual) {
    if (p.ConsumeIntegralInRange(0, 31) == 0) return Tensor();  // undefined
    if (p.ConsumeIntegralInRange(0, 15) == 0 && !shape.empty()) shape[0] += 1;
    const DType dt = dtype(usual);
    Tensor t = Tensor::zeros(shape, dt);
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (dt == DType::F32)
        t.data<float>()[i] = value();
      else if (dt == DType::I32)
        t.data<int32_t>()[i] = p.ConsumeIntegralInRange<int32_t>(-101, 10);
      else
        t.data<uint8_t>()[i] = p.ConsumeBool();
    }
    return t;
  }
};

std::vector<unsigned char> bytes_of(const Tensor& t) {
  if (!t.defined() || t.numel() == 0) return {};
  const auto* b = static_cast<const unsigned char*>(t.raw_data());
  return std::vector<unsigned char>(b, b + t.nbytes());
}

bool all_finite(const Tensor& t) {
  if (t.dtype() != DType::F32) return false;
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(t.data<float>()[i]) || std::fabs(t.data<float>()[i]) > 100) return false;
  return true;
}

// Runs `op`; on nnops::Error the outputs must be unchanged.
template <class Op>
bool run(std::vector<Tensor*> outputs, Op op) {
  std::vector<std::vector<unsigned char>> before;
  for (Tensor* t : outputs) before.push_back(bytes_of(*t));
  try {
    op();
    return true;
  } catch (const Error& e) {
    if (std::strncmp(e.what(), "nnops::", 7) != 0) fail("error message does not name the function");
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (bytes_of(*outputs[i]) != before[i]) fail("an output changed although the call threw");
    }
    return false;
  }
}

void fuzz_one(FuzzedDataProvider& p) {
  Gen g{p};
  const int64_t m = g.dim(), n = g.dim(), k = g.dim();
  switch (p.ConsumeIntegralInRange(0, 16)) {
    case 0: {  // matmul against a double reference
      GemmOptions o{p.ConsumeBool(), p.ConsumeBool(), p.ConsumeBool() ? 1.0f : g.value(),
                    p.ConsumeBool() ? 0.0f : g.value()};
      Tensor a = g.tensor(o.trans_a ? Shape{k, m} : Shape{m, k}, DType::F32);
      Tensor b = g.tensor(o.trans_b ? Shape{n, k} : Shape{k, n}, DType::F32);
      Tensor c = g.tensor({m, n}, DType::F32);
      const Tensor c0 = c.defined() ? c.clone() : Tensor();
      Tensor& out = p.ConsumeIntegralInRange(0, 31) == 0 ? a : c;  // sometimes alias a
      if (!run({&out}, [&] { matmul(a, b, out, o); })) return;
      if (!all_finite(a) || !all_finite(b) || !all_finite(c0) || !std::isfinite(o.alpha) ||
          !std::isfinite(o.beta))
        return;
      // The generator may have perturbed a shape: take the sizes from the tensors that ran.
      const int64_t m = out.dim(0), n = out.dim(1), k = o.trans_a ? a.dim(0) : a.dim(1);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0, mag = 0;
          for (int64_t q = 0; q < k; ++q) {
            const double x = a.data<float>()[o.trans_a ? q * m + i : i * k + q];
            const double y = b.data<float>()[o.trans_b ? j * k + q : q * n + j];
            s += x * y;
            mag += std::fabs(x * y);
          }
          const double c_in = o.beta == 0.0f ? 0.0 : o.beta * double(c0.data<float>()[i * n + j]);
          const double ref = o.alpha * s + c_in;
          const double tol = 1e-5 * (std::fabs(o.alpha) * mag + std::fabs(c_in)) + 1e-30;
          if (std::fabs(out.data<float>()[i * n + j] - ref) > tol) {
            std::fprintf(stderr,
                         "c[%lld, %lld] = %.9g, reference %.9g, tolerance %.3g (m=%lld n=%lld "
                         "k=%lld alpha=%g beta=%g)\n",
                         (long long)i, (long long)j, out.data<float>()[i * n + j], ref, tol,
                         (long long)m, (long long)n, (long long)k, o.alpha, o.beta);
            fail("matmul differs from the double reference");
          }
        }
      return;
    }
    case 1: {
      const auto act = static_cast<Activation>(p.ConsumeIntegralInRange(0, 7));
      Tensor x = g.tensor({m, n}, DType::F32), y = g.tensor({m, n}, DType::F32);
      if (!run({&y}, [&] { activation_forward(act, x, y, g.option()); })) return;
      for (int64_t i = 0; i < y.numel(); ++i) {
        const float xi = x.data<float>()[i], yi = y.data<float>()[i];
        if (std::isnan(xi) && !std::isnan(yi))
          fail("NaN input gave a number (PyTorch propagates NaN)");
        if (act == Activation::ReLU && yi < 0) fail("relu < 0");
        if (act == Activation::Sigmoid && (yi < 0 || yi > 1)) fail("sigmoid outside [0, 1]");
      }
      return;
    }
    case 2: {
      Tensor x = g.tensor({m, n + 1}, DType::F32), y = g.tensor({m, n + 1}, DType::F32);
      const bool log = p.ConsumeBool();
      if (!run({&y}, [&] { log ? log_softmax_forward(x, y) : softmax_forward(x, y); })) return;
      if (!all_finite(x) || log) return;
      for (int64_t r = 0; r < m; ++r) {
        double s = 0;
        for (int64_t c = 0; c <= n; ++c) s += y.data<float>()[r * (n + 1) + c];
        if (std::fabs(s - 1.0) > 1e-5) fail("softmax row does not sum to 1");
      }
      return;
    }
    case 3: {
      Tensor logits = g.tensor({m, n + 1}, DType::F32), targets = g.tensor({m}, DType::I32);
      Tensor loss = g.tensor({1}, DType::F32), grad = g.tensor({m, n + 1}, DType::F32);
      const float smoothing = g.option();
      const auto red = static_cast<Reduction>(p.ConsumeIntegralInRange(0, 2));
      run({&loss, &grad},
          [&] { cross_entropy_loss(logits, targets, loss, &grad, red, smoothing); });
      return;
    }
    case 4: {
      Tensor s = g.tensor({m, n + 1}, DType::F32), t = g.tensor({m, n + 1}, DType::F32);
      Tensor loss = g.tensor({1}, DType::F32), grad = g.tensor({m, n + 1}, DType::F32);
      const float temperature = p.ConsumeBool() ? g.option() : g.value();
      if (!run({&loss, &grad}, [&] { kd_loss(s, t, temperature, loss, &grad); })) return;
      // KL >= 0; the float log-probabilities carry ~u relative error, which T^2 scales.
      const double slack = 1e-4 + 1e-6 * double(temperature) * temperature;
      if (all_finite(s) && all_finite(t) && temperature > 0.01f && m > 0 &&
          !(loss.item() >= -slack)) {
        std::fprintf(stderr, "kd_loss %g at T=%g, [%lld, %lld]\n", loss.item(), temperature,
                     (long long)m, (long long)n + 1);
        fail("KL divergence negative");
      }
      return;
    }
    case 5: {
      AdamOptions o;
      o.lr = g.option(), o.beta1 = g.option(), o.beta2 = g.option(),
      o.weight_decay = p.ConsumeBool() ? 0.0f : g.option();
      o.amsgrad = p.ConsumeBool(), o.maximize = p.ConsumeBool(),
      o.decoupled_weight_decay = p.ConsumeBool();
      Tensor param = g.tensor({m, n}, DType::F32), grad = g.tensor({m, n}, DType::F32),
             mask = g.tensor({m, n}, DType::U8);
      AdamState st;
      if (!run({&param}, [&] { adam_step(o, param, grad, st, p.ConsumeBool() ? &mask : nullptr); }))
        return;
      return;
    }
    case 6: {
      Tensor w = g.tensor({m, n}, DType::F32), mask = g.tensor({m, n}, DType::U8);
      const bool by_count = p.ConsumeBool();
      const double fraction = p.ConsumeBool() ? p.ConsumeFloatingPointInRange<double>(-0.5, 1.5)
                                              : p.ConsumeProbability<double>();
      const int64_t count = p.ConsumeIntegralInRange<int64_t>(-2, 100);
      int64_t kept_before = 0;
      if (mask.defined() && mask.dtype() == DType::U8)
        for (int64_t i = 0; i < mask.numel(); ++i) kept_before += mask.data<uint8_t>()[i] != 0;
      const PruneAmount amount =
          by_count ? PruneAmount::count(count) : PruneAmount::fraction(fraction);
      if (!run({&mask}, [&] { l1_unstructured(w, amount, mask); })) return;
      int64_t kept_after = 0;
      for (int64_t i = 0; i < mask.numel(); ++i) kept_after += mask.data<uint8_t>()[i] != 0;
      if (kept_before - kept_after != amount.resolve(kept_before))
        fail("l1_unstructured pruned the wrong count");
      return;
    }
    case 7: {
      const int nn = p.ConsumeIntegralInRange(-1, 5), mm = p.ConsumeIntegralInRange(-1, 5);
      Tensor w = g.tensor({m, n * 2}, DType::F32), mask = g.tensor({m, n * 2}, DType::U8);
      if (!run({&mask}, [&] { nm_structured(w, nn, mm, mask); })) return;
      for (int64_t grp = 0; grp < mask.numel() / mm; ++grp) {
        int kept = 0;
        for (int j = 0; j < mm; ++j) kept += mask.data<uint8_t>()[grp * mm + j] != 0;
        if (kept > nn) fail("nm_structured kept more than n");
      }
      return;
    }
    case 8: {
      Tensor w = g.tensor({m, n, k}, DType::F32), mask = g.tensor({m, n, k}, DType::U8);
      const int pnorm = p.ConsumeIntegralInRange(0, 3), dim = p.ConsumeIntegralInRange(-4, 3);
      run({&mask}, [&] {
        ln_structured(w, PruneAmount::fraction(p.ConsumeFloatingPointInRange<double>(-0.2, 1.2)),
                      pnorm, dim, mask);
      });
      return;
    }
    case 10: {  // copy between two row views of one buffer: exact in place, disjoint, or refused
      Tensor buf = g.tensor({m + n + 1}, DType::F32);
      if (!buf.defined() || buf.dtype() != DType::F32) {
        run({&buf}, [&] { copy(buf, buf); });
        return;
      }
      const int64_t len = std::min<int64_t>(k, buf.numel());
      const int64_t sa = p.ConsumeIntegralInRange<int64_t>(0, buf.numel() - len);
      const int64_t sb = p.ConsumeIntegralInRange<int64_t>(0, buf.numel() - len);
      Tensor a = buf.narrow(sa, len), b = buf.narrow(sb, len);
      const std::vector<float> b_before = b.to_vector<float>();
      const bool partial = len > 0 && sa != sb && sa < sb + len && sb < sa + len;
      if (!run({&buf}, [&] { copy(a, b); })) {
        if (!partial) fail("copy refused views that do not partly overlap");
        return;
      }
      if (partial) fail("copy accepted a partial overlap");
      const std::vector<float> a_after = a.to_vector<float>();
      if (!a_after.empty() &&
          std::memcmp(a_after.data(), b_before.data(), a_after.size() * sizeof(float)) != 0)
        fail("copy did not copy");
      return;
    }
    case 11: {  // argmax against a host scan (NaN first, then the first of the largest)
      Tensor x = g.tensor({m, n + 1}, DType::F32), out = g.tensor({m}, DType::I32);
      if (!run({&out}, [&] { argmax(x, out); })) return;
      const int64_t cols = x.dim(1);
      for (int64_t r = 0; r < x.dim(0); ++r) {
        const float* row = x.data<float>() + r * cols;
        int64_t best = 0;
        for (int64_t c = 1; c < cols; ++c) {
          if (std::isnan(row[best])) break;
          if (std::isnan(row[c]) || row[c] > row[best]) best = c;
        }
        if (out.data<int32_t>()[r] != best) fail("argmax differs from the host scan");
      }
      return;
    }
    case 12: {  // LayerNorm / RMSNorm with fuzzed eps and affine parameters (maybe mis-shaped)
      Tensor x = g.tensor({m, n + 1}, DType::F32), y = g.tensor({m, n + 1}, DType::F32);
      Tensor w = g.tensor({n + 1}, DType::F32), b = g.tensor({n + 1}, DType::F32);
      Tensor mean = g.tensor({m}, DType::F32), rstd = g.tensor({m}, DType::F32);
      const float eps = p.ConsumeBool() ? 1e-5f : g.value();
      if (p.ConsumeBool()) {
        run({&y, &mean, &rstd}, [&] { layer_norm_forward(x, &w, &b, eps, y, &mean, &rstd); });
      } else {
        run({&y, &rstd}, [&] { rms_norm_forward(x, &w, eps, y, &rstd); });
      }
      return;
    }
    case 13: {  // embedding with ids in [-101, 10]: out of range is an error, nothing written
      Tensor ids = g.tensor({m}, DType::I32), table = g.tensor({k + 1, n}, DType::F32);
      Tensor out = g.tensor({m, n}, DType::F32);
      if (!run({&out}, [&] { embedding_forward(ids, table, out); })) return;
      for (int64_t s = 0; s < ids.numel(); ++s) {
        const int32_t v = ids.data<int32_t>()[s];
        if (v < 0 || v >= table.dim(0)) fail("embedding_forward accepted an id out of range");
        if (n > 0 &&
            std::memcmp(out.data<float>() + s * n, table.data<float>() + v * n, n * sizeof(float)))
          fail("embedding_forward row differs from the table");
      }
      return;
    }
    case 14: {  // attention with fuzzed head counts (Hq % Hkv may be nonzero) and lengths
      const int64_t hq = p.ConsumeIntegralInRange(0, 4), hkv = p.ConsumeIntegralInRange(0, 3);
      Tensor q = g.tensor({1, hq, m, k}, DType::F32), kk = g.tensor({1, hkv, n, k}, DType::F32);
      Tensor v = g.tensor({1, hkv, n, k}, DType::F32), out = g.tensor({1, hq, m, k}, DType::F32);
      Tensor lse = g.tensor({1, hq, m}, DType::F32);
      AttentionOptions o;
      o.causal = p.ConsumeBool();
      run({&out, &lse}, [&] { attention_forward(q, kk, v, out, &lse, o); });
      return;
    }
    case 15: {  // rope (odd D refused) and dropout (p outside [0, 1] refused)
      Tensor x = g.tensor({m, n, k}, DType::F32), y = g.tensor({m, n, k}, DType::F32);
      const int64_t offset = p.ConsumeIntegralInRange<int64_t>(-2, 100000);
      if (p.ConsumeBool()) {
        run({&y}, [&] { rope_forward(x, offset, p.ConsumeBool() ? 10000.0f : g.value(), y); });
      } else {
        run({&y}, [&] {
          dropout_forward(x, p.ConsumeFloatingPointInRange<float>(-0.5f, 1.5f),
                          p.ConsumeIntegral<uint64_t>(), y);
        });
      }
      return;
    }
    case 16: {  // gated activations: x [m, 2h] -> y [m, h] (odd widths refused)
      Tensor x = g.tensor({m, n * 2 + (p.ConsumeBool() ? 1 : 0)}, DType::F32);
      Tensor y = g.tensor({m, n}, DType::F32);
      run({&y}, [&] { gated_activation_forward(Activation::SiLU, x, y); });
      return;
    }
    default: {
      Tensor t = g.tensor({m, n}, DType::F32);
      const float lo = g.value(), hi = g.value();
      if (!run({&t}, [&] { fill_uniform(t, lo, hi, p.ConsumeIntegral<uint64_t>()); })) return;
      for (int64_t i = 0; i < t.numel(); ++i) {
        const float v = t.data<float>()[i];
        if (!(v >= lo && (v < hi || (lo == hi && v == lo)))) fail("fill_uniform outside [lo, hi)");
      }
      return;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider p(data, size);
  fuzz_one(p);
  return 0;
}
