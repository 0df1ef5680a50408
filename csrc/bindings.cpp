// The one pybind11 binding file of cmrvsr_fast._C. Launchers take raw device pointers, shapes and a stream
// (no torch ABI), so the extension builds without torch and works with any torch build.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sstream>
#include <string>
#include <vector>

#include "convlstm.h"
#include "device_info.h"
#include "phase_fusion.h"

#ifndef CMRVSR_CUDA_ARCHS
#define CMRVSR_CUDA_ARCHS ""
#endif

namespace py = pybind11;

static std::vector<int> compiled_archs() {
  // CMRVSR_CUDA_ARCHS is the comma-separated list setup.py passed to nvcc, e.g. "80,86,87,89,90".
  std::vector<int> archs;
  std::stringstream stream(CMRVSR_CUDA_ARCHS);
  std::string item;
  while (std::getline(stream, item, ',')) {
    if (!item.empty()) archs.push_back(std::stoi(item));
  }
  return archs;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "cmrvsr_fast CUDA extension";
  m.def("cuda_runtime_version", &cmrvsr::cuda_runtime_version,
        "CUDA runtime version the extension was linked with (e.g. 13000), -1 if unknown");
  m.def("compiled_archs", &compiled_archs, "SM architectures compiled into the extension, e.g. [80, 86, 90]");
  m.def(
      "device_count",
      []() {
        cmrvsr::DeviceQuery query = cmrvsr::query_devices();
        return py::make_tuple(query.count, query.error);
      },
      "(number of visible CUDA devices, the runtime's error message or '')");
  m.def(
      "convlstm_step",
      [](int dtype, std::uintptr_t h, std::uintptr_t w, std::uintptr_t gx, std::uintptr_t c, std::uintptr_t h_out,
         std::uintptr_t c_out, int directions, int batch, int features, int height, int width, std::uintptr_t stream) {
        return cmrvsr::convlstm_step_launch(static_cast<cmrvsr::DType>(dtype), h, w, gx, c, h_out, c_out, directions,
                                            batch, features, height, width, stream);
      },
      "Launch one fused ConvLSTM step on device pointers (dtype 0 fp32, 1 bf16, 2 fp16); returns '' or the CUDA "
      "error");
  m.def(
      "convlstm_step_kernel",
      [](int dtype, int features) {
        return cmrvsr::convlstm_step_kernel_name(static_cast<cmrvsr::DType>(dtype), features);
      },
      "Which kernel convlstm_step runs for a dtype code and a hidden width");
  m.def(
      "window_conv3x3",
      [](int dtype, std::uintptr_t x, std::uintptr_t frame, std::uintptr_t w, std::uintptr_t bias,
         std::uintptr_t codes, std::uintptr_t maps, std::uintptr_t residual, std::uintptr_t out, int positions,
         int window, int batch, int in_channels, int out_channels, int height, int width, std::uintptr_t stream) {
        return cmrvsr::window_conv3x3_launch(static_cast<cmrvsr::DType>(dtype), x, frame, w, bias, codes, maps,
                                             residual, out, positions, window, batch, in_channels, out_channels,
                                             height, width, stream);
      },
      "Launch the window-decomposed phase fusion on device pointers (0 for absent codes/maps/residual); returns '' "
      "or the CUDA error");
}
