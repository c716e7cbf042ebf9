// nnops::dist over MPI: bucketed allreduce (blocking and not), broadcast, reduce-scatter,
// allgather and barrier on CPU tensors; CUDA tensors go to distributed/nccl.cpp. Every call first
// agrees on the tensor list with one small reduction, so a rank that passes other shapes gets an
// error instead of leaving the others waiting.
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "dist_impl.hpp"
#include "nnops/elementwise.hpp"

namespace nnops::dist {

namespace {

constexpr int64_t kMaxCount = int64_t(1) << 30;  // elements per MPI call (counts are ints)

const char* dtype_name(DType d) {
  return to_string(d);
}

// FNV-1a over the words that must agree across ranks.
uint64_t fingerprint(const std::vector<int64_t>& words) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t w : words) h = (h ^ static_cast<uint64_t>(w)) * 1099511628211ull;
  return h;
}

}  // namespace

void check_mpi(int status, const char* fn, int rank) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw Error(std::string(fn) + ": rank " + std::to_string(rank) +
              ": MPI error: " + std::string(text, static_cast<size_t>(length)));
}

Device Communicator::Impl::validate(const char* fn, const std::vector<Tensor*>& tensors,
                                    bool float_only, int64_t extra, size_t first_written) const {
  std::vector<int64_t> words = {static_cast<int64_t>(tensors.size()), extra};
  Device device = Device::CPU;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor* t = tensors[i];
    if (t == nullptr || !t->defined()) {
      throw Error(std::string(fn) + ": rank " + std::to_string(rank) + ": tensors[" +
                  std::to_string(i) + "] is null or undefined");
    }
    if (float_only && t->dtype() != DType::F32) {
      throw Error(std::string(fn) + ": rank " + std::to_string(rank) + ": tensors[" +
                  std::to_string(i) + "] is " + dtype_name(t->dtype()) + " but must be F32");
    }
    if (i >= first_written && t->is_read_only()) {
      throw Error(std::string(fn) + ": rank " + std::to_string(rank) + ": tensors[" +
                  std::to_string(i) + "] is read-only");
    }
    if (i == 0) device = t->device();
    if (t->device() != device) {
      throw Error(std::string(fn) + ": rank " + std::to_string(rank) +
                  ": the tensors are on different devices");
    }
    words.push_back(static_cast<int64_t>(t->dtype()));
    words.push_back(static_cast<int64_t>(t->device()));
    for (int64_t d : t->shape()) words.push_back(d);
    words.push_back(-1);
  }
  agree(fn, fingerprint(words));
  return device;
}

void Communicator::Impl::agree(const char* fn, uint64_t fp) const {
  // One reduction of (fp, -fp) with MAX yields the largest and the smallest fingerprint.
  const int64_t v = static_cast<int64_t>(fp >> 1);
  int64_t both[2] = {v, -v}, out[2];
  check_mpi(MPI_Allreduce(both, out, 2, MPI_INT64_T, MPI_MAX, comm), fn, rank);
  if (out[0] != -out[1]) {
    throw Error(std::string(fn) + ": rank " + std::to_string(rank) +
                ": the ranks passed different tensor lists (count, shapes, dtypes or devices "
                "differ)");
  }
}

namespace {

// A group of tensors reduced together: either packed into one bucket buffer or (a tensor larger
// than a bucket) reduced in place.
struct Unit {
  std::vector<Tensor*> tensors;
  int64_t elements = 0;
  bool in_place = false;
};

std::vector<Unit> plan_buckets(const std::vector<Tensor*>& tensors, size_t bucket_bytes) {
  std::vector<Unit> units;
  const int64_t bucket_elems = std::max<int64_t>(1, static_cast<int64_t>(bucket_bytes / 4));
  Unit current;
  for (Tensor* t : tensors) {
    if (t->numel() == 0) continue;
    if (t->numel() > bucket_elems) {
      units.push_back(Unit{{t}, t->numel(), true});
      continue;
    }
    if (current.elements + t->numel() > bucket_elems) {
      units.push_back(std::move(current));
      current = Unit{};
    }
    current.tensors.push_back(t);
    current.elements += t->numel();
  }
  if (current.elements > 0) units.push_back(std::move(current));
  return units;
}

}  // namespace

struct Request::State {
  // Keeps the communicator (and its spare buffers) alive until the request is done.
  std::shared_ptr<const Communicator::Impl> impl;
  std::vector<MPI_Request> requests;
  std::vector<std::vector<float>> buffers;  // one per packed unit
  std::vector<Unit> units;
  float scale = 1.0f;
  bool done = false;
  void finish();
};

void Request::State::finish() {
  if (done) return;
  done = true;
  check_mpi(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE),
            "nnops::dist::Request::wait", impl->rank);
  size_t b = 0;
  for (Unit& u : units) {
    if (u.in_place) {
      if (scale != 1.0f) add_scaled(*u.tensors[0], *u.tensors[0], scale, 0.0f);
      continue;
    }
    const float* src = buffers[b++].data();  // unpacked below; returned to the spares after
    for (Tensor* t : u.tensors) {
      float* dst = t->data<float>();
      const int64_t n = t->numel();
      if (scale == 1.0f) {
        std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      } else {
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i] * scale;
      }
      src += n;
    }
  }
  for (auto& buf : buffers) impl->spare_buffers.push_back(std::move(buf));
  buffers.clear();
}

Request::Request() = default;
Request::Request(std::unique_ptr<State> state) : state_(std::move(state)) {}
Request::Request(Request&&) noexcept = default;
Request& Request::operator=(Request&& other) noexcept {
  if (this != &other) {
    if (state_) {
      try {
        state_->finish();
      } catch (...) {  // an error of an abandoned request has no caller left to hear it
      }
    }
    state_ = std::move(other.state_);
  }
  return *this;
}
Request::~Request() {
  if (state_) {
    try {
      state_->finish();
    } catch (...) {
    }
  }
}
void Request::wait() {
  if (state_) state_->finish();
}
bool Request::pending() const {
  return state_ && !state_->done;
}

Request Communicator::Impl::allreduce_cpu(const char* fn, const std::vector<Tensor*>& tensors,
                                          Op op) const {
  auto state = std::make_unique<Request::State>();
  state->impl = shared_from_this();
  state->units = plan_buckets(tensors, bucket_bytes);
  state->scale = op == Op::Mean ? 1.0f / static_cast<float>(size) : 1.0f;
  for (Unit& u : state->units) {
    float* data;
    if (u.in_place) {
      data = u.tensors[0]->data<float>();
    } else {
      std::vector<float> buf;
      if (!spare_buffers.empty()) {
        buf = std::move(spare_buffers.back());
        spare_buffers.pop_back();
      }
      buf.resize(static_cast<size_t>(u.elements));  // keeps its capacity across steps
      state->buffers.push_back(std::move(buf));
      data = state->buffers.back().data();
      for (Tensor* t : u.tensors) {
        std::memcpy(data, t->data<float>(), t->nbytes());
        data += t->numel();
      }
      data = state->buffers.back().data();
    }
    for (int64_t off = 0; off < u.elements; off += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, u.elements - off));
      MPI_Request r;
      check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data + off, count, MPI_FLOAT, MPI_SUM, comm, &r), fn,
                rank);
      state->requests.push_back(r);
    }
  }
  return Request(std::move(state));
}

Communicator::Communicator(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Communicator::Impl::~Impl() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  nccl.reset();  // before the MPI communicator it was made over
  if (owned && !finalized) MPI_Comm_free(&comm);
}

Communicator Communicator::split(int color, int key) const {
  const char* fn = "nnops::dist::Communicator::split";
  if (color < 0) {
    throw Error(std::string(fn) + ": rank " + std::to_string(impl_->rank) + ": color " +
                std::to_string(color) + " is negative");
  }
  MPI_Comm part = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(impl_->comm, color, key, &part), fn, impl_->rank);
  Communicator c = from_mpi(&part);
  c.impl_->owned = true;
  c.impl_->bucket_bytes = impl_->bucket_bytes;
  return c;
}

Communicator Communicator::world() {
  const MPI_Comm world = MPI_COMM_WORLD;  // a macro for a constant in OpenMPI
  return from_mpi(&world);
}

Communicator Communicator::from_mpi(const void* mpi_comm) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) throw Error("nnops::dist::Communicator: MPI is not initialised (Environment)");
  auto impl = std::make_shared<Impl>();
  impl->comm = *static_cast<const MPI_Comm*>(mpi_comm);
  MPI_Comm_set_errhandler(impl->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(impl->comm, &impl->rank);
  MPI_Comm_size(impl->comm, &impl->size);
  MPI_Comm local;
  check_mpi(
      MPI_Comm_split_type(impl->comm, MPI_COMM_TYPE_SHARED, impl->rank, MPI_INFO_NULL, &local),
      "nnops::dist::Communicator", impl->rank);
  MPI_Comm_rank(local, &impl->local_rank);
  MPI_Comm_free(&local);
  return Communicator(std::move(impl));
}

int Communicator::rank() const {
  return impl_->rank;
}
int Communicator::size() const {
  return impl_->size;
}
int Communicator::local_rank() const {
  return impl_->local_rank;
}
size_t Communicator::bucket_bytes() const {
  return impl_->bucket_bytes;
}
void Communicator::set_bucket_bytes(size_t bytes) {
  if (bytes < 4) throw Error("nnops::dist::Communicator::set_bucket_bytes: at least 4 bytes");
  impl_->bucket_bytes = bytes;
}

void Communicator::allreduce(const std::vector<Tensor*>& tensors, Op op) {
  allreduce_async(tensors, op).wait();
}

Request Communicator::allreduce_async(const std::vector<Tensor*>& tensors, Op op) {
  const char* fn = "nnops::dist::allreduce";
  const Device device = impl_->validate(fn, tensors, true, static_cast<int64_t>(op));
  if (device == Device::CUDA) {
    impl_->allreduce_cuda(fn, tensors, op);
    return Request();
  }
  return impl_->allreduce_cpu(fn, tensors, op);
}

void Communicator::broadcast(const std::vector<Tensor*>& tensors, int root) {
  const char* fn = "nnops::dist::broadcast";
  if (root < 0 || root >= impl_->size) {
    throw Error(std::string(fn) + ": rank " + std::to_string(impl_->rank) + ": root " +
                std::to_string(root) + " is not a rank of " + std::to_string(impl_->size));
  }
  const Device device = impl_->validate(fn, tensors, false, root);
  if (device == Device::CUDA) return impl_->broadcast_cuda(fn, tensors, root);
  for (Tensor* t : tensors) {
    auto* bytes = static_cast<char*>(t->raw_data());
    const int64_t total = static_cast<int64_t>(t->nbytes());
    for (int64_t off = 0; off < total; off += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, total - off));
      check_mpi(MPI_Bcast(bytes + off, count, MPI_BYTE, root, impl_->comm), fn, impl_->rank);
    }
  }
}

void Communicator::reduce_scatter(const Tensor& in, Tensor& out, Op op) {
  const char* fn = "nnops::dist::reduce_scatter";
  Tensor& in_mut = const_cast<Tensor&>(in);  // validated as read; never written
  const Device device =
      impl_->validate(fn, {&in_mut, &out}, true, static_cast<int64_t>(op), /*first_written=*/1);
  if (in.numel() != out.numel() * impl_->size) {
    throw Error(std::string(fn) + ": rank " + std::to_string(impl_->rank) + ": in has " +
                std::to_string(in.numel()) + " elements but must hold size() = " +
                std::to_string(impl_->size) + " chunks of out's " + std::to_string(out.numel()));
  }
  if (out.numel() > kMaxCount) throw Error(std::string(fn) + ": chunks of 2^30 elements at most");
  if (device == Device::CUDA) return impl_->reduce_scatter_cuda(fn, in, out, op);
  if (out.numel() == 0) return;
  check_mpi(
      MPI_Reduce_scatter_block(in.data<float>(), out.data<float>(), static_cast<int>(out.numel()),
                               MPI_FLOAT, MPI_SUM, impl_->comm),
      fn, impl_->rank);
  if (op == Op::Mean) add_scaled(out, out, 1.0f / static_cast<float>(impl_->size), 0.0f);
}

void Communicator::allgather(const Tensor& in, Tensor& out) {
  const char* fn = "nnops::dist::allgather";
  Tensor& in_mut = const_cast<Tensor&>(in);
  const Device device = impl_->validate(fn, {&in_mut, &out}, true, 0, /*first_written=*/1);
  if (out.numel() != in.numel() * impl_->size) {
    throw Error(std::string(fn) + ": rank " + std::to_string(impl_->rank) + ": out has " +
                std::to_string(out.numel()) + " elements but must hold size() = " +
                std::to_string(impl_->size) + " copies of in's " + std::to_string(in.numel()));
  }
  if (in.numel() > kMaxCount) throw Error(std::string(fn) + ": chunks of 2^30 elements at most");
  if (device == Device::CUDA) return impl_->allgather_cuda(fn, in, out);
  if (in.numel() == 0) return;
  check_mpi(MPI_Allgather(in.data<float>(), static_cast<int>(in.numel()), MPI_FLOAT,
                          out.data<float>(), static_cast<int>(in.numel()), MPI_FLOAT, impl_->comm),
            fn, impl_->rank);
}

void Communicator::barrier() {
  check_mpi(MPI_Barrier(impl_->comm), "nnops::dist::barrier", impl_->rank);
}

Environment::Environment(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "nnops::dist::Environment",
            -1);
  owns_ = true;
}

Environment::~Environment() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_ && !finalized) MPI_Finalize();
}

}  // namespace nnops::dist
