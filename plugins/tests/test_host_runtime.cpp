// Tests of the host build's fiber runtime (host/cuda_host.h): small CUDA-style kernels run on the CPU.
#include <vector>

#include "check.h"
#include "host/cuda_host.h"

// cudaGetLastError() is `expected`; read once (CHECK_EQ evaluates its arguments twice, and reading clears it).
#define CHECK_LAST_ERROR(expected)                                    \
    do {                                                              \
        const int last_error_ = static_cast<int>(cudaGetLastError()); \
        CHECK_EQ(last_error_, static_cast<int>(expected));            \
    } while (0)

namespace {

constexpr unsigned kFullMask = 0xffffffffu;

float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
    return x;
}

// out[block] = sum over the block's threads of their linear index, by warp shuffles then shared memory; every
// thread checks that it reads the total after the barrier.
__global__ void block_sum_kernel(int* out, int* wrong_reads) {
    __shared__ float warp_totals[32];
    __shared__ float total;
    const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    const float sum = warp_sum(static_cast<float>(linear));
    if (linear % 32 == 0) warp_totals[linear / 32] = sum;
    __syncthreads();
    if (linear == 0) {
        total = 0.0f;
        for (unsigned w = 0; w < (threads + 31) / 32; ++w) total += warp_totals[w];
    }
    __syncthreads();
    if (total != static_cast<float>(threads * (threads - 1) / 2)) atomicAdd(wrong_reads, 1);
    if (linear == 0) out[blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z)] = static_cast<int>(total);
}

// Threads past `stay` return at once; the others meet at a barrier, which must not wait for the exited ones.
__global__ void early_exit_kernel(unsigned stay, int* passed) {
    if (threadIdx.x >= stay) return;
    __syncthreads();
    atomicAdd(passed, 1);
}

// Half of a warp shuffles while the other half waits at a barrier: neither can finish.
__global__ void divergent_kernel(float* out) {
    if (threadIdx.x < 16) {
        out[threadIdx.x] = __shfl_xor_sync(kFullMask, 1.0f, 1);
    } else {
        __syncthreads();
    }
}

}  // namespace

TEST(host_runtime_sums_blocks_by_shuffles_and_barriers) {
    const dim3 grid(3, 2, 2);
    const dim3 block(8, 4, 3);  // 96 threads: three warps, indices in three dimensions
    std::vector<int> out(12, -1);
    int wrong_reads = 0;
    GPTOSS_LAUNCH(grid, block, 0, nullptr, block_sum_kernel)(out.data(), &wrong_reads);
    CHECK_LAST_ERROR(cudaSuccess);
    for (int value : out) CHECK_EQ(value, 96 * 95 / 2);
    CHECK_EQ(wrong_reads, 0);
}

TEST(host_runtime_barrier_ignores_exited_threads) {
    int passed = 0;
    GPTOSS_LAUNCH(2, 64, 0, nullptr, early_exit_kernel)(20u, &passed);
    CHECK_LAST_ERROR(cudaSuccess);
    CHECK_EQ(passed, 40);
}

TEST(host_runtime_reports_deadlock_and_recovers) {
    std::vector<float> out(32, 0.0f);
    GPTOSS_LAUNCH(1, 32, 0, nullptr, divergent_kernel)(out.data());
    CHECK_LAST_ERROR(cudaErrorLaunchFailure);
    CHECK_LAST_ERROR(cudaSuccess);  // read once, then cleared
    int passed = 0;
    GPTOSS_LAUNCH(1, 32, 0, nullptr, early_exit_kernel)(32u, &passed);
    CHECK_LAST_ERROR(cudaSuccess);
    CHECK_EQ(passed, 32);
}

TEST(host_runtime_rejects_bad_launch_shapes) {
    int passed = 0;
    GPTOSS_LAUNCH(1, 1025, 0, nullptr, early_exit_kernel)(0u, &passed);
    CHECK_LAST_ERROR(cudaErrorInvalidConfiguration);
    GPTOSS_LAUNCH(dim3(0), 32, 0, nullptr, early_exit_kernel)(0u, &passed);
    CHECK_LAST_ERROR(cudaErrorInvalidConfiguration);
    CHECK_EQ(passed, 0);
}
