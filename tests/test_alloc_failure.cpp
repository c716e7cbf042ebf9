// Allocation failure injected at every point of every public op, the way SQLite tests malloc
// failure: this binary replaces the global operator new (through which the library makes every
// host allocation: tensors, scratch vectors, GEMM packing buffers) with one that fails the N-th
// allocation of a call, for N = 1, 2, ... until the call completes. Each call must either succeed
// or throw nnops::Error with its outputs untouched; an exception escaping an OpenMP region would
// end the process (std::terminate), failing the whole suite.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "test_util.hpp"

namespace {

// Allocations left before the one that fails; -1: never fail.
std::atomic<long> g_countdown{-1};

bool should_fail() {
  long left = g_countdown.load(std::memory_order_relaxed);
  while (left >= 0) {
    if (g_countdown.compare_exchange_weak(left, left - 1, std::memory_order_relaxed))
      return left == 0;
  }
  return false;
}

void* allocate(std::size_t bytes, std::size_t alignment) {
  if (should_fail()) return nullptr;
  if (bytes == 0) bytes = 1;
  if (alignment <= alignof(std::max_align_t)) return std::malloc(bytes);
  return std::aligned_alloc(alignment, (bytes + alignment - 1) / alignment * alignment);
}

void* allocate_or_throw(std::size_t bytes, std::size_t alignment) {
  void* p = allocate(bytes, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t n) {
  return allocate_or_throw(n, 0);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return allocate(n, 0);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return allocate_or_throw(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(p);
}

namespace nnops::test {
namespace {

// The bytes of every output a call may write (and the optimizer step counts), read while no
// failure is armed.
struct Outputs {
  std::vector<const Tensor*> tensors;
  std::vector<const int64_t*> counters;
  std::vector<std::vector<uint8_t>> snapshot() const {
    std::vector<std::vector<uint8_t>> out;
    for (const Tensor* t : tensors) {
      std::vector<uint8_t> bytes(t->nbytes());
      if (t->defined() && t->nbytes() > 0) std::memcpy(bytes.data(), t->raw_data(), bytes.size());
      out.push_back(std::move(bytes));
      out.back().push_back(t->defined());
    }
    for (const int64_t* c : counters) out.push_back({static_cast<uint8_t>(*c)});
    return out;
  }
};

// Fails allocation 1, 2, ... of `call` in turn until a call makes fewer allocations than the
// failing one; every failing call must throw an nnops::Error and leave the outputs as they were.
// Returns the number of allocation points swept.
long sweep(const std::string& name, const std::function<void()>& call, const Outputs& outputs) {
  for (long n = 0;; ++n) {
    const auto before = outputs.snapshot();
    bool threw = false;
    std::string message;
    g_countdown.store(n);
    try {
      call();
    } catch (const Error& e) {
      threw = true;
      message = e.what();
    } catch (const std::exception& e) {
      g_countdown.store(-1);
      ADD_FAILURE() << name << ": allocation " << n + 1 << ": not an nnops::Error: " << e.what();
      return n;
    }
    const bool reached = g_countdown.exchange(-1) < 0;
    if (threw) {
      EXPECT_EQ(message.rfind("nnops::", 0), 0u) << name << ": " << message;
      EXPECT_NE(message.find("memory"), std::string::npos) << name << ": " << message;
      if (outputs.snapshot() != before) {
        ADD_FAILURE() << name << ": allocation " << n + 1 << " failed (" << message
                      << ") and an output was written";
        return n;
      }
    }
    if (!reached) return n;  // the call completed before its (n+1)-th allocation
    if (n > 10000) {
      ADD_FAILURE() << name << ": more than 10000 allocations";
      return n;
    }
  }
}

Tensor filled(const Shape& shape, uint64_t seed, DType dtype = DType::F32) {
  Tensor t = Tensor::empty(shape);
  fill_uniform(t, -1.0f, 1.0f, seed);
  if (dtype == DType::F32) return t;
  Tensor c = Tensor::empty(shape, dtype);
  cast(c, t);
  return c;
}

// Big enough that every op takes its parallel path (OpenMP regions run with all threads).
constexpr int64_t kRows = 64, kIn = 300, kOut = 500;

TEST(AllocationFailure, EveryOpFailsCleanlyAtEveryAllocation) {
  long points = 0;
  auto run = [&](const std::string& name, const std::function<void()>& call, Outputs outputs) {
    SCOPED_TRACE(name);
    points += sweep(name, call, outputs);
  };

  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string d = dt == DType::F32 ? " F32" : " BF16";
    Tensor x = filled({kRows, kIn}, 1, dt), w = filled({kOut, kIn}, 2, dt);
    Tensor dy = filled({kRows, kOut}, 3, dt), bias = filled({kOut}, 4);
    Tensor y = filled({kRows, kOut}, 5, dt), dx = filled({kRows, kIn}, 6, dt);
    Tensor dw = filled({kOut, kIn}, 7, dt), db = filled({kOut}, 8, dt);
    Tensor c = filled({kIn, kIn}, 9, dt);
    run("matmul" + d, [&] { matmul(x, x, c, {true, false, 1.0f, 0.5f}); }, {{&c}, {}});
    run("linear_forward" + d, [&] { linear_forward(x, w, &bias, y); }, {{&y}, {}});
    run("linear_backward" + d, [&] { linear_backward(x, w, dy, &dx, dw, &db); },
        {{&dx, &dw, &db}, {}});
    Tensor big = filled({200000}, 10, dt), out = filled({200000}, 11, dt);
    run("activation_forward" + d, [&] { activation_forward(Activation::GELU, big, out); },
        {{&out}, {}});
    run("activation_backward" + d, [&] { activation_backward(Activation::SiLU, big, big, out); },
        {{&out}, {}});
    run("add_scaled" + d, [&] { add_scaled(out, big, 0.5f); }, {{&out}, {}});
    Tensor logits = filled({kRows, 1000}, 12, dt), probs = filled({kRows, 1000}, 13, dt);
    Tensor grad = filled({kRows, 1000}, 14, dt), loss = Tensor::zeros({1});
    run("softmax_forward" + d, [&] { softmax_forward(logits, probs); }, {{&probs}, {}});
    run("softmax_backward" + d, [&] { softmax_backward(probs, logits, grad); }, {{&grad}, {}});
    run("log_softmax_forward" + d, [&] { log_softmax_forward(logits, probs); }, {{&probs}, {}});
    run("log_softmax_backward" + d, [&] { log_softmax_backward(probs, logits, grad); },
        {{&grad}, {}});
    run("mse_loss" + d, [&] { mse_loss(logits, probs, loss, &grad); }, {{&loss, &grad}, {}});
    std::vector<int32_t> labels(kRows);
    for (int64_t i = 0; i < kRows; ++i) labels[i] = static_cast<int32_t>(i * 7 % 1000);
    Tensor targets = Tensor::from_vector(labels, {kRows});
    run("cross_entropy_loss" + d,
        [&] { cross_entropy_loss(logits, targets, loss, &grad, Reduction::Mean, 0.1f); },
        {{&loss, &grad}, {}});
    run("kd_loss" + d, [&] { kd_loss(logits, probs, 4.0f, loss, &grad); }, {{&loss, &grad}, {}});
    // Argument vectors are built before the sweep: their allocations are the caller's.
    const std::vector<Tensor*> grads = {&grad};
    run("clip_grad_norm" + d, [&] { clip_grad_norm(grads, 0.01f); }, {{&grad}, {}});
    Tensor norm = Tensor::zeros({1});
    run("clip_grad_norm to a tensor" + d, [&] { clip_grad_norm(grads, 0.001f, norm); },
        {{&grad, &norm}, {}});

    // Optimizers: a first step creates the state, which must not appear on failure.
    Tensor p = filled({kOut, kIn}, 15), p2 = filled({kIn}, 16);
    Tensor g = filled({kOut, kIn}, 17, dt), g2 = filled({kIn}, 18, dt);
    Tensor working = filled({kOut, kIn}, 19, DType::BF16);
    fill(p, 1.0f);
    AdamState st, st2;
    AdamOptions adamw;
    adamw.amsgrad = true;
    adamw.weight_decay = 0.01f;
    run("adam_step" + d,
        [&] {
          AdamState fresh;
          adam_step(adamw, p, g, fresh, nullptr, &working);
        },
        {{&p, &working}, {}});
    const std::vector<Tensor*> params = {&p, &p2};
    const std::vector<const Tensor*> gs = {&g, &g2};
    AdamState a, b;
    const std::vector<AdamState*> fresh_states = {&a, &b}, states = {&st, &st2};
    run("adam_step multi-tensor" + d,
        [&] {
          a = AdamState{}, b = AdamState{};
          adam_step(adamw, params, gs, fresh_states);
        },
        {{&p, &p2}, {}});
    adam_step(adamw, params, gs, states);
    run("adam_step with state" + d, [&] { adam_step(adamw, params, gs, states); },
        {{&p, &p2, &st.exp_avg, &st.exp_avg_sq, &st.max_exp_avg_sq}, {&st.step, &st2.step}});
    SgdOptions sgd;
    sgd.momentum = 0.9f;
    SgdState sst;
    run("sgd_step" + d, [&] { sgd_step(sgd, p, g, sst, nullptr, &working); },
        {{&p, &working, &sst.momentum_buffer}, {}});
  }

  // Pruning: two million weights take the wide radix-select path, on two threads.
  Tensor w = filled({2000, 1000}, 20), w2 = filled({300, 77}, 21);
  Tensor mask = Tensor::zeros({2000, 1000}, DType::U8), mask2 = Tensor::zeros({300, 77}, DType::U8);
  const std::vector<uint8_t> ones(2000 * 1000, 1), ones2(300 * 77, 1);
  auto reset = [&] {
    copy(mask, Tensor::from_vector(ones, {2000, 1000}));
    copy(mask2, Tensor::from_vector(ones2, {300, 77}));
  };
  reset();
  run("l1_unstructured", [&] { l1_unstructured(w, PruneAmount::fraction(0.3), mask); },
      {{&mask}, {}});
  reset();
  const std::vector<const Tensor*> ws = {&w, &w2};
  const std::vector<Tensor*> masks = {&mask, &mask2};
  run("global_unstructured", [&] { global_unstructured(ws, PruneAmount::fraction(0.3), masks); },
      {{&mask, &mask2}, {}});
  reset();
  run("ln_structured", [&] { ln_structured(w, PruneAmount::fraction(0.2), 2, 0, mask); },
      {{&mask}, {}});
  reset();
  run("nm_structured", [&] { nm_structured(w, 2, 4, mask); }, {{&mask}, {}});
  run("apply_mask", [&] { apply_mask(w, mask); }, {{&w}, {}});
  run("sparsity", [&] { sparsity(mask); }, {{}, {}});
  run("count_nonzero", [&] { count_nonzero(mask); }, {{}, {}});

  // Transformer ops: scratch (per-chunk partial sums, sort buffers, angle tables, attention
  // accumulators) comes before the first write.
  {
    Tensor x = filled({64, 256}, 30), wt = filled({256}, 31), bs = filled({256}, 32);
    Tensor y = filled({64, 256}, 33), mean = filled({64}, 34), rstd = filled({64}, 35);
    Tensor dx = filled({64, 256}, 36), dwt = filled({256}, 37), dbs = filled({256}, 38);
    run("layer_norm_forward", [&] { layer_norm_forward(x, &wt, &bs, 1e-5f, y, &mean, &rstd); },
        {{&y, &mean, &rstd}, {}});
    run("layer_norm_backward",
        [&] { layer_norm_backward(x, &wt, mean, rstd, y, &dx, &dwt, &dbs); },
        {{&dx, &dwt, &dbs}, {}});
    run("rms_norm_backward", [&] { rms_norm_backward(x, &wt, rstd, y, &dx, &dwt); },
        {{&dx, &dwt}, {}});
    std::vector<int32_t> ids(640);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i * 37 % 100);
    Tensor indices = Tensor::from_vector(ids, {640});
    Tensor table = filled({100, 256}, 39), rows = filled({640, 256}, 40), dtable = filled({100, 256}, 41);
    run("embedding_forward", [&] { embedding_forward(indices, table, rows); }, {{&rows}, {}});
    run("embedding_backward", [&] { embedding_backward(indices, rows, dtable); }, {{&dtable}, {}});
    Tensor xr = filled({4, 8, 128, 64}, 42), yr = filled({4, 8, 128, 64}, 43);
    run("rope_forward", [&] { rope_forward(xr, 7, 10000.0f, yr); }, {{&yr}, {}});
    Tensor gx = filled({64, 512}, 44), gy = filled({64, 256}, 45), gdx = filled({64, 512}, 46);
    run("gated_activation_backward",
        [&] { gated_activation_backward(Activation::SiLU, gx, gy, gdx); }, {{&gdx}, {}});
    run("dropout_forward", [&] { dropout_forward(gx, 0.1f, 3, gdx); }, {{&gdx}, {}});
    Tensor q = filled({1, 4, 96, 32}, 47), k = filled({1, 2, 96, 32}, 48), v = filled({1, 2, 96, 32}, 49);
    Tensor o = filled({1, 4, 96, 32}, 50), l = filled({1, 4, 96}, 51);
    Tensor dq = filled({1, 4, 96, 32}, 52), dk = filled({1, 2, 96, 32}, 53), dv = filled({1, 2, 96, 32}, 54);
    AttentionOptions causal;
    causal.causal = true;
    run("attention_forward", [&] { attention_forward(q, k, v, o, &l, causal); }, {{&o, &l}, {}});
    run("attention_backward",
        [&] { attention_backward(q, k, v, o, l, o, dq, dk, dv, causal); }, {{&dq, &dk, &dv}, {}});
    Tensor q16 = filled({1, 4, 96, 32}, 55, DType::BF16), o16 = filled({1, 4, 96, 32}, 56, DType::BF16);
    run("attention_forward BF16", [&] { attention_forward(q16, k, v, o16, nullptr); }, {{&o16}, {}});
  }

  // Tensors and the element-wise utilities.
  Tensor a = filled({1000, 333}, 22), b = filled({1000, 333}, 23),
         idx = Tensor::zeros({1000}, DType::I32);
  Tensor half = Tensor::empty({1000, 333}, DType::BF16);
  run("copy", [&] { copy(b, a); }, {{&b}, {}});
  run("cast", [&] { cast(half, a); }, {{&half}, {}});
  run("argmax", [&] { argmax(a, idx); }, {{&idx}, {}});
  run("fill_uniform", [&] { fill_uniform(b, -2.0f, 2.0f, 7); }, {{&b}, {}});
  run("fill_normal", [&] { fill_normal(b, 0.0f, 1.0f, 8); }, {{&b}, {}});
  run("Tensor::clone", [&] { Tensor t = a.clone(); }, {{}, {}});
  run("Tensor::to", [&] { Tensor t = a.to(Device::CPU); }, {{}, {}});
  const Shape shape = {300, 77};
  run("Tensor::from_vector", [&] { Tensor t = Tensor::from_vector(ones2, shape); }, {{}, {}});
  run("Tensor::zeros", [&] { Tensor t = Tensor::zeros(shape); }, {{}, {}});
  // Every sweep above failed at least its first allocation or made none.
  EXPECT_GT(points, 50);
  std::printf("allocation points swept: %ld\n", points);
}

}  // namespace
}  // namespace nnops::test
