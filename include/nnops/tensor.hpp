// nnops::Tensor: a dense, contiguous, row-major array on one device. Owning tensors hold
// 64-byte aligned memory; wrap() makes a non-owning view of memory the caller owns (read-only
// when that memory is const); narrow() views a range of rows and keeps the owner alive.
// Moving is cheap and leaves the source undefined; copying is explicit (clone(), copy()).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "nnops/bf16.hpp"
#include "nnops/device.hpp"
#include "nnops/error.hpp"

namespace nnops {

using Shape = std::vector<int64_t>;

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::F32;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::I32;
};
template <>
struct dtype_of<uint8_t> {
  static constexpr DType value = DType::U8;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::I64;
};
template <>
struct dtype_of<bf16> {
  static constexpr DType value = DType::BF16;
};

std::string shape_to_string(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;  // undefined: no storage, defined() is false
  Tensor(Tensor&& other) noexcept { steal(other); }
  Tensor& operator=(Tensor&& other) noexcept {
    if (this != &other) steal(other);
    return *this;
  }
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  ~Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);

  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::CPU) {
    return from_host(values.data(), values.size(), dtype_of<T>::value, shape, device);
  }
  // Non-owning view: the caller keeps `ptr` alive (and on `device`) while the view is used.
  // A view of const memory is read-only: an op that would write it throws nnops::Error.
  template <class T>
  static Tensor wrap(T* ptr, const Shape& shape, Device device = Device::CPU) {
    return wrap_raw(const_cast<std::remove_const_t<T>*>(ptr),
                    dtype_of<std::remove_const_t<T>>::value, shape, device, std::is_const_v<T>);
  }

  template <class T>
  std::vector<T> to_vector() const {
    check_dtype(dtype_of<T>::value, "nnops::Tensor::to_vector");
    std::vector<T> out(static_cast<size_t>(numel_));
    copy_to_host(out.data());
    return out;
  }
  // 1-element tensors only; waits for the device.
  template <class T = float>
  T item() const {
    check_dtype(dtype_of<T>::value, "nnops::Tensor::item");
    check_single("nnops::Tensor::item");
    T value{};
    copy_to_host(&value);
    return value;
  }

  Tensor to(Device device) const;
  Tensor clone() const;
  // Rows [start, start + length) along dimension 0, sharing memory with this tensor (and keeping
  // its storage alive); read-only when this tensor is.
  Tensor narrow(int64_t start, int64_t length) const;
  // The same elements under another shape of the same element count, sharing memory (and
  // keeping the storage alive), like torch's view() of a contiguous tensor; read-only when this
  // tensor is.
  Tensor reshape(const Shape& shape) const;

  bool defined() const { return data_ != nullptr || defined_empty_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  // The GPU ordinal of a CUDA tensor (the device current when it was made, or the one owning
  // wrapped memory); 0 on the CPU.
  int device_index() const { return device_index_; }
  bool is_view() const { return defined() && (!storage_ || offset_view_); }
  bool is_read_only() const { return read_only_; }

  // Mutable access throws for a read-only tensor; the const overloads never do.
  template <class T>
  T* data() {
    check_dtype(dtype_of<T>::value, "nnops::Tensor::data");
    check_writable("nnops::Tensor::data");
    return static_cast<T*>(data_);
  }
  template <class T>
  const T* data() const {
    check_dtype(dtype_of<T>::value, "nnops::Tensor::data");
    return static_cast<const T*>(data_);
  }
  void* raw_data() {
    check_writable("nnops::Tensor::raw_data");
    return data_;
  }
  const void* raw_data() const { return data_; }

  std::string describe() const;  // e.g. "F32 [64, 32] on CPU"

 private:
  static Tensor empty_for(const Shape& shape, DType dtype, Device device, const char* fn);
  static Tensor from_host(const void* src, size_t count, DType dtype, const Shape& shape,
                          Device device);
  static Tensor wrap_raw(void* ptr, DType dtype, const Shape& shape, Device device, bool read_only);
  void copy_to_host(void* dst) const;
  void check_dtype(DType expected, const char* fn) const;
  void check_single(const char* fn) const;
  void check_writable(const char* fn) const;
  Tensor copy_to(Device device, const char* fn) const;
  void steal(Tensor& other) noexcept;  // take other's contents and leave it undefined

  std::shared_ptr<void> storage_;  // null for views and undefined tensors
  void* data_ = nullptr;
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  int device_index_ = 0;
  bool defined_empty_ = false;  // a defined tensor with zero elements has no data pointer
  bool read_only_ = false;      // wrapped from const memory (or a view of such a tensor)
  bool offset_view_ = false;    // a narrow() view into another tensor's storage
};

}  // namespace nnops
