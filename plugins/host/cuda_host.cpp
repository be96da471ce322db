// Fiber runtime of the host build (see cuda_host.h): runs a kernel launch on the calling OS thread.
//
// Blocks run one after another. The threads of a block are fibers that run until they block: at __syncthreads a
// fiber waits until every live thread of its block has arrived, at a warp shuffle until every lane of its warp has
// published its value. The last one to arrive releases the others and goes on; a waiting fiber switches to the next
// runnable one, round robin. When none can run while some are alive (a barrier or shuffle that not every thread
// reaches), the launch fails with cudaErrorLaunchFailure and a message on stderr.
// Launches are serialized: shared memory is static storage, and the state below belongs to the running block.
#include "host/cuda_host.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <mutex>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

// ---------------------------------------------------------------- stack switch
// A switched-out fiber is its stack pointer. gptoss_switch_stack saves the callee-saved registers and its return
// address on the current stack, stores the stack pointer in *save, loads `resume` and restores what was saved there,
// so it returns into the fiber that saved it. (ucontext's swapcontext does the same plus a signal-mask system call,
// which made the kernel tests ten times slower.) A new fiber's stack holds such a frame that returns into its entry.
extern "C" void gptoss_switch_stack(void** save, void* resume);

#if defined(__x86_64__)
asm(R"(
    .text
    .globl gptoss_switch_stack
    .hidden gptoss_switch_stack
    .type gptoss_switch_stack, @function
gptoss_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gptoss_switch_stack, .-gptoss_switch_stack
)");
// Frame words from the stack pointer up: r15 r14 r13 r12 rbx rbp, the return address, and a pad word that puts
// the stack pointer at 8 mod 16 on entry, as after a call.
constexpr int kFrameWords = 8;
constexpr int kReturnWord = 6;
#elif defined(__aarch64__)
asm(R"(
    .text
    .globl gptoss_switch_stack
    .hidden gptoss_switch_stack
    .type gptoss_switch_stack, @function
gptoss_switch_stack:
    sub sp, sp, #160
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp d8, d9, [sp, #80]
    stp d10, d11, [sp, #96]
    stp d12, d13, [sp, #112]
    stp d14, d15, [sp, #128]
    stp x29, x30, [sp, #144]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp d8, d9, [sp, #80]
    ldp d10, d11, [sp, #96]
    ldp d12, d13, [sp, #112]
    ldp d14, d15, [sp, #128]
    ldp x29, x30, [sp, #144]
    add sp, sp, #160
    ret
    .size gptoss_switch_stack, .-gptoss_switch_stack
)");
// Frame words from the stack pointer up: x19-x28, d8-d15, x29 and x30 (the return address).
constexpr int kFrameWords = 20;
constexpr int kReturnWord = 19;
#else
#error "the host kernels switch fibers with x86-64 or aarch64 assembly"
#endif

namespace gptoss {
namespace host {
namespace {

constexpr int kWarpLanes = 32;
constexpr int kMaxThreads = 1024;           // per block, as on the GPU
constexpr size_t kStackBytes = 128 * 1024;  // per fiber, above an inaccessible guard
constexpr size_t kGuardBytes = 64 * 1024;   // a multiple of every page size Linux uses

enum class Wait { kNone, kBarrier, kShuffle, kDone };

// A stack: a fiber's, or the scheduler's thread stack (learned, for AddressSanitizer, by the first fiber it starts).
struct Stack {
    const void* bottom = nullptr;
    size_t size = 0;
};

// A new fiber's stack pointer: a frame of zeroed registers that gptoss_switch_stack "returns" from into entry.
void* new_frame(const Stack& stack, void (*entry)()) {
    const uintptr_t top = (reinterpret_cast<uintptr_t>(stack.bottom) + stack.size) & ~uintptr_t{15};
    void** frame = reinterpret_cast<void**>(top) - kFrameWords;
    std::fill(frame, frame + kFrameWords, nullptr);
    frame[kReturnWord] = reinterpret_cast<void*>(entry);
    return frame;
}

struct Fiber {
    void* sp;  // while switched out
    Stack stack;
    void* fake_stack;  // AddressSanitizer's fake stack while switched out
    uint3 index;       // threadIdx
    Wait wait;
    unsigned shuffles;  // shuffles done; their parity picks the warp's buffer
};

// Values published for the current shuffle of a warp, double-buffered: a lane that has read its partner may publish
// its next value while slower lanes still read this one.
struct Warp {
    float value[2][kWarpLanes];
    int arrived[2];
};

// State of the running block.
struct Block {
    Fiber fibers[kMaxThreads];
    Warp warps[kMaxThreads / kWarpLanes];
    int threads = 0;
    int current = 0;
    int live = 0;        // threads not done
    int at_barrier = 0;  // threads waiting at __syncthreads
    void* scheduler_sp = nullptr;
    Stack scheduler_stack;
    void* scheduler_fake_stack = nullptr;
    const char* failure = nullptr;
    void (*body)(void*) = nullptr;
    void* closure = nullptr;
};

std::mutex launch_mutex;
Block block;
thread_local cudaError_t last_error = cudaSuccess;

// ---------------------------------------------------------------- AddressSanitizer fiber annotations

#if defined(__SANITIZE_ADDRESS__)
void before_switch(void** fake_stack, const Stack& to) {
    __sanitizer_start_switch_fiber(fake_stack, to.bottom, to.size);
}
void after_switch(void* fake_stack, Stack* from) {
    __sanitizer_finish_switch_fiber(fake_stack, from ? &from->bottom : nullptr, from ? &from->size : nullptr);
}
#else
void before_switch(void**, const Stack&) {}
void after_switch(void*, Stack*) {}
#endif

// ---------------------------------------------------------------- scheduling

Fiber& current() { return block.fibers[block.current]; }

// The next fiber after the current one that can run, round robin; -1 when none can.
int next_runnable() {
    for (int step = 1; step <= block.threads; ++step) {
        const int i = (block.current + step) % block.threads;
        if (block.fibers[i].wait == Wait::kNone) return i;
    }
    return -1;
}

// Leaves the current fiber (waiting or done) for the next runnable one, or for the scheduler when none can run.
void switch_away() {
    Fiber& self = current();
    void** fake_stack = self.wait == Wait::kDone ? nullptr : &self.fake_stack;  // a done fiber's is freed
    const int next = next_runnable();
    if (next < 0) {
        before_switch(fake_stack, block.scheduler_stack);
        gptoss_switch_stack(&self.sp, block.scheduler_sp);
    } else {
        block.current = next;
        threadIdx = block.fibers[next].index;
        before_switch(fake_stack, block.fibers[next].stack);
        gptoss_switch_stack(&self.sp, block.fibers[next].sp);
    }
    after_switch(self.fake_stack, nullptr);
}

void release(Wait waiting, int first, int count) {
    for (int i = first; i < first + count; ++i) {
        if (block.fibers[i].wait == waiting) block.fibers[i].wait = Wait::kNone;
    }
}

void release_barrier_if_complete() {
    if (block.at_barrier == 0 || block.at_barrier < block.live) return;
    block.at_barrier = 0;
    release(Wait::kBarrier, 0, block.threads);
}

void fiber_main() {
    after_switch(nullptr, block.current == 0 ? &block.scheduler_stack : nullptr);  // fiber 0 starts from it
    block.body(block.closure);
    current().wait = Wait::kDone;
    --block.live;
    release_barrier_if_complete();
    switch_away();
}

// Maps the fiber stacks, once per process.
bool map_stacks() {
    const size_t slot = kGuardBytes + kStackBytes;
    void* base = mmap(nullptr, kMaxThreads * slot, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return false;
    for (int i = 0; i < kMaxThreads; ++i) {
        char* guard = static_cast<char*>(base) + i * slot;
        if (mprotect(guard, kGuardBytes, PROT_NONE) != 0) return false;
        block.fibers[i].stack = {guard + kGuardBytes, kStackBytes};
    }
    return true;
}

// Runs block blockIdx to completion; false (block.failure says why) when its threads cannot all finish.
bool run_block() {
    for (int i = 0; i < block.threads; ++i) {
        Fiber& f = block.fibers[i];
        f.sp = new_frame(f.stack, fiber_main);
        f.fake_stack = nullptr;
        f.wait = Wait::kNone;
        f.shuffles = 0;
    }
    for (Warp& w : block.warps) w.arrived[0] = w.arrived[1] = 0;
    block.current = 0;
    block.live = block.threads;
    block.at_barrier = 0;
    threadIdx = block.fibers[0].index;
    before_switch(&block.scheduler_fake_stack, block.fibers[0].stack);
    gptoss_switch_stack(&block.scheduler_sp, block.fibers[0].sp);
    after_switch(block.scheduler_fake_stack, nullptr);
    if (block.live > 0 && !block.failure) {
        block.failure = "deadlock: threads wait at a __syncthreads or shuffle that others never reach";
    }
    return !block.failure;
}

cudaError_t run_launch(dim3 grid, dim3 shape, size_t dynamic_shared_bytes) {
    static const bool stacks_mapped = map_stacks();
    const size_t threads = static_cast<size_t>(shape.x) * shape.y * shape.z;
    if (!stacks_mapped) return cudaErrorLaunchFailure;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > kMaxThreads ||
        dynamic_shared_bytes != 0) {  // dynamic shared memory has no host form
        return cudaErrorInvalidConfiguration;
    }
    block.threads = static_cast<int>(threads);
    for (unsigned i = 0; i < threads; ++i) {
        block.fibers[i].index = {i % shape.x, i / shape.x % shape.y, i / (shape.x * shape.y)};
    }
    block.failure = nullptr;
    gridDim = grid;
    blockDim = shape;
    for (unsigned z = 0; z < grid.z; ++z) {
        for (unsigned y = 0; y < grid.y; ++y) {
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx = {x, y, z};
                if (!run_block()) {
                    std::fprintf(stderr, "gptoss host kernels: launch failed in block (%u, %u, %u): %s\n", x, y, z,
                                 block.failure);
                    return cudaErrorLaunchFailure;
                }
            }
        }
    }
    return cudaSuccess;
}

}  // namespace

void sync_threads() {
    current().wait = Wait::kBarrier;
    ++block.at_barrier;
    release_barrier_if_complete();
    if (current().wait == Wait::kBarrier) switch_away();
}

float shuffle_xor(unsigned mask, float value, int lane_mask) {
    Fiber& self = current();
    const int first = block.current / kWarpLanes * kWarpLanes;
    const int lanes = std::min(kWarpLanes, block.threads - first);
    const int lane = block.current - first;
    const int partner = lane ^ lane_mask;
    if (mask != 0xffffffffu || partner >= lanes) {
        block.failure = "__shfl_xor_sync with a partial mask or a partner lane outside the block";
        return value;
    }
    Warp& warp = block.warps[block.current / kWarpLanes];
    const unsigned parity = self.shuffles++ & 1u;
    warp.value[parity][lane] = value;
    if (++warp.arrived[parity] == lanes) {
        warp.arrived[parity] = 0;
        release(Wait::kShuffle, first, lanes);
    } else {
        self.wait = Wait::kShuffle;
        switch_away();
    }
    return warp.value[parity][partner];
}

void run_grid(dim3 grid, dim3 shape, size_t dynamic_shared_bytes, void (*thread_body)(void*), void* closure) {
    std::lock_guard<std::mutex> lock(launch_mutex);
    block.body = thread_body;
    block.closure = closure;
    const cudaError_t err = run_launch(grid, shape, dynamic_shared_bytes);
    if (err != cudaSuccess) last_error = err;
}

}  // namespace host
}  // namespace gptoss

cudaError_t cudaGetLastError() {
    const cudaError_t err = gptoss::host::last_error;
    gptoss::host::last_error = cudaSuccess;
    return err;
}
