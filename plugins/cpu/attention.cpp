// gptoss_sink_attention on the CPU: tasks of (row, KV head, up to 8 of its query heads, up to 16 queries), each
// staging every visible key once for all of its queries and heads (isa().attention); then the cache update, after
// all attention tasks, so that an in-place update never changes keys that a query still needs.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common.h"
#include "isa.h"
#include "thread_pool.h"

namespace gptoss_cpu {
namespace {

constexpr int kHeadTile = 8;      // query heads per task
constexpr int kQueryBlock = 16;   // queries per task
constexpr int kHeadDimStep = 8, kMaxHeadDim = 128;  // the CUDA kernels' limits: both accept the same calls

bool valid_desc(const gptoss_attention_desc* d) {
    return d && d->batch > 0 && d->seq_len > 0 && d->num_heads > 0 && d->num_kv_heads > 0 && d->head_dim > 0 &&
           d->capacity > 0 && d->sliding_window >= 0 && d->num_heads % d->num_kv_heads == 0 &&
           d->head_dim % kHeadDimStep == 0 && d->head_dim <= kMaxHeadDim &&
           (d->sliding_window == 0 || d->capacity == d->sliding_window) && is_float_dtype(d->dtype);
}

struct RowLengths {
    int past;   // tokens already cached
    int count;  // valid new tokens
};

// Lengths of row b, clamped so that no index leaves its buffer (results for out-of-range lengths are unspecified).
RowLengths row_lengths(const gptoss_attention_desc& d, const int32_t* past_len, const int32_t* new_len, int b) {
    int past = std::max(past_len[b], 0);
    if (d.sliding_window == 0) past = std::min(past, d.capacity);
    return {past, std::min(std::max(new_len[b], 0), d.seq_len)};
}

std::vector<AttentionTask> make_tasks(const gptoss_attention_desc& d, const std::vector<RowLengths>& rows) {
    const int group = d.num_heads / d.num_kv_heads;
    std::vector<AttentionTask> tasks;
    for (int b = 0; b < d.batch; ++b) {
        for (int hk = 0; hk < d.num_kv_heads; ++hk) {
            for (int h = 0; h < group; h += kHeadTile) {
                for (int s = 0; s < rows[b].count; s += kQueryBlock) {
                    tasks.push_back({b, rows[b].past, hk, hk * group + h, std::min(kHeadTile, group - h), s,
                                     std::min(s + kQueryBlock, rows[b].count)});
                }
            }
        }
    }
    return tasks;
}

void copy_cache(const void* in, void* out, size_t bytes) {
    constexpr size_t kChunk = size_t(1) << 20;
    const int64_t chunks = static_cast<int64_t>((bytes + kChunk - 1) / kChunk);
    parallel_for(chunks, 1, [&](int64_t begin, int64_t end) {
        const size_t first = begin * kChunk, last = std::min(bytes, end * kChunk);
        std::memcpy(static_cast<char*>(out) + first, static_cast<const char*>(in) + first, last - first);
    });
}

// Writes the valid new keys and values to their slots (on ring layers only the last W of them).
void update_cache(const gptoss_attention_desc& d, const AttentionArgs& a, const std::vector<RowLengths>& rows,
                  void* cache) {
    const size_t row_bytes = static_cast<size_t>(d.head_dim) * dtype_size(d.dtype);
    for (int b = 0; b < d.batch; ++b) {
        const int first = d.sliding_window ? std::max(0, rows[b].count - d.sliding_window) : 0;
        for (int s = first; s < rows[b].count; ++s) {
            const int pos = rows[b].past + s;
            const int slot = d.sliding_window ? pos % d.sliding_window : pos;
            if (slot >= d.capacity) continue;
            for (int hk = 0; hk < d.num_kv_heads; ++hk) {
                const size_t src = static_cast<size_t>(b * d.seq_len + s) * d.num_kv_heads + hk;
                for (int kv = 0; kv < 2; ++kv) {
                    const size_t dst = (static_cast<size_t>(b * 2 + kv) * d.num_kv_heads + hk) * d.capacity + slot;
                    std::memcpy(static_cast<char*>(cache) + dst * row_bytes,
                                static_cast<const char*>(kv ? a.v : a.k) + src * row_bytes, row_bytes);
                }
            }
        }
    }
}

// Padded queries (s >= count) output zeros.
void zero_padding(const gptoss_attention_desc& d, const std::vector<RowLengths>& rows, void* out) {
    const size_t token_bytes = static_cast<size_t>(d.num_heads) * d.head_dim * dtype_size(d.dtype);
    for (int b = 0; b < d.batch; ++b) {
        const size_t first = static_cast<size_t>(b) * d.seq_len + rows[b].count;
        std::memset(static_cast<char*>(out) + first * token_bytes, 0, (d.seq_len - rows[b].count) * token_bytes);
    }
}

int sink_attention(const gptoss_attention_desc& d, const AttentionArgs& a, const int32_t* past_len,
                   const int32_t* new_len, void* cache_out) {
    std::vector<RowLengths> rows(d.batch);
    for (int b = 0; b < d.batch; ++b) rows[b] = row_lengths(d, past_len, new_len, b);
    if (cache_out != a.cache) {
        copy_cache(a.cache, cache_out,
                   static_cast<size_t>(d.batch) * 2 * d.num_kv_heads * d.capacity * d.head_dim * dtype_size(d.dtype));
    }
    const std::vector<AttentionTask> tasks = make_tasks(d, rows);
    const auto attention = isa().attention;
    parallel_for(static_cast<int64_t>(tasks.size()), 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) attention(a, tasks[i]);
    });
    zero_padding(d, rows, a.out);
    update_cache(d, a, rows, cache_out);
    return 0;
}

}  // namespace
}  // namespace gptoss_cpu

extern "C" {

GPTOSS_EXPORT size_t gptoss_sink_attention_workspace_size(const gptoss_attention_desc*) { return 0; }

GPTOSS_EXPORT int gptoss_sink_attention(const gptoss_attention_desc* desc, const void* q, const void* k,
                                        const void* v, const float* sinks, const void* kv_cache_in,
                                        const int32_t* past_len, const int32_t* new_len, void* out,
                                        void* kv_cache_out, void*, gptoss_stream) {
    using namespace gptoss_cpu;
    if (!valid_desc(desc) || !q || !k || !v || !sinks || !kv_cache_in || !kv_cache_out || !past_len || !new_len ||
        !out) {
        return kInvalidValue;
    }
    const gptoss_attention_desc& d = *desc;
    const AttentionArgs args{q,          k,          v,        kv_cache_in,      sinks, out, d.seq_len, d.num_heads,
                             d.num_kv_heads, d.head_dim, d.capacity, d.sliding_window, d.scale, d.dtype};
    return sink_attention(d, args, past_len, new_len, kv_cache_out);
}

}  // extern "C"
