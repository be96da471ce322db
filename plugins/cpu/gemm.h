// Parallel driver of the ISA gemms: work split into tasks of up to kMaxChunkRows weight rows x kChunkTokens tokens,
// each computed into a float32 tile on the stack and handed to an epilogue (bias, conversion, SwiGLU, ...).
#ifndef GPTOSS_CPU_GEMM_H
#define GPTOSS_CPU_GEMM_H

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "isa.h"
#include "thread_pool.h"

namespace gptoss_cpu {

// Tokens per task: enough for the weights of a task (L2-resident) to serve many tokens in prefill.
constexpr int kChunkTokens = 64;
constexpr int kMinChunkRows = 32, kMaxChunkRows = 128;

// Weight rows per task for `rows` rows in all: about 16 tasks per thread to balance them, but long enough that the
// first tile of a task, which nothing prefetched, is a small part of it; a multiple of 8 (every tile's row count,
// and even for the gate/up pairs of MoE).
inline int chunk_rows(int64_t rows) {
    const int64_t rows_per_thread_task = rows / (16 * static_cast<int64_t>(num_threads())) / 8 * 8;
    return static_cast<int>(std::clamp<int64_t>(rows_per_thread_task, kMinChunkRows, kMaxChunkRows));
}

struct GemmTask {
    int problem;  // index into the problems of run_gemm_tasks
    int r0, r1, t0, t1;
};

// Appends the tasks covering `rows` weight rows x `tokens` tokens of one problem, rows outermost.
inline void add_gemm_tasks(std::vector<GemmTask>& tasks, int problem, int rows, int tokens, int chunk) {
    for (int r = 0; r < rows; r += chunk) {
        for (int t = 0; t < tokens; t += kChunkTokens) {
            tasks.push_back({problem, r, std::min(r + chunk, rows), t, std::min(t + kChunkTokens, tokens)});
        }
    }
}

// Runs every task with `gemm`; epilogue(task, c) receives c[(t - t0) * (r1 - r0) + r - r0]. Each thread claims its
// next task before it runs the current one and tells the kernel where that one's weights start (Gemm::next), so
// that the first rows of a task arrive by prefetch rather than by demand misses.
template <class Epilogue>
void run_gemm_tasks(GemmFn gemm, const std::vector<GemmTask>& tasks, const Gemm* problems, Epilogue&& epilogue) {
    const int64_t count = static_cast<int64_t>(tasks.size());
    std::atomic<int64_t> claimed{0};
    parallel_for(num_threads(), 1, [&](int64_t, int64_t) {
        float c[kMaxChunkRows * kChunkTokens];
        for (int64_t i = claimed++; i < count;) {
            const int64_t following = claimed++;
            const GemmTask& task = tasks[i];
            Gemm g = problems[task.problem];
            if (following < count) g.next = weight_row(problems[tasks[following].problem], tasks[following].r0);
            gemm(g, task.r0, task.r1, task.t0, task.t1, c, task.r1 - task.r0);
            epilogue(task, static_cast<const float*>(c));
            i = following;
        }
    });
}

}  // namespace gptoss_cpu

#endif  // GPTOSS_CPU_GEMM_H
