// Version of the kernel library; the TensorRT plugin version is its major number.
#include "kernel_common.cuh"

extern "C" GPTOSS_EXPORT const char* gptoss_kernels_version(void) { return "1.0.0"; }
