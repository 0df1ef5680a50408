#pragma once
#include <string>

namespace cmrvsr {

struct DeviceQuery {
  int count;          // visible CUDA devices (0 when the driver or a device is missing)
  std::string error;  // the runtime's message when the query failed, empty otherwise
};

int cuda_runtime_version();   // e.g. 13000 for CUDA 13.0; -1 if the runtime cannot answer
DeviceQuery query_devices();

}  // namespace cmrvsr
