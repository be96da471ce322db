// SinkAttention: grouped-query attention with per-head sink logits over a ring (sliding) or linear (full) KV cache.
//
// Semantics: gptoss_kernels.h and exporter/ops.py `sink_attention`. Three kernels do the attention:
//   * decode (seq_len == 1): one block per (row, KV head, key split, tile of up to 8 query heads of the group), so
//     the cached keys/values are read once for all query heads that share them. Lanes split the head dimension into
//     8-element chunks and groups of lanes walk different keys (flash-decoding); long caches are split across
//     blocks and merged by a small combine kernel.
//   * prefill (seq_len > 1): one block per (row, query head, tile of 32 queries) walking 32-key tiles staged in
//     shared memory, with an online softmax (flash attention on CUDA cores).
//   * cache update: runs after the attention (same stream), so an in-place update never overwrites a slot that a
//     query of this step still reads. Keys/values of the new tokens are always read from k/v, never from the cache.
// Scores live in the exp2 domain (q is pre-scaled by scale * log2 e); softmax statistics and sums are float32.
#include <algorithm>
#include <type_traits>

#include "common/kernel_common.cuh"

namespace gptoss {
namespace {

constexpr int kChunkDims = 8;           // head dimensions a thread loads at once (16 bytes of a 16-bit type)
constexpr float kNoScore = -1.0e30f;    // running max before any key: finite, so exp2(kNoScore - m) is 0 or 1
constexpr int kMaxHeadDim = 128;

// Decode
constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = kDecodeWarps * kWarpSize;
constexpr int kDecodeHeads = 8;         // query heads per block (the rest of a larger group goes to other blocks)
constexpr int kDecodeTargetBlocks = 1024;
constexpr int kDecodeMinKeysPerSplit = 64;
constexpr int kDecodeMaxSplits = 64;

// Prefill
constexpr int kPrefillThreads = 128;
constexpr int kPrefillQueries = 32;     // queries per block: thread row ty handles queries ty and ty + 16
constexpr int kPrefillKeys = 32;        // keys per tile: thread column tx handles keys tx + 8 j
constexpr int kPrefillColThreads = 8;
constexpr int kPrefillRowsPerThread = kPrefillQueries / (kPrefillThreads / kPrefillColThreads);
constexpr int kPrefillColsPerThread = kPrefillKeys / kPrefillColThreads;

template <typename T>
struct AttentionParams {
    const T* q;
    const T* k;
    const T* v;
    const float* sinks;
    const T* cache;
    T* out;
    const int32_t* past_len;
    const int32_t* new_len;
    float* partial;  // decode splits: (m, l) [B, Hq, splits, 2], then acc [B, Hq, splits, D]
    int batch, seq_len, num_heads, num_kv_heads, head_dim, capacity, window, splits;
    float scale_log2;  // scale * log2(e)
};

struct RowLengths {
    int past;   // tokens already cached
    int count;  // valid new tokens
};

// Lengths of row b, clamped so that no index leaves its buffer (results for out-of-range lengths are unspecified).
template <typename T>
__device__ RowLengths row_lengths(const AttentionParams<T>& p, int b) {
    int past = max(p.past_len[b], 0);
    if (p.window == 0) past = min(past, p.capacity);
    return {past, min(max(p.new_len[b], 0), p.seq_len)};
}

// First key position visible to a query at position pos (the window counts the query itself).
__device__ __forceinline__ int first_visible(int pos, int window) { return window ? max(0, pos - window + 1) : 0; }

// Key (kv = 0) or value (kv = 1) row of KV head hk at absolute position pos: cached positions come from their
// cache slot, new ones straight from k/v.
template <typename T>
__device__ const T* kv_row(const AttentionParams<T>& p, int b, int hk, int kv, int pos, int past) {
    if (pos < past) {
        const int slot = p.window ? pos % p.window : pos;
        return p.cache + ((static_cast<size_t>(b * 2 + kv) * p.num_kv_heads + hk) * p.capacity + slot) * p.head_dim;
    }
    const T* src = kv ? p.v : p.k;
    return src + (static_cast<size_t>(b * p.seq_len + pos - past) * p.num_kv_heads + hk) * p.head_dim;
}

template <typename T>
__device__ T* out_row(const AttentionParams<T>& p, int b, int s, int h) {
    return p.out + (static_cast<size_t>(b * p.seq_len + s) * p.num_heads + h) * p.head_dim;
}

// Softmax statistics of a set of keys: running max m and sum l, both in the exp2 domain.
struct Softmax {
    float m = kNoScore;
    float l = 0.0f;
};

// Merges the partial results (m2, l2, acc2) into (s, acc); rescale factors of both sides returned in c1/c2.
__device__ __forceinline__ void merge_stats(Softmax& s, float m2, float l2, float& c1, float& c2) {
    const float m = fmaxf(s.m, m2);
    c1 = exp2f(s.m - m);
    c2 = exp2f(m2 - m);
    s.m = m;
    s.l = s.l * c1 + l2 * c2;
}

// Final output value: the sink logit joins the denominator with no value.
__device__ __forceinline__ float finish(float acc, float m, float l, float sink) {
    return acc / (l + exp2f(sink * kLog2e - m));
}

// ---------------------------------------------------------------- decode

// Decode block geometry: lanes of a warp split into key groups of DP/8 lanes, each lane owning 8 head dims.
template <typename T, int DP>
struct DecodeShape {
    static constexpr int kLanesPerKey = DP / kChunkDims;
    static constexpr int kKeysPerWarp = kWarpSize / kLanesPerKey;
    static constexpr int kGroups = kDecodeWarps * kKeysPerWarp;  // keys in flight per block
    static constexpr int kUnroll = 8 / sizeof(T);                // keys per group per step: 64 bytes of K and V
    static constexpr int kStep = kGroups * kUnroll;
};

// Accumulates keys [begin, end) (0 = first visible key) of one query into per-thread softmax statistics and
// value sums for every head of the tile. Each group of lanes walks its own keys; lanes own dims d0..d0+7.
template <typename T, int DP>
__device__ void decode_accumulate(const AttentionParams<T>& p, const float (*qs)[DP], int nh, int b, int hk,
                                  int first, RowLengths len, int begin, int end, Softmax (&st)[kDecodeHeads],
                                  float (&acc)[kDecodeHeads][kChunkDims]) {
    using Shape = DecodeShape<T, DP>;
    const int lane = threadIdx.x % kWarpSize;
    const int group = threadIdx.x / kWarpSize * Shape::kKeysPerWarp + lane / Shape::kLanesPerKey;
    const int d0 = lane % Shape::kLanesPerKey * kChunkDims;
    const bool dims_ok = d0 < p.head_dim;

    for (int base = begin; base < end; base += Shape::kStep) {  // block-uniform trip count: shuffles are safe
        float kf[Shape::kUnroll][kChunkDims];
        float vf[Shape::kUnroll][kChunkDims];
        bool live[Shape::kUnroll];
#pragma unroll
        for (int u = 0; u < Shape::kUnroll; ++u) {
            const int j = base + group * Shape::kUnroll + u;
            live[u] = j < end;
            if (live[u] && dims_ok) {
                load8(kv_row(p, b, hk, 0, first + j, len.past) + d0, kf[u]);
                load8(kv_row(p, b, hk, 1, first + j, len.past) + d0, vf[u]);
            } else {
#pragma unroll
                for (int i = 0; i < kChunkDims; ++i) kf[u][i] = vf[u][i] = 0.0f;
            }
        }
#pragma unroll
        for (int h = 0; h < kDecodeHeads; ++h) {
            if (h >= nh) break;  // nh is block-uniform
            float q[kChunkDims];
#pragma unroll
            for (int i = 0; i < kChunkDims; ++i) q[i] = dims_ok ? qs[h][d0 + i] : 0.0f;
            float score[Shape::kUnroll];
            float tile_max = kNoScore;
#pragma unroll
            for (int u = 0; u < Shape::kUnroll; ++u) {
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < kChunkDims; ++i) dot = fmaf(q[i], kf[u][i], dot);
                dot = group_sum<Shape::kLanesPerKey>(dot);
                score[u] = live[u] ? dot : -INFINITY;
                tile_max = fmaxf(tile_max, score[u]);
            }
            const float m = fmaxf(st[h].m, tile_max);
            const float correction = exp2f(st[h].m - m);
            st[h].m = m;
            st[h].l *= correction;
#pragma unroll
            for (int i = 0; i < kChunkDims; ++i) acc[h][i] *= correction;
#pragma unroll
            for (int u = 0; u < Shape::kUnroll; ++u) {
                const float prob = exp2f(score[u] - m);
                st[h].l += prob;
#pragma unroll
                for (int i = 0; i < kChunkDims; ++i) acc[h][i] = fmaf(prob, vf[u][i], acc[h][i]);
            }
        }
    }
}

// Merges the statistics of the key groups of a warp (lanes with equal dims); every lane gets the warp's result.
template <int kLanesPerKey>
__device__ void decode_merge_warp(Softmax (&st)[kDecodeHeads], float (&acc)[kDecodeHeads][kChunkDims]) {
#pragma unroll
    for (int offset = kLanesPerKey; offset < kWarpSize; offset *= 2) {
#pragma unroll
        for (int h = 0; h < kDecodeHeads; ++h) {
            float c1, c2;
            const float m2 = __shfl_xor_sync(kFullMask, st[h].m, offset);
            const float l2 = __shfl_xor_sync(kFullMask, st[h].l, offset);
            merge_stats(st[h], m2, l2, c1, c2);
#pragma unroll
            for (int i = 0; i < kChunkDims; ++i) {
                acc[h][i] = acc[h][i] * c1 + __shfl_xor_sync(kFullMask, acc[h][i], offset) * c2;
            }
        }
    }
}

// grid (splits * head tiles, Hkv, B); block kDecodeThreads.
template <typename T, int DP>
__global__ void __launch_bounds__(kDecodeThreads) sink_attention_decode_kernel(AttentionParams<T> p) {
    using Shape = DecodeShape<T, DP>;
    __shared__ float qs[kDecodeHeads][DP];
    __shared__ float red_m[kDecodeWarps][kDecodeHeads];
    __shared__ float red_l[kDecodeWarps][kDecodeHeads];
    __shared__ float red_acc[kDecodeWarps][kDecodeHeads][DP];

    const int b = blockIdx.z;
    const int hk = blockIdx.y;
    const int split = blockIdx.x % p.splits;
    const int group_size = p.num_heads / p.num_kv_heads;
    const int h0 = hk * group_size + blockIdx.x / p.splits * kDecodeHeads;
    const int nh = min(kDecodeHeads, hk * group_size + group_size - h0);
    const int dims = p.head_dim;
    const RowLengths len = row_lengths(p, b);

    // Keys of the query at position past: [first, past], split evenly across blocks. Padded rows see none.
    const int first = first_visible(len.past, p.window);
    const int num_keys = len.count > 0 ? len.past - first + 1 : 0;
    const int begin = static_cast<int>(static_cast<long long>(num_keys) * split / p.splits);
    const int end = static_cast<int>(static_cast<long long>(num_keys) * (split + 1) / p.splits);

    for (int i = threadIdx.x; i < nh * dims; i += blockDim.x) {
        const int h = i / dims, d = i % dims;
        qs[h][d] = to_float(p.q[(static_cast<size_t>(b) * p.num_heads + h0 + h) * dims + d]) * p.scale_log2;
    }
    __syncthreads();

    Softmax st[kDecodeHeads];
    float acc[kDecodeHeads][kChunkDims] = {};
    decode_accumulate<T, DP>(p, qs, nh, b, hk, first, len, begin, end, st, acc);
    decode_merge_warp<Shape::kLanesPerKey>(st, acc);

    const int warp = threadIdx.x / kWarpSize;
    const int lane = threadIdx.x % kWarpSize;
    if (lane < Shape::kLanesPerKey) {
#pragma unroll
        for (int h = 0; h < kDecodeHeads; ++h) {
            if (lane == 0) red_m[warp][h] = st[h].m, red_l[warp][h] = st[h].l;
#pragma unroll
            for (int i = 0; i < kChunkDims; ++i) red_acc[warp][h][lane * kChunkDims + i] = acc[h][i];
        }
    }
    __syncthreads();

    // Merge the warps: one thread per (head, dim) output.
    for (int i = threadIdx.x; i < nh * dims; i += blockDim.x) {
        const int h = i / dims, d = i % dims;
        float m = kNoScore;
        for (int w = 0; w < kDecodeWarps; ++w) m = fmaxf(m, red_m[w][h]);
        float l = 0.0f, a = 0.0f;
        for (int w = 0; w < kDecodeWarps; ++w) {
            const float c = exp2f(red_m[w][h] - m);
            l += red_l[w][h] * c;
            a += red_acc[w][h][d] * c;
        }
        const int hq = h0 + h;
        if (p.splits == 1) {
            const float value = len.count > 0 ? finish(a, m, l, p.sinks[hq]) : 0.0f;
            out_row(p, b, 0, hq)[d] = from_float<T>(value);
        } else {
            const size_t idx = (static_cast<size_t>(b) * p.num_heads + hq) * p.splits + split;
            if (d == 0) p.partial[2 * idx] = m, p.partial[2 * idx + 1] = l;
            p.partial[static_cast<size_t>(2) * p.batch * p.num_heads * p.splits + idx * dims + d] = a;
        }
    }
}

// Merges the key splits of the decode kernel. grid (Hq, B); block: head_dim threads.
template <typename T>
__global__ void sink_attention_decode_combine_kernel(AttentionParams<T> p) {
    const int h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
    const size_t first = (static_cast<size_t>(b) * p.num_heads + h) * p.splits;
    const float* ml = p.partial + 2 * first;
    const float* acc = p.partial + static_cast<size_t>(2) * p.batch * p.num_heads * p.splits + first * p.head_dim;
    float m = kNoScore;
    for (int s = 0; s < p.splits; ++s) m = fmaxf(m, ml[2 * s]);
    float l = 0.0f, a = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
        const float c = exp2f(ml[2 * s] - m);
        l += ml[2 * s + 1] * c;
        a += acc[static_cast<size_t>(s) * p.head_dim + d] * c;
    }
    const float value = row_lengths(p, b).count > 0 ? finish(a, m, l, p.sinks[h]) : 0.0f;
    out_row(p, b, 0, h)[d] = from_float<T>(value);
}

// ---------------------------------------------------------------- prefill

// Shared-memory tiles of the prefill kernel (rows padded by 4 floats: conflict-free 16-byte column reads).
template <int DP>
struct PrefillSmem {
    float q[kPrefillQueries][DP + 4];
    float kv[kPrefillKeys][DP + 4];  // keys, then values, of the current tile
    float prob[kPrefillQueries][kPrefillKeys + 4];
};

// Stages `rows` rows of head_dim elements (row r from row_ptr(r), or zeros when it returns nullptr) as floats.
template <typename T, int DP, int kRows, typename RowPtr>
__device__ void stage_rows(float (*dst)[DP + 4], int head_dim, float factor, RowPtr row_ptr) {
    const int chunks = head_dim / kChunkDims;
    for (int i = threadIdx.x; i < kRows * chunks; i += blockDim.x) {
        const int r = i / chunks, d0 = i % chunks * kChunkDims;
        const T* src = row_ptr(r);
        float x[kChunkDims];
        if (src) {
            load8(src + d0, x);
        } else {
#pragma unroll
            for (int j = 0; j < kChunkDims; ++j) x[j] = 0.0f;
        }
#pragma unroll
        for (int j = 0; j < kChunkDims; ++j) dst[r][d0 + j] = x[j] * factor;
    }
}

// grid (ceil(S / 32), Hq, B); block kPrefillThreads. Thread (ty, tx) holds the scores of queries ty + 16 i and
// keys tx + 8 j of a tile, and the outputs of queries ty + 16 i at dims 4 (tx + 8 g) .. + 3.
template <typename T, int DP>
__global__ void __launch_bounds__(kPrefillThreads) sink_attention_prefill_kernel(AttentionParams<T> p) {
    constexpr int kRowStride = kPrefillThreads / kPrefillColThreads;  // 16
    constexpr int kDimGroups = DP / (4 * kPrefillColThreads);         // float4 output groups per thread
    __shared__ __align__(16) PrefillSmem<DP> sm;

    const int b = blockIdx.z, h = blockIdx.y, s0 = blockIdx.x * kPrefillQueries;
    const int hk = h / (p.num_heads / p.num_kv_heads);
    const int ty = threadIdx.x / kPrefillColThreads, tx = threadIdx.x % kPrefillColThreads;
    const int dims = p.head_dim;
    const RowLengths len = row_lengths(p, b);
    const int valid_queries = min(len.count - s0, kPrefillQueries);  // queries s0 .. s0 + valid - 1 are real

    stage_rows<T, DP, kPrefillQueries>(sm.q, dims, p.scale_log2, [&](int r) -> const T* {
        return r < valid_queries ? p.q + (static_cast<size_t>(b * p.seq_len + s0 + r) * p.num_heads + h) * dims
                                 : nullptr;
    });

    Softmax st[kPrefillRowsPerThread];
    float acc[kPrefillRowsPerThread][kDimGroups][4] = {};
    const int key_begin = first_visible(len.past + s0, p.window);
    const int key_end = valid_queries > 0 ? len.past + s0 + valid_queries : key_begin;  // exclusive

    for (int kt = key_begin; kt < key_end; kt += kPrefillKeys) {
        __syncthreads();  // q staged / previous values consumed
        stage_rows<T, DP, kPrefillKeys>(sm.kv, dims, 1.0f, [&](int c) -> const T* {
            return kt + c < key_end ? kv_row(p, b, hk, 0, kt + c, len.past) : nullptr;
        });
        __syncthreads();

        float score[kPrefillRowsPerThread][kPrefillColsPerThread] = {};
        for (int d = 0; d < dims; d += 4) {
            float4 q[kPrefillRowsPerThread], k[kPrefillColsPerThread];
#pragma unroll
            for (int i = 0; i < kPrefillRowsPerThread; ++i)
                q[i] = *reinterpret_cast<const float4*>(&sm.q[ty + kRowStride * i][d]);
#pragma unroll
            for (int j = 0; j < kPrefillColsPerThread; ++j)
                k[j] = *reinterpret_cast<const float4*>(&sm.kv[tx + kPrefillColThreads * j][d]);
#pragma unroll
            for (int i = 0; i < kPrefillRowsPerThread; ++i)
#pragma unroll
                for (int j = 0; j < kPrefillColsPerThread; ++j)
                    score[i][j] += q[i].x * k[j].x + q[i].y * k[j].y + q[i].z * k[j].z + q[i].w * k[j].w;
        }

#pragma unroll
        for (int i = 0; i < kPrefillRowsPerThread; ++i) {
            const int r = ty + kRowStride * i;
            const int query_pos = len.past + s0 + r;
            float tile_max = kNoScore;
#pragma unroll
            for (int j = 0; j < kPrefillColsPerThread; ++j) {
                const int key_pos = kt + tx + kPrefillColThreads * j;
                const bool visible = r < valid_queries && key_pos <= query_pos &&
                                     (p.window == 0 || key_pos > query_pos - p.window);
                score[i][j] = visible ? score[i][j] : -INFINITY;
                tile_max = fmaxf(tile_max, score[i][j]);
            }
            const float m = fmaxf(st[i].m, group_max<kPrefillColThreads>(tile_max));
            const float correction = exp2f(st[i].m - m);
            st[i].m = m;
            st[i].l *= correction;
#pragma unroll
            for (int g = 0; g < kDimGroups; ++g)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[i][g][e] *= correction;
#pragma unroll
            for (int j = 0; j < kPrefillColsPerThread; ++j) {
                const float prob = exp2f(score[i][j] - m);
                st[i].l += prob;  // per-thread partial sum over its columns, reduced at the end
                sm.prob[r][tx + kPrefillColThreads * j] = prob;
            }
        }
        __syncthreads();  // keys consumed, probabilities written

        stage_rows<T, DP, kPrefillKeys>(sm.kv, dims, 1.0f, [&](int c) -> const T* {
            return kt + c < key_end ? kv_row(p, b, hk, 1, kt + c, len.past) : nullptr;
        });
        __syncthreads();

        for (int c = 0; c < kPrefillKeys; ++c) {
#pragma unroll
            for (int g = 0; g < kDimGroups; ++g) {
                const int d = 4 * (tx + kPrefillColThreads * g);
                if (d >= dims) break;
                const float4 v = *reinterpret_cast<const float4*>(&sm.kv[c][d]);
#pragma unroll
                for (int i = 0; i < kPrefillRowsPerThread; ++i) {
                    const float prob = sm.prob[ty + kRowStride * i][c];
                    acc[i][g][0] = fmaf(prob, v.x, acc[i][g][0]);
                    acc[i][g][1] = fmaf(prob, v.y, acc[i][g][1]);
                    acc[i][g][2] = fmaf(prob, v.z, acc[i][g][2]);
                    acc[i][g][3] = fmaf(prob, v.w, acc[i][g][3]);
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < kPrefillRowsPerThread; ++i) {
        const int r = ty + kRowStride * i;
        const float l = group_sum<kPrefillColThreads>(st[i].l);
        if (s0 + r >= p.seq_len) continue;
        T* dst = out_row(p, b, s0 + r, h);
#pragma unroll
        for (int g = 0; g < kDimGroups; ++g) {
            const int d = 4 * (tx + kPrefillColThreads * g);
            if (d >= dims) break;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float value = r < valid_queries ? finish(acc[i][g][e], st[i].m, l, p.sinks[h]) : 0.0f;
                dst[d + e] = from_float<T>(value);
            }
        }
    }
}

// ---------------------------------------------------------------- cache update

// Writes the valid new keys/values of (row, token, KV head) to their slots; ring layers keep the last W tokens.
// grid (S, Hkv, B); block: one warp.
template <typename T>
__global__ void sink_attention_cache_update_kernel(AttentionParams<T> p, T* cache_out) {
    const int s = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const RowLengths len = row_lengths(p, b);
    if (s >= len.count || (p.window && s < len.count - p.window)) return;
    const int pos = len.past + s;
    const int slot = p.window ? pos % p.window : pos;
    if (slot >= p.capacity) return;
    constexpr int kPerCopy = 16 / sizeof(T);
    const int chunks = p.head_dim / kPerCopy;
    for (int i = threadIdx.x; i < 2 * chunks; i += blockDim.x) {
        const int kv = i / chunks, e = i % chunks * kPerCopy;
        const T* src = (kv ? p.v : p.k) + (static_cast<size_t>(b * p.seq_len + s) * p.num_kv_heads + hk) * p.head_dim;
        T* dst = cache_out + ((static_cast<size_t>(b * 2 + kv) * p.num_kv_heads + hk) * p.capacity + slot) * p.head_dim;
        copy16(dst + e, src + e);
    }
}

// ---------------------------------------------------------------- host side

bool valid_desc(const gptoss_attention_desc* d) {
    return d && d->batch > 0 && d->seq_len > 0 && d->num_heads > 0 && d->num_kv_heads > 0 && d->head_dim > 0 &&
           d->capacity > 0 && d->sliding_window >= 0 && d->num_heads % d->num_kv_heads == 0 &&
           d->head_dim % kChunkDims == 0 && d->head_dim <= kMaxHeadDim &&
           (d->sliding_window == 0 || d->capacity == d->sliding_window) && is_float_dtype(d->dtype);
}

int head_tiles(const gptoss_attention_desc& d) { return ceil_div(d.num_heads / d.num_kv_heads, kDecodeHeads); }

// Key splits of the decode kernel for `batch` rows: enough blocks to fill the GPU, at least
// kDecodeMinKeysPerSplit keys per split when the cache is full.
int decode_splits(const gptoss_attention_desc& d, int batch) {
    const int blocks = batch * d.num_kv_heads * head_tiles(d);
    const int max_keys = d.sliding_window ? d.sliding_window : d.capacity;
    const int by_occupancy = ceil_div(kDecodeTargetBlocks, blocks);
    const int by_keys = ceil_div(max_keys, kDecodeMinKeysPerSplit);
    return std::max(1, std::min({by_occupancy, by_keys, kDecodeMaxSplits}));
}

size_t decode_workspace(const gptoss_attention_desc& d, int batch) {
    const int splits = decode_splits(d, batch);
    if (splits == 1) return 0;
    return static_cast<size_t>(batch) * d.num_heads * splits * (d.head_dim + 2) * sizeof(float);
}

// Calls fn(std::integral_constant<int, DP>) with the padded head dimension DP of the kernels for head_dim.
template <typename Fn>
int dispatch_head_dim(int head_dim, Fn&& fn) {
    if (head_dim <= 32) return fn(std::integral_constant<int, 32>());
    if (head_dim <= 64) return fn(std::integral_constant<int, 64>());
    return fn(std::integral_constant<int, 128>());
}

template <typename T>
int launch_attention(const gptoss_attention_desc& d, AttentionParams<T> p, cudaStream_t stream) {
    return dispatch_head_dim(d.head_dim, [&](auto dp) {
        constexpr int DP = decltype(dp)::value;
        if (d.seq_len == 1) {
            const dim3 grid(p.splits * head_tiles(d), d.num_kv_heads, d.batch);
            GPTOSS_LAUNCH(grid, kDecodeThreads, 0, stream, sink_attention_decode_kernel<T, DP>)(p);
            GPTOSS_CUDA_TRY(cudaGetLastError());
            if (p.splits > 1) {
                GPTOSS_LAUNCH(dim3(d.num_heads, d.batch), d.head_dim, 0, stream,
                              sink_attention_decode_combine_kernel<T>)(p);
            }
        } else {
            const dim3 grid(ceil_div(d.seq_len, kPrefillQueries), d.num_heads, d.batch);
            GPTOSS_LAUNCH(grid, kPrefillThreads, 0, stream, sink_attention_prefill_kernel<T, DP>)(p);
        }
        return static_cast<int>(cudaGetLastError());
    });
}

template <typename T>
int run_attention(const gptoss_attention_desc& d, const void* q, const void* k, const void* v, const float* sinks,
                  const void* cache_in, void* cache_out, const int32_t* past_len, const int32_t* new_len, void* out,
                  void* workspace, cudaStream_t stream) {
    AttentionParams<T> p{};
    p.q = static_cast<const T*>(q);
    p.k = static_cast<const T*>(k);
    p.v = static_cast<const T*>(v);
    p.sinks = sinks;
    p.cache = static_cast<const T*>(cache_in);
    p.out = static_cast<T*>(out);
    p.past_len = past_len;
    p.new_len = new_len;
    p.batch = d.batch, p.seq_len = d.seq_len, p.num_heads = d.num_heads, p.num_kv_heads = d.num_kv_heads;
    p.head_dim = d.head_dim, p.capacity = d.capacity, p.window = d.sliding_window;
    p.scale_log2 = d.scale * kLog2e;
    // Without a workspace the decode kernel runs unsplit (correct, just less parallel for long caches).
    p.splits = workspace ? decode_splits(d, d.batch) : 1;
    p.partial = static_cast<float*>(workspace);

    if (const int err = launch_attention(d, p, stream)) return err;

    // Attention has been enqueued before any cache write, so an in-place update cannot race with it.
    const size_t cache_bytes = static_cast<size_t>(d.batch) * 2 * d.num_kv_heads * d.capacity * d.head_dim * sizeof(T);
    if (cache_out != cache_in) {
        GPTOSS_CUDA_TRY(cudaMemcpyAsync(cache_out, cache_in, cache_bytes, cudaMemcpyDeviceToDevice, stream));
    }
    GPTOSS_LAUNCH(dim3(d.seq_len, d.num_kv_heads, d.batch), kWarpSize, 0, stream,
                  sink_attention_cache_update_kernel<T>)(p, static_cast<T*>(cache_out));
    return static_cast<int>(cudaGetLastError());
}

}  // namespace
}  // namespace gptoss

extern "C" {

GPTOSS_EXPORT size_t gptoss_sink_attention_workspace_size(const gptoss_attention_desc* desc) {
    if (!gptoss::valid_desc(desc)) return 0;
    // The same workspace must serve every call with at most desc->batch rows (the split count grows as the batch
    // shrinks), so take the largest need over all batch sizes.
    size_t bytes = 0;
    for (int batch = 1; batch <= desc->batch; ++batch) bytes = std::max(bytes, gptoss::decode_workspace(*desc, batch));
    return bytes;
}

GPTOSS_EXPORT int gptoss_sink_attention(const gptoss_attention_desc* desc, const void* q, const void* k,
                                        const void* v, const float* sinks, const void* kv_cache_in,
                                        const int32_t* past_len, const int32_t* new_len, void* out,
                                        void* kv_cache_out, void* workspace, gptoss_stream stream) {
    using gptoss::is_aligned;
    if (!gptoss::valid_desc(desc) || !q || !k || !v || !sinks || !kv_cache_in || !kv_cache_out || !past_len ||
        !new_len || !out) {
        return static_cast<int>(cudaErrorInvalidValue);
    }
    // Rows of q, k, v and the caches move as 16-byte vectors.
    const void* rows[] = {q, k, v, kv_cache_in, kv_cache_out};
    for (const void* ptr : rows) {
        if (!is_aligned(ptr, 16)) return static_cast<int>(cudaErrorInvalidValue);
    }
    if (workspace && !is_aligned(workspace, sizeof(float))) return static_cast<int>(cudaErrorInvalidValue);
    return gptoss::dispatch_float_dtype(desc->dtype, [&](auto tag) {
        return gptoss::run_attention<decltype(tag)>(*desc, q, k, v, sinks, kv_cache_in, kv_cache_out, past_len,
                                                    new_len, out, workspace, stream);
    });
}

}  // extern "C"
