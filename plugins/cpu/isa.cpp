// Choice of the ISA table, and the small entry points of gptoss_cpu_kernels.h (version, threads, ISA, read).
#include "isa.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gptoss_cpu_kernels.h"
#include "thread_pool.h"

namespace gptoss_cpu {
namespace {

const Isa* best() {
    __builtin_cpu_init();  // we may run from a static initializer, before libgcc's own
    if (avx512::digits_supported()) return &avx512::kIsaDigits;
    if (avx512::supported()) return avx512::bf16_supported() ? &avx512::kIsaBf16 : &avx512::kIsa;
    if (avx2::supported()) return &avx2::kIsa;
    return &scalar::kIsa;
}

// The table called `name` if this CPU can run it, else nullptr.
const Isa* by_name(const char* name) {
    if (!name) return nullptr;
    if (std::strcmp(name, "avx512") == 0) return avx512::supported() ? best() : nullptr;
    if (std::strcmp(name, "avx2") == 0) return avx2::supported() ? &avx2::kIsa : nullptr;
    if (std::strcmp(name, "scalar") == 0) return &scalar::kIsa;
    return nullptr;
}

const Isa* initial() {
    const Isa* chosen = by_name(std::getenv("GPTOSS_CPU_ISA"));
    return chosen ? chosen : best();
}

std::atomic<const Isa*> g_isa{initial()};

constexpr size_t kReadChunk = 32 * 8 * 1440;  // floats per read task (1.4 MiB, whole tiles)

}  // namespace

const Isa& isa() { return *g_isa.load(std::memory_order_relaxed); }

bool set_isa(const char* name) {
    const Isa* chosen = by_name(name);
    if (chosen) g_isa = chosen;
    return chosen != nullptr;
}

}  // namespace gptoss_cpu

extern "C" {

GPTOSS_EXPORT const char* gptoss_kernels_version(void) { return "1.0.0"; }

GPTOSS_EXPORT int gptoss_cpu_num_threads(void) { return gptoss_cpu::num_threads(); }

GPTOSS_EXPORT void gptoss_cpu_set_num_threads(int num_threads) { gptoss_cpu::set_num_threads(num_threads); }

GPTOSS_EXPORT const char* gptoss_cpu_isa(void) { return gptoss_cpu::isa().name; }

GPTOSS_EXPORT int gptoss_cpu_set_isa(const char* name) {
    return gptoss_cpu::set_isa(name) ? 0 : gptoss_cpu::kInvalidValue;
}

GPTOSS_EXPORT float gptoss_cpu_read(const float* data, size_t count) {
    using gptoss_cpu::kReadChunk;
    const auto read = gptoss_cpu::isa().read;
    const int64_t chunks = static_cast<int64_t>((count + kReadChunk - 1) / kReadChunk);
    std::vector<float> sums(chunks);
    gptoss_cpu::parallel_for(chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            sums[i] = read(data + i * kReadChunk, std::min(kReadChunk, count - i * kReadChunk));
        }
    });
    float total = 0.0f;
    for (float s : sums) total += s;
    return total;
}

}  // extern "C"
