// MoE: routed experts with clamped SwiGLU, MXFP4 (dequantized on the fly) or float weights.
//
// Semantics: gptoss_kernels.h and exporter/ops.py `moe`. Tokens are processed in passes of at most
// kMaxTokensPerPass tokens (this bounds the workspace); each pass runs four kernels on the stream:
//   1. moe_route_kernel: counts the (token, k) assignments per expert and writes them grouped by expert into `perm`,
//      plus a list of tiles (expert, first entry, count) of at most `tile_tokens` assignments each.
//   2. gate_up: for each tile and each 32-row slice of the expert's [2I, H] weight, u = W1 x + b1 and the clamped
//      SwiGLU of the interleaved (gate, up) rows, into h [A, I] (float32, indexed by assignment).
//   3. down: y = W2 h + b2 into y [A, H] (float32, indexed by assignment).
//   4. moe_combine_kernel: out[t] = sum_k expert_weights[t, k] * y[t, k], in float32, stored in the activation dtype.
// The expert kernels are matrix-vector style: each warp owns 4 weight rows, each lane one 32-element block of the
// input dimension per 1024-element chunk; the chunk of the tile's input vectors is staged in shared memory and reused
// by all rows. MXFP4 blocks are loaded as 16 bytes and expanded in registers. Small passes (at most one assignment
// per expert on average, i.e. decode) use one assignment per tile; larger ones tile 8 assignments so each weight
// element fetched serves 8 tokens.
#include <algorithm>

#include "common/kernel_common.cuh"

namespace gptoss {
namespace {

constexpr int kBlockElems = 32;  // elements per MXFP4 block; every input dimension is walked in such blocks
constexpr int kMoeWarps = 8;
constexpr int kMoeThreads = kMoeWarps * kWarpSize;
constexpr int kRowsPerWarp = 4;  // for gate_up: two (gate, up) row pairs
constexpr int kRowsPerBlock = kMoeWarps * kRowsPerWarp;
constexpr int kChunkElems = kWarpSize * kBlockElems;  // input elements staged per pass: one block per lane
constexpr int kDecodeTileTokens = 1;
constexpr int kTileTokens = 8;
constexpr int kMaxTokensPerPass = 512;
constexpr int kMaxExperts = 1024;
constexpr int kRouteThreads = 1024;

struct __align__(16) Tile {
    int expert;
    int start;  // first entry of perm
    int count;  // assignments in the tile (<= tile_tokens)
    int unused;
};

struct Routing {
    int* perm;  // assignments (t * K + k) grouped by expert
    Tile* tiles;
    int* num_tiles;
};

// ---------------------------------------------------------------- weights

// MXFP4 weights [E, rows, in/32, 16] + scales [E, rows, in/32]: FP4 E2M1 codes, element 2j in the low nibble of
// byte j, one E8M0 scale per 32-element block.
struct Mxfp4Weights {
    const uint8_t* blocks;
    const uint8_t* scales;

    struct Block {
        uint4 bits;
        float scale;
    };

    // Block `blk` of weight row `row_index` (= expert * rows + row).
    __device__ Block load(size_t row_index, int blocks_per_row, int blk) const {
        const size_t i = row_index * blocks_per_row + blk;
        return {__ldg(reinterpret_cast<const uint4*>(blocks) + i), scale_times_2_14(__ldg(scales + i))};
    }

    // 2^(s - 127) * 2^14: undoes the 2^-14 that decode() leaves on the codes. Scales above 2^113 saturate to inf.
    __device__ static float scale_times_2_14(uint8_t s) { return __uint_as_float(min(s + 14u, 255u) << 23); }

    // Values of the 8 codes in 32-bit word `word` (0..3) of the block, times 2^-14. Each code's sign goes to bit 15
    // and its exponent/mantissa bits to bits 11..9 of an fp16, which makes the fp16 equal code * 2^-14 exactly
    // (E2M1's subnormal 0.5 lands on an fp16 subnormal); two codes are converted per fp16 pair.
    __device__ static void decode(const Block& block, int word, float (&w)[8]) {
        const uint32_t bits = word == 0 ? block.bits.x : word == 1 ? block.bits.y : word == 2 ? block.bits.z
                                                                                               : block.bits.w;
#pragma unroll
        for (int n = 0; n < 4; ++n) {
            const uint32_t codes = (bits >> (4 * n)) & 0x000f000fu;  // elements n and n + 4 of the word
            const uint32_t halves = ((codes << 9) | (codes << 12)) & 0x8e008e00u;
            const float2 pair = __half22float2(bit_cast<__half2>(halves));
            w[n] = pair.x;
            w[n + 4] = pair.y;
        }
    }
};

// Float weights [E, rows, in] of type W.
template <typename W>
struct FloatWeights {
    const W* data;

    struct Block {
        const W* ptr;
        float scale;
    };

    __device__ Block load(size_t row_index, int blocks_per_row, int blk) const {
        return {data + (row_index * blocks_per_row + blk) * kBlockElems, 1.0f};
    }

    __device__ static void decode(const Block& block, int word, float (&w)[8]) { load8(block.ptr + 8 * word, w); }
};

// ---------------------------------------------------------------- routing

// Single block. Assignments with an expert id outside [0, E) are dropped (they contribute nothing).
__global__ void __launch_bounds__(kRouteThreads)
    moe_route_kernel(const int32_t* expert_ids, int assignments, int num_experts, int tile_tokens, Routing r) {
    __shared__ int count[kMaxExperts];
    __shared__ int cursor[kMaxExperts];
    for (int e = threadIdx.x; e < num_experts; e += blockDim.x) count[e] = 0;
    __syncthreads();
    for (int a = threadIdx.x; a < assignments; a += blockDim.x) {
        const int e = expert_ids[a];
        if (e >= 0 && e < num_experts) atomicAdd(&count[e], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int offset = 0, tiles = 0;
        for (int e = 0; e < num_experts; ++e) {
            cursor[e] = offset;
            for (int s = 0; s < count[e]; s += tile_tokens) {
                r.tiles[tiles++] = {e, offset + s, min(tile_tokens, count[e] - s), 0};
            }
            offset += count[e];
        }
        *r.num_tiles = tiles;
    }
    __syncthreads();
    // The order within an expert is arbitrary; every assignment is computed on its own, so results do not depend on it.
    for (int a = threadIdx.x; a < assignments; a += blockDim.x) {
        const int e = expert_ids[a];
        if (e >= 0 && e < num_experts) r.perm[atomicAdd(&cursor[e], 1)] = a;
    }
}

// Upper bound of the tiles moe_route_kernel writes: each expert adds at most one partial tile.
int max_tiles(int assignments, int num_experts, int tile_tokens) {
    return (assignments + num_experts * (tile_tokens - 1)) / tile_tokens;
}

// ---------------------------------------------------------------- expert matrix-vector products

template <typename TIn, typename Weights>
struct ExpertArgs {
    const TIn* x;         // inputs: gate_up hidden [T, H] (row t = a / K); down h [A, I] (row a)
    int x_row_divisor;    // K for gate_up, 1 for down
    Weights w;            // [E, rows, in_dim]
    const float* bias;    // [E, rows]
    float* y;             // gate_up: h [A, rows / 2]; down: y [A, rows]
    int rows, in_dim;
    float alpha, limit;   // SwiGLU (gate_up only)
    Routing routing;
};

// Shared-memory copy of one 1024-element chunk of the tile's input vectors. Element 32 L + 4 q + c of the chunk
// (lane L's block) sits at [q * 32 + L].c, so the lanes of a warp read consecutive float4s (no bank conflicts).
template <int TM>
struct InputChunk {
    float4 x[TM][kChunkElems / 4];
};

// `assignment` is the tile's shared-memory list (-1 past its count): indexed at run time, so not a register array.
template <int TM, typename TIn, typename Weights>
__device__ void stage_chunk(const ExpertArgs<TIn, Weights>& a, const int* assignment, int chunk, InputChunk<TM>& s) {
    for (int i = threadIdx.x; i < TM * kChunkElems; i += blockDim.x) {
        const int t = i / kChunkElems, e = i % kChunkElems;
        const int col = chunk + e;
        float value = 0.0f;
        if (assignment[t] >= 0 && col < a.in_dim) {
            value = to_float(a.x[static_cast<size_t>(assignment[t] / a.x_row_divisor) * a.in_dim + col]);
        }
        const int lane = e / kBlockElems, q = e % kBlockElems / 4;
        reinterpret_cast<float*>(&s.x[t][q * kWarpSize + lane])[e % 4] = value;
    }
}

// Blocks `blk` of the warp's weight rows row0 .. row0 + 3 (rows past the end are left empty).
template <typename Weights>
__device__ void load_blocks(const Weights& w, size_t row_base, int row0, int rows, int blocks_per_row, int blk,
                            typename Weights::Block (&block)[kRowsPerWarp]) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
        if (row0 + r < rows) block[r] = w.load(row_base + row0 + r, blocks_per_row, blk);
    }
}

// acc[r][t] += (block of weight row r) . (the matching 32 elements of input t in the staged chunk), for the first
// `live_rows` rows of the warp.
template <int TM, typename Weights>
__device__ void accumulate_block(const typename Weights::Block (&block)[kRowsPerWarp], int live_rows,
                                 const InputChunk<TM>& s, float (&acc)[kRowsPerWarp][TM]) {
    const int lane = threadIdx.x % kWarpSize;
    float part[kRowsPerWarp][TM] = {};
#pragma unroll
    for (int word = 0; word < 4; ++word) {
        float wv[kRowsPerWarp][8];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
            if (r < live_rows) {
                Weights::decode(block[r], word, wv[r]);
            } else {
#pragma unroll
                for (int i = 0; i < 8; ++i) wv[r][i] = 0.0f;
            }
        }
#pragma unroll
        for (int t = 0; t < TM; ++t) {
            const float4 x0 = s.x[t][2 * word * kWarpSize + lane];
            const float4 x1 = s.x[t][(2 * word + 1) * kWarpSize + lane];
            const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
            for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
                for (int i = 0; i < 8; ++i) part[r][t] = fmaf(wv[r][i], xv[i], part[r][t]);
        }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
        if (r >= live_rows) continue;
#pragma unroll
        for (int t = 0; t < TM; ++t) acc[r][t] = fmaf(part[r][t], block[r].scale, acc[r][t]);
    }
}

__device__ __forceinline__ float swiglu(float gate, float up, float alpha, float limit) {
    gate = fminf(gate, limit);
    up = fminf(fmaxf(up, -limit), limit);
    return gate / (1.0f + expf(-alpha * gate)) * (up + 1.0f);
}

// Writes the warp's results (summed over lanes; lane r * TM + t writes value (r, t)).
template <bool kGateUp, int TM, typename TIn, typename Weights>
__device__ void store_rows(const ExpertArgs<TIn, Weights>& a, int expert, int row0, const int (&assignment)[TM],
                           const float (&acc)[kRowsPerWarp][TM]) {
    const int lane = threadIdx.x % kWarpSize;
    const float* bias = a.bias + static_cast<size_t>(expert) * a.rows;
#pragma unroll
    for (int t = 0; t < TM; ++t) {
        if (assignment[t] < 0) continue;
        const size_t aid = assignment[t];
        if (kGateUp) {  // rows row0 + 2 q (gate) and row0 + 2 q + 1 (up) make intermediate unit row0 / 2 + q
#pragma unroll
            for (int q = 0; q < kRowsPerWarp / 2; ++q) {
                const int row = row0 + 2 * q;
                if (lane != q * TM + t || row >= a.rows) continue;
                const float h = swiglu(acc[2 * q][t] + bias[row], acc[2 * q + 1][t] + bias[row + 1], a.alpha, a.limit);
                a.y[aid * (a.rows / 2) + row / 2] = h;
            }
        } else {
#pragma unroll
            for (int r = 0; r < kRowsPerWarp; ++r) {
                const int row = row0 + r;
                if (lane == r * TM + t && row < a.rows) a.y[aid * a.rows + row] = acc[r][t] + bias[row];
            }
        }
    }
}

// One block: tile blockIdx.x (up to TM assignments of one expert) times weight rows [32 blockIdx.y, +32).
template <bool kGateUp, int TM, typename TIn, typename Weights>
__device__ __forceinline__ void expert_tile(const ExpertArgs<TIn, Weights>& a) {
    static_assert(kRowsPerWarp * TM <= kWarpSize, "one lane stores each result");
    __shared__ InputChunk<TM> chunk_smem;
    __shared__ int assignment_smem[TM];
    if (static_cast<int>(blockIdx.x) >= *a.routing.num_tiles) return;
    const Tile tile = a.routing.tiles[blockIdx.x];
    if (threadIdx.x < TM) {
        assignment_smem[threadIdx.x] =
            static_cast<int>(threadIdx.x) < tile.count ? a.routing.perm[tile.start + threadIdx.x] : -1;
    }
    const int lane = threadIdx.x % kWarpSize;
    const int row0 = blockIdx.y * kRowsPerBlock + threadIdx.x / kWarpSize * kRowsPerWarp;
    const int blocks_per_row = a.in_dim / kBlockElems;
    const size_t row_base = static_cast<size_t>(tile.expert) * a.rows;

    __syncthreads();
    int assignment[TM];
#pragma unroll
    for (int t = 0; t < TM; ++t) assignment[t] = assignment_smem[t];

    float acc[kRowsPerWarp][TM] = {};
    for (int chunk = 0; chunk < a.in_dim; chunk += kChunkElems) {
        const int blk = chunk / kBlockElems + lane;
        const bool has_block = blk < blocks_per_row;
        typename Weights::Block block[kRowsPerWarp] = {};
        if (has_block) load_blocks(a.w, row_base, row0, a.rows, blocks_per_row, blk, block);  // in flight meanwhile
        if (chunk > 0) __syncthreads();  // previous chunk consumed
        stage_chunk(a, assignment_smem, chunk, chunk_smem);
        __syncthreads();
        if (has_block) accumulate_block<TM, Weights>(block, a.rows - row0, chunk_smem, acc);
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
        for (int t = 0; t < TM; ++t) acc[r][t] = warp_sum(acc[r][t]);
    store_rows<kGateUp>(a, tile.expert, row0, assignment, acc);
}

// Kernels for passes with at most one assignment per expert on average (decode), one assignment per tile.
template <typename TIn, typename Weights>
__global__ void __launch_bounds__(kMoeThreads) moe_gate_up_decode_kernel(ExpertArgs<TIn, Weights> a) {
    expert_tile<true, kDecodeTileTokens>(a);
}

template <typename Weights>
__global__ void __launch_bounds__(kMoeThreads) moe_down_decode_kernel(ExpertArgs<float, Weights> a) {
    expert_tile<false, kDecodeTileTokens>(a);
}

// Kernels for larger passes (prefill), kTileTokens assignments per tile.
template <typename TIn, typename Weights>
__global__ void __launch_bounds__(kMoeThreads) moe_gate_up_kernel(ExpertArgs<TIn, Weights> a) {
    expert_tile<true, kTileTokens>(a);
}

template <typename Weights>
__global__ void __launch_bounds__(kMoeThreads) moe_down_kernel(ExpertArgs<float, Weights> a) {
    expert_tile<false, kTileTokens>(a);
}

// out[t, j] = sum_k weight[t, k] * y[t * K + k, j] over the valid experts, in float32.
template <typename T>
__global__ void moe_combine_kernel(const int32_t* expert_ids, const T* expert_weights, const float* y, int tokens,
                                   int top_k, int hidden, int num_experts, T* out) {
    const size_t total = static_cast<size_t>(tokens) * hidden;
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const size_t t = i / hidden, j = i % hidden;
        float sum = 0.0f;
        for (int k = 0; k < top_k; ++k) {
            const size_t a = t * top_k + k;
            const int e = expert_ids[a];
            if (e >= 0 && e < num_experts) sum = fmaf(to_float(expert_weights[a]), y[a * hidden + j], sum);
        }
        out[i] = from_float<T>(sum);
    }
}

// ---------------------------------------------------------------- host side

struct Workspace {
    Routing routing;
    float* h;  // [A, I]
    float* y;  // [A, H]
    size_t bytes;
};

// Carves the workspace of one pass (at most kMaxTokensPerPass tokens); base may be null to get the size only.
Workspace carve_workspace(const gptoss_moe_desc& d, void* base) {
    const size_t assignments = static_cast<size_t>(std::min(d.num_tokens, kMaxTokensPerPass)) * d.top_k;
    const size_t tiles = std::max(max_tiles(static_cast<int>(assignments), d.num_experts, kDecodeTileTokens),
                                  max_tiles(static_cast<int>(assignments), d.num_experts, kTileTokens));
    size_t offset = 0;
    auto take = [&](size_t bytes) {
        char* p = base ? static_cast<char*>(base) + offset : nullptr;
        offset += align_up(bytes, 256);
        return p;
    };
    Workspace w{};
    w.routing.perm = reinterpret_cast<int*>(take(assignments * sizeof(int)));
    w.routing.tiles = reinterpret_cast<Tile*>(take(tiles * sizeof(Tile)));
    w.routing.num_tiles = reinterpret_cast<int*>(take(sizeof(int)));
    w.h = reinterpret_cast<float*>(take(assignments * d.intermediate_size * sizeof(float)));
    w.y = reinterpret_cast<float*>(take(assignments * d.hidden_size * sizeof(float)));
    w.bytes = offset;
    return w;
}

bool valid_desc(const gptoss_moe_desc* d) {
    if (!d || d->num_tokens <= 0 || d->hidden_size <= 0 || d->intermediate_size <= 0 || d->num_experts <= 0 ||
        d->top_k <= 0 || d->top_k > d->num_experts || d->num_experts > kMaxExperts ||
        d->hidden_size % kBlockElems != 0 || d->intermediate_size % kBlockElems != 0 || !is_float_dtype(d->dtype)) {
        return false;
    }
    switch (d->weight_format) {
        case GPTOSS_WEIGHTS_FLOAT: return is_float_dtype(d->weight_dtype);
        case GPTOSS_WEIGHTS_MXFP4: return d->weight_dtype == GPTOSS_UINT8;
    }
    return false;
}

// Pointers of one call, already offset to the current pass where they are per token.
struct MoeCall {
    const void* hidden;
    const int32_t* expert_ids;
    const void* expert_weights;
    void* out;
    int tokens;
};

template <int TM, typename TAct, typename Weights>
int launch_experts(const gptoss_moe_desc& d, const MoeCall& c, const Weights& gate_up, const Weights& down,
                   const float* gate_up_bias, const float* down_bias, const Workspace& ws, cudaStream_t stream) {
    const int assignments = c.tokens * d.top_k;
    const int tiles = max_tiles(assignments, d.num_experts, TM);
    const int two_i = 2 * d.intermediate_size;

    ExpertArgs<TAct, Weights> first{static_cast<const TAct*>(c.hidden), d.top_k, gate_up, gate_up_bias, ws.h,
                                    two_i, d.hidden_size, d.swiglu_alpha, d.swiglu_limit, ws.routing};
    ExpertArgs<float, Weights> second{ws.h, 1, down, down_bias, ws.y, d.hidden_size, d.intermediate_size,
                                      d.swiglu_alpha, d.swiglu_limit, ws.routing};
    const dim3 grid_first(tiles, ceil_div(two_i, kRowsPerBlock));
    const dim3 grid_second(tiles, ceil_div(d.hidden_size, kRowsPerBlock));
    if (TM == kDecodeTileTokens) {
        GPTOSS_LAUNCH(grid_first, kMoeThreads, 0, stream, moe_gate_up_decode_kernel)(first);
        GPTOSS_CUDA_TRY(cudaGetLastError());
        GPTOSS_LAUNCH(grid_second, kMoeThreads, 0, stream, moe_down_decode_kernel)(second);
    } else {
        GPTOSS_LAUNCH(grid_first, kMoeThreads, 0, stream, moe_gate_up_kernel)(first);
        GPTOSS_CUDA_TRY(cudaGetLastError());
        GPTOSS_LAUNCH(grid_second, kMoeThreads, 0, stream, moe_down_kernel)(second);
    }
    return static_cast<int>(cudaGetLastError());
}

template <typename TAct, typename Weights>
int run_pass(const gptoss_moe_desc& d, const MoeCall& c, const Weights& gate_up, const Weights& down,
             const float* gate_up_bias, const float* down_bias, const Workspace& ws, cudaStream_t stream) {
    const int assignments = c.tokens * d.top_k;
    const int tile_tokens = assignments <= d.num_experts ? kDecodeTileTokens : kTileTokens;
    GPTOSS_LAUNCH(1, kRouteThreads, 0, stream, moe_route_kernel)(c.expert_ids, assignments, d.num_experts, tile_tokens,
                                                                ws.routing);
    GPTOSS_CUDA_TRY(cudaGetLastError());
    const int err = tile_tokens == kDecodeTileTokens
                        ? launch_experts<kDecodeTileTokens, TAct>(d, c, gate_up, down, gate_up_bias, down_bias, ws,
                                                                  stream)
                        : launch_experts<kTileTokens, TAct>(d, c, gate_up, down, gate_up_bias, down_bias, ws, stream);
    if (err) return err;
    const size_t total = static_cast<size_t>(c.tokens) * d.hidden_size;
    const int blocks = static_cast<int>(std::min<size_t>((total + 255) / 256, 4096));
    GPTOSS_LAUNCH(blocks, 256, 0, stream, moe_combine_kernel<TAct>)(
        c.expert_ids, static_cast<const TAct*>(c.expert_weights), ws.y, c.tokens, d.top_k, d.hidden_size,
        d.num_experts, static_cast<TAct*>(c.out));
    return static_cast<int>(cudaGetLastError());
}

template <typename TAct, typename Weights>
int run_moe(const gptoss_moe_desc& d, const MoeCall& call, const Weights& gate_up, const Weights& down,
            const float* gate_up_bias, const float* down_bias, void* workspace, cudaStream_t stream) {
    const Workspace ws = carve_workspace(d, workspace);
    for (int t0 = 0; t0 < d.num_tokens; t0 += kMaxTokensPerPass) {
        MoeCall pass = call;
        pass.tokens = std::min(kMaxTokensPerPass, d.num_tokens - t0);
        pass.hidden = static_cast<const TAct*>(call.hidden) + static_cast<size_t>(t0) * d.hidden_size;
        pass.expert_ids = call.expert_ids + static_cast<size_t>(t0) * d.top_k;
        pass.expert_weights = static_cast<const TAct*>(call.expert_weights) + static_cast<size_t>(t0) * d.top_k;
        pass.out = static_cast<TAct*>(call.out) + static_cast<size_t>(t0) * d.hidden_size;
        if (const int err = run_pass<TAct>(d, pass, gate_up, down, gate_up_bias, down_bias, ws, stream)) return err;
    }
    return 0;
}

}  // namespace
}  // namespace gptoss

extern "C" {

GPTOSS_EXPORT size_t gptoss_moe_workspace_size(const gptoss_moe_desc* desc) {
    return gptoss::valid_desc(desc) ? gptoss::carve_workspace(*desc, nullptr).bytes : 0;
}

GPTOSS_EXPORT int gptoss_moe(const gptoss_moe_desc* desc, const void* hidden, const int32_t* expert_ids,
                             const void* expert_weights, const void* gate_up_weight, const uint8_t* gate_up_scales,
                             const float* gate_up_bias, const void* down_weight, const uint8_t* down_scales,
                             const float* down_bias, void* out, void* workspace, gptoss_stream stream) {
    using namespace gptoss;
    const bool mxfp4 = desc && desc->weight_format == GPTOSS_WEIGHTS_MXFP4;
    if (!valid_desc(desc) || !hidden || !expert_ids || !expert_weights || !gate_up_weight || !gate_up_bias ||
        !down_weight || !down_bias || !out || !workspace || (mxfp4 && (!gate_up_scales || !down_scales)) ||
        !is_aligned(gate_up_weight, 16) || !is_aligned(down_weight, 16) || !is_aligned(workspace, 16)) {
        return static_cast<int>(cudaErrorInvalidValue);
    }
    const MoeCall call{hidden, expert_ids, expert_weights, out, desc->num_tokens};
    return dispatch_float_dtype(desc->dtype, [&](auto act) {
        using TAct = decltype(act);
        if (mxfp4) {
            const Mxfp4Weights gate_up{static_cast<const uint8_t*>(gate_up_weight), gate_up_scales};
            const Mxfp4Weights down{static_cast<const uint8_t*>(down_weight), down_scales};
            return run_moe<TAct>(*desc, call, gate_up, down, gate_up_bias, down_bias, workspace, stream);
        }
        return dispatch_float_dtype(desc->weight_dtype, [&](auto weight) {
            using W = decltype(weight);
            const FloatWeights<W> gate_up{static_cast<const W*>(gate_up_weight)};
            const FloatWeights<W> down{static_cast<const W*>(down_weight)};
            return run_moe<TAct>(*desc, call, gate_up, down, gate_up_bias, down_bias, workspace, stream);
        });
    });
}

}  // extern "C"
