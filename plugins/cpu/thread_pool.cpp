// The pool behind parallel_for. After each job a worker polls for the next one, then sleeps on a condition variable:
// a decode step issues a kernel call every few hundred microseconds (the model's own ops run in between), and a
// sleeping worker wakes too late to share the short calls. One job at a time: a global mutex serializes callers and
// guards the pool's lifetime; after fork() the child starts a fresh pool (the parent's threads do not exist there).
#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace gptoss_cpu {
namespace {

// An idle worker spins for kSpin, then keeps polling until kPoll but yields its CPU between polls (so that other
// threads of the process, such as PyTorch's, run), then sleeps.
constexpr auto kSpin = std::chrono::microseconds(100);
constexpr auto kPoll = std::chrono::milliseconds(5);

thread_local bool tls_in_job = false;  // set while this thread runs a job's chunks

inline void cpu_relax() { __builtin_ia32_pause(); }

class Pool {
public:
    explicit Pool(int threads) {
        for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker(); });
    }

    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(sleep_mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread& t : workers_) t.join();
    }

    int threads() const { return static_cast<int>(workers_.size()) + 1; }

    // The caller holds the global mutex: no other job runs.
    void run(int64_t count, int64_t grain, RangeCall call, void* fn) {
        count_ = count, grain_ = grain, call_ = call, fn_ = fn;
        next_ = 0;
        open_ = true;
        ++epoch_;
        if (sleepers_ > 0) {
            std::lock_guard<std::mutex> lock(sleep_mutex_);
            wake_.notify_all();
        }
        work();
        open_ = false;
        // A worker may still be in its last chunk; if it was preempted, give it our CPU.
        for (int i = 1; busy_ != 0; ++i) {
            if (i % 1024 == 0) {
                std::this_thread::yield();
            } else {
                cpu_relax();
            }
        }
    }

private:
    // Claims and runs chunks until none is left.
    void work() {
        tls_in_job = true;
        for (int64_t begin; (begin = next_.fetch_add(grain_)) < count_;) call_(fn_, begin, std::min(begin + grain_, count_));
        tls_in_job = false;
    }

    // A worker joins a job only after counting itself busy and seeing it open, so run() cannot return under it.
    void worker() {
        uint64_t seen = epoch_;
        while (wait_for_job(seen)) {
            seen = epoch_;
            ++busy_;
            if (open_) work();
            --busy_;
        }
    }

    // Waits until a job newer than `seen` starts (true) or the pool stops (false).
    bool wait_for_job(uint64_t seen) {
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; epoch_ == seen && !stop_; ++i) {
            if (i % 256 != 0) {
                cpu_relax();
                continue;
            }
            const auto idle = std::chrono::steady_clock::now() - start;
            if (idle > kPoll) {
                std::unique_lock<std::mutex> lock(sleep_mutex_);
                ++sleepers_;
                wake_.wait(lock, [&] { return epoch_ != seen || stop_; });
                --sleepers_;
            } else if (idle > kSpin) {
                std::this_thread::yield();
                i = -1;  // poll once per yield from now on
            }
        }
        return !stop_;
    }

    std::vector<std::thread> workers_;
    std::mutex sleep_mutex_;
    std::condition_variable wake_;
    std::atomic<uint64_t> epoch_{0};  // counts jobs
    std::atomic<bool> open_{false};   // a job's chunks may be claimed
    std::atomic<int> busy_{0};        // workers inside a job
    std::atomic<int> sleepers_{0};
    std::atomic<bool> stop_{false};
    // The running job: written before open_ is set.
    std::atomic<int64_t> next_{0};
    int64_t count_ = 0, grain_ = 1;
    RangeCall call_ = nullptr;
    void* fn_ = nullptr;
};

std::mutex g_mutex;  // one job at a time; guards g_pool
std::unique_ptr<Pool> g_pool;
std::atomic<int> g_requested{0};  // set_num_threads value, 0 = default

int default_threads() {
    static const int threads = [] {
        if (const char* env = std::getenv("GPTOSS_CPU_THREADS")) {
            if (const int n = std::atoi(env); n > 0) return n;
        }
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
        return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    }();
    return threads;
}

// The pool, created on first use (the caller holds g_mutex).
Pool& pool() {
    static std::once_flag fork_handlers;
    std::call_once(fork_handlers, [] {
        pthread_atfork([] { g_mutex.lock(); }, [] { g_mutex.unlock(); },
                       [] {
                           static_cast<void>(g_pool.release());  // its threads are gone: leak it, start afresh
                           g_mutex.unlock();
                       });
    });
    if (!g_pool) g_pool = std::make_unique<Pool>(num_threads());
    return *g_pool;
}

}  // namespace

void parallel_for_erased(int64_t count, int64_t grain, RangeCall call, void* fn) {
    if (count <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    if (!tls_in_job && count > grain) {
        std::lock_guard<std::mutex> lock(g_mutex);
        Pool& p = pool();
        if (p.threads() > 1) return p.run(count, grain, call, fn);
    }
    for (int64_t begin = 0; begin < count; begin += grain) call(fn, begin, std::min(begin + grain, count));
}

int num_threads() {
    const int requested = g_requested;
    return requested > 0 ? requested : default_threads();
}

void set_num_threads(int threads) {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_requested = std::max(threads, 0);
    g_pool.reset();
}

}  // namespace gptoss_cpu
