// nnops::Tensor: allocation, transfers and views, through the backend of the tensor's device.
#include "nnops/tensor.hpp"

#include <limits>
#include <sstream>
#include <utility>

#include "backend.hpp"
#include "nnops/cuda.hpp"

namespace nnops {

std::string shape_to_string(const Shape& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

namespace {

int64_t checked_numel(const Shape& shape, DType dtype, const char* fn) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      throw Error(std::string(fn) + ": shape " + shape_to_string(shape) + " has a negative size");
    if (d != 0 &&
        n > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(dtype_size(dtype)) / d) {
      throw Error(std::string(fn) + ": shape " + shape_to_string(shape) + " is too large");
    }
    n *= d;
  }
  return n;
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return empty_for(shape, dtype, device, "nnops::Tensor::empty");
}

Tensor Tensor::empty_for(const Shape& shape, DType dtype, Device device, const char* fn) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  return detail::guarded(fn, [&]() -> Tensor {
    Tensor t;
    t.numel_ = checked_numel(shape, dtype, fn);
    t.shape_ = shape;
    t.dtype_ = dtype;
    t.device_ = device;
    if (t.numel_ == 0) {  // no memory, and no GPU needed, but the thread's GPU all the same
      if (device == Device::CUDA) t.device_index_ = cuda::current_device();
      t.defined_empty_ = true;
      return t;
    }
    detail::Backend& backend = detail::backend_for(device, fn);
    const int index = backend.current_device_index();
    t.device_index_ = index;
    void* ptr = detail::guarded(fn, [&] { return backend.allocate(t.nbytes()); });
    // Freed on the device it came from, whichever device the last owner's thread is on.
    t.storage_ =
        std::shared_ptr<void>(ptr, [&backend, index](void* p) { backend.deallocate(p, index); });
    t.data_ = ptr;
    return t;
  });
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty_for(shape, dtype, device, "nnops::Tensor::zeros");
  if (t.numel_ > 0)
    detail::backend_for(device, "nnops::Tensor::zeros").fill_zero(t.data_, t.nbytes());
  return t;
}

Tensor Tensor::from_host(const void* src, size_t count, DType dtype, const Shape& shape,
                         Device device) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  return detail::guarded("nnops::Tensor::from_vector", [&]() -> Tensor {
    const char* fn = "nnops::Tensor::from_vector";
    const int64_t n = checked_numel(shape, dtype, fn);
    if (static_cast<int64_t>(count) != n) {
      throw Error(std::string(fn) + ": " + std::to_string(count) + " values do not fill shape " +
                  shape_to_string(shape) + " (" + std::to_string(n) + " elements)");
    }
    Tensor t = empty_for(shape, dtype, device, fn);
    if (n > 0) detail::backend_for(device, fn).copy_from_host(t.data_, src, t.nbytes());
    return t;
  });
}

Tensor Tensor::wrap_raw(void* ptr, DType dtype, const Shape& shape, Device device, bool read_only) {
  const char* fn = "nnops::Tensor::wrap";
  Tensor t;
  t.numel_ = checked_numel(shape, dtype, fn);
  if (ptr == nullptr && t.numel_ > 0) throw Error(std::string(fn) + ": pointer is null");
  if (device == Device::CUDA) {  // fail early without a GPU
    detail::Backend& backend = detail::backend_for(device, fn);
    t.device_index_ = ptr ? backend.pointer_device_index(ptr) : backend.current_device_index();
  }
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  t.data_ = t.numel_ > 0 ? ptr : nullptr;
  t.defined_empty_ = t.numel_ == 0;
  t.read_only_ = read_only;
  return t;
}

void Tensor::steal(Tensor& other) noexcept {
  storage_ = std::move(other.storage_);
  data_ = std::exchange(other.data_, nullptr);
  shape_ = std::move(other.shape_);
  other.shape_.clear();
  numel_ = std::exchange(other.numel_, 0);
  dtype_ = std::exchange(other.dtype_, DType::F32);
  device_ = std::exchange(other.device_, Device::CPU);
  device_index_ = std::exchange(other.device_index_, 0);
  defined_empty_ = std::exchange(other.defined_empty_, false);
  read_only_ = std::exchange(other.read_only_, false);
  offset_view_ = std::exchange(other.offset_view_, false);
}

Tensor Tensor::narrow(int64_t start, int64_t length) const {
  const char* fn = "nnops::Tensor::narrow";
  if (!defined()) throw Error(std::string(fn) + ": the tensor is undefined");
  if (ndim() == 0) throw Error(std::string(fn) + ": the tensor has no dimension 0");
  const int64_t rows = shape_[0];
  if (start < 0 || length < 0 || start > rows || length > rows - start) {
    throw Error(std::string(fn) + ": rows [" + std::to_string(start) + ", " +
                std::to_string(start) + " + " + std::to_string(length) + ") are outside " +
                shape_to_string(shape_));
  }
  Tensor t;
  t.shape_ = shape_;
  t.shape_[0] = length;
  t.numel_ = rows == 0 ? 0 : numel_ / rows * length;
  t.dtype_ = dtype_;
  t.device_ = device_;
  t.device_index_ = device_index_;
  t.read_only_ = read_only_;
  if (t.numel_ == 0) {
    t.defined_empty_ = true;
    return t;
  }
  t.storage_ = storage_;  // keeps the owner's memory alive (null for a wrapped tensor)
  t.offset_view_ = true;
  t.data_ = static_cast<char*>(data_) +
            static_cast<size_t>(start) * static_cast<size_t>(numel_ / rows) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  const char* fn = "nnops::Tensor::reshape";
  if (!defined()) throw Error(std::string(fn) + ": the tensor is undefined");
  int64_t count = 1;
  bool overflow = false;
  for (int64_t d : shape) {
    if (d < 0) {
      throw Error(std::string(fn) + ": " + shape_to_string(shape) + " has a negative dimension");
    }
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / d) overflow = true;
    count *= d;
  }
  if (overflow || count != numel_) {
    throw Error(std::string(fn) + ": " + shape_to_string(shape_) + " (" + std::to_string(numel_) +
                " elements) cannot be viewed as " + shape_to_string(shape));
  }
  Tensor t;
  t.shape_ = shape;
  t.numel_ = numel_;
  t.dtype_ = dtype_;
  t.device_ = device_;
  t.device_index_ = device_index_;
  t.read_only_ = read_only_;
  t.defined_empty_ = defined_empty_;
  t.storage_ = storage_;  // keeps the owner's memory alive (null for a wrapped tensor)
  t.offset_view_ = storage_ != nullptr;
  t.data_ = data_;
  return t;
}

void Tensor::copy_to_host(void* dst) const {
  const char* fn = "nnops::Tensor::to_vector";
  if (!defined()) throw Error("nnops::Tensor: the tensor is undefined");
  detail::Backend& backend = detail::backend_for(device_, fn);
  const detail::DeviceGuard on_device(backend, device_index_);
  if (numel_ > 0) backend.copy_to_host(dst, data_, nbytes());
  backend.raise_device_errors();  // a synchronising call: errors kernels recorded surface here
}

Tensor Tensor::to(Device device) const {
  return copy_to(device, "nnops::Tensor::to");
}

Tensor Tensor::copy_to(Device device, const char* fn) const {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  return detail::guarded(fn, [&]() -> Tensor {
    if (!defined()) throw Error(std::string(fn) + ": the tensor is undefined");
    // A CUDA source is read on its own GPU; a copy within CUDA stays there (as torch's .to()).
    detail::Backend& source = detail::backend_for(device_, fn);
    const detail::DeviceGuard on_device(source, device_index_);
    Tensor out = empty_for(shape_, dtype_, device, fn);
    if (device == device_) {
      if (numel_ > 0) source.copy_within(out.data_, data_, nbytes());
    } else if (device_ == Device::CPU) {
      if (numel_ > 0) detail::backend_for(device, fn).copy_from_host(out.data_, data_, nbytes());
    } else {
      if (numel_ > 0) source.copy_to_host(out.data_, data_, nbytes());
      source.raise_device_errors();  // to(Device::CPU) synchronises
    }
    return out;
  });
}

Tensor Tensor::clone() const {
  return copy_to(device_, "nnops::Tensor::clone");
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  const int j = i < 0 ? i + n : i;
  if (j < 0 || j >= n) {
    throw Error("nnops::Tensor::dim: index " + std::to_string(i) + " is out of range for shape " +
                shape_to_string(shape_));
  }
  return shape_[static_cast<size_t>(j)];
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return std::string(to_string(dtype_)) + " " + shape_to_string(shape_) + " on " +
         to_string(device_);
}

void Tensor::check_dtype(DType expected, const char* fn) const {
  if (!defined()) throw Error(std::string(fn) + ": the tensor is undefined");
  if (dtype_ != expected) {
    throw Error(std::string(fn) + ": the tensor is " + to_string(dtype_) + " but " +
                to_string(expected) + " was requested");
  }
}

void Tensor::check_writable(const char* fn) const {
  if (read_only_) {
    throw Error(std::string(fn) + ": the tensor (" + describe() +
                ") is read-only (wrapped from const memory)");
  }
}

void Tensor::check_single(const char* fn) const {
  if (numel_ != 1) {
    throw Error(std::string(fn) + ": the tensor has " + std::to_string(numel_) +
                " elements but item() needs exactly 1");
  }
}

}  // namespace nnops
