// A small persistent thread pool: parallel_for with dynamic scheduling over the pool's threads and the caller.
#ifndef GPTOSS_CPU_THREAD_POOL_H
#define GPTOSS_CPU_THREAD_POOL_H

#include <cstdint>
#include <memory>
#include <type_traits>

namespace gptoss_cpu {

using RangeCall = void (*)(void* fn, int64_t begin, int64_t end);

void parallel_for_erased(int64_t count, int64_t grain, RangeCall call, void* fn);

// Runs fn(begin, end) over [0, count) in chunks of `grain` items, each chunk claimed by the next free thread. Calls
// from several threads are serialized; a call from inside fn runs on the calling thread alone.
template <class F>
void parallel_for(int64_t count, int64_t grain, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    parallel_for_erased(
        count, grain, [](void* f, int64_t begin, int64_t end) { (*static_cast<Fn*>(f))(begin, end); },
        const_cast<void*>(static_cast<const void*>(std::addressof(fn))));
}

// Threads of the pool, the caller included: set_num_threads(n), else $GPTOSS_CPU_THREADS, else the CPUs this
// process may run on. set_num_threads(0) goes back to that default.
int num_threads();
void set_num_threads(int threads);

}  // namespace gptoss_cpu

#endif  // GPTOSS_CPU_THREAD_POOL_H
