#pragma once

namespace kvwarden::kernels {

// Kernels report errors with this plain code (no Abseil in kernels/, so nvcc and any
// framework can include the headers). The daemon maps it to absl::Status.
enum class KernelStatus : int {
  kOk = 0,
  kInvalidArgument = 1,  // sizes or pointers the kernel cannot work with
  kDeviceError = 2,      // a CUDA call failed (launch, copy, no device)
  kNotCompiled = 3,      // the CUDA path was asked for in a build without nvcc
};

}  // namespace kvwarden::kernels
