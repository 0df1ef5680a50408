// The pybind11 binding file of cmrvsr_fast._cpu, the CPU kernels. Like the CUDA extension it takes raw pointers,
// shapes, strides and a thread count (no torch ABI): cmrvsr_fast/ops/winograd.py checks the tensors and passes
// them with torch.get_num_threads(). The GIL is released while a kernel runs, so threads sharing an Engine (the
// DICOM node's workers) run side by side.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "winograd.h"

namespace py = pybind11;
using cmrvsr::cpu::Image;

static float* as_floats(uintptr_t address) { return reinterpret_cast<float*>(address); }

static Image image(uintptr_t data, int64_t batch, int64_t channels, int64_t height, int64_t width, int64_t stride_b,
                   int64_t stride_y, int64_t stride_x) {
  return Image{as_floats(data), batch, channels, height, width, stride_b, stride_y, stride_x};
}

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "cmrvsr_fast CPU kernels: Winograd F(4x4, 3x3) transforms, float32, channels-last";
  m.attr("output_tile") = cmrvsr::cpu::kOutputTile;
  m.attr("input_tile") = cmrvsr::cpu::kInputTile;
  m.def(
      "input_transform",
      [](uintptr_t x, int64_t batch, int64_t channels, int64_t height, int64_t width, int64_t stride_b,
         int64_t stride_y, int64_t stride_x, uintptr_t bt, uintptr_t v, int threads) {
        cmrvsr::cpu::input_transform(image(x, batch, channels, height, width, stride_b, stride_y, stride_x),
                                     as_floats(bt), as_floats(v), threads);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "output_transform",
      [](uintptr_t mt, uintptr_t at, uintptr_t bias, uintptr_t out, int64_t batch, int64_t channels, int64_t height,
         int64_t width, int64_t stride_b, int64_t stride_y, int64_t stride_x, uintptr_t addend, int threads) {
        cmrvsr::cpu::output_transform(as_floats(mt), as_floats(at), as_floats(bias),
                                      image(out, batch, channels, height, width, stride_b, stride_y, stride_x),
                                      addend == 0 ? nullptr : as_floats(addend), threads);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "output_lstm_cell",
      [](uintptr_t mt, uintptr_t at, uintptr_t bias, uintptr_t c, uintptr_t h, int64_t batch, int64_t features,
         int64_t height, int64_t width, int64_t stride_b, int64_t stride_y, int64_t stride_x, int threads) {
        cmrvsr::cpu::output_lstm_cell(as_floats(mt), as_floats(at), as_floats(bias), as_floats(c),
                                      image(h, batch, features, height, width, stride_b, stride_y, stride_x),
                                      threads);
      },
      py::call_guard<py::gil_scoped_release>());
}
