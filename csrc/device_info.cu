// Build and runtime facts of the CUDA extension: which CUDA runtime it links, which GPU architectures it
// carries, and what the driver reports. The fused kernels (ConvLSTM step, phase fusion) join this folder.
#include <cuda_runtime.h>

#include "device_info.h"

namespace cmrvsr {

int cuda_runtime_version() {
  int version = 0;
  return cudaRuntimeGetVersion(&version) == cudaSuccess ? version : -1;
}

DeviceQuery query_devices() {
  DeviceQuery result{0, ""};
  cudaError_t status = cudaGetDeviceCount(&result.count);
  if (status != cudaSuccess) {
    result.count = 0;
    result.error = cudaGetErrorString(status);
    cudaGetLastError();  // clear the sticky error so later calls are not poisoned
  }
  return result;
}

}  // namespace cmrvsr
