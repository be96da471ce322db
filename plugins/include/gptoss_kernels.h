/*
 * gptoss-export CUDA kernels behind a plain C ABI (no TensorRT needed).
 *
 * The TensorRT plugins (plugins/<op>/<op>_plugin.cpp) and the Python tests (through ctypes) both call these.
 * Semantics are those of the PyTorch reference ops in exporter/ops.py and of docs/ops.md.
 * Every function returns 0 on success or a cudaError_t code (never aborts); pointers are device pointers.
 * Each op function takes its descriptor, then its inputs and outputs in the order of the op's signature
 * (runtime/op_signatures.py, from which the Python binding is derived), then the workspace and the stream.
 *
 * Limits (cudaErrorInvalidValue otherwise): head_dim a multiple of 8 and at most 128; hidden_size and
 * intermediate_size multiples of 32 (both weight formats); at most 1024 experts, top_k <= num_experts;
 * q, k, v, caches and weights 16-byte aligned. past_len + new_len <= capacity is the caller's duty (device
 * values are clamped to stay in bounds, results are then unspecified). E8M0 scales above 2^113 give inf.
 * Workspace sizes depend only on the descriptor's maxima (sink attention: not on seq_len), so a size
 * computed for the largest shape serves every smaller call; attention accepts a NULL workspace (no key
 * splitting), MoE requires one.
 */
#ifndef GPTOSS_KERNELS_H
#define GPTOSS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st* gptoss_stream; /* a cudaStream_t */

typedef enum gptoss_dtype {
    GPTOSS_FLOAT32 = 0,
    GPTOSS_FLOAT16 = 1,
    GPTOSS_BFLOAT16 = 2,
    GPTOSS_UINT8 = 3
} gptoss_dtype;

/* ---------------------------------------------------------------- SinkAttention */

typedef struct gptoss_attention_desc {
    int32_t batch;          /* B */
    int32_t seq_len;        /* S: new tokens per row (rows right-padded; new_len[b] valid) */
    int32_t num_heads;      /* Hq */
    int32_t num_kv_heads;   /* Hkv; Hq % Hkv == 0, query head h reads KV head h / (Hq / Hkv) */
    int32_t head_dim;       /* D */
    int32_t capacity;       /* C: cache slots per row */
    int32_t sliding_window; /* W: 0 = full attention (slot = position); else C == W, slot = position % W */
    float scale;            /* applied to q.k before the softmax */
    gptoss_dtype dtype;     /* q, k, v, out, kv caches: FLOAT32, FLOAT16 or BFLOAT16 */
} gptoss_attention_desc;

/* Bytes of scratch device memory gptoss_sink_attention needs for this shape (may be 0). */
size_t gptoss_sink_attention_workspace_size(const gptoss_attention_desc* desc);

/*
 * q [B,S,Hq*D], k/v [B,S,Hkv*D] (RoPE applied), sinks [Hq] float32, kv_cache_in/out [B,2,Hkv,C,D],
 * past_len/new_len [B] int32, out [B,S,Hq*D].
 * Query s of row b (position p = past_len[b] + s, valid when s < new_len[b]) attends to the cached and new
 * keys at positions [p-W+1, p] (sliding) or [0, p] (full); exp(sinks[h]) joins the softmax denominator;
 * softmax and accumulation in float32. Padded queries (s >= new_len[b]) get zeros.
 * Afterwards kv_cache_out holds kv_cache_in with the valid new keys/values written to their slots (on ring
 * layers only the last W new tokens). kv_cache_out may equal kv_cache_in (in-place update); when it does
 * not, the rest of the cache is copied.
 */
int gptoss_sink_attention(const gptoss_attention_desc* desc, const void* q, const void* k, const void* v,
                          const float* sinks, const void* kv_cache_in, const int32_t* past_len,
                          const int32_t* new_len, void* out, void* kv_cache_out, void* workspace,
                          gptoss_stream stream);

/* ---------------------------------------------------------------- MoE */

typedef enum gptoss_weight_format { GPTOSS_WEIGHTS_FLOAT = 0, GPTOSS_WEIGHTS_MXFP4 = 1 } gptoss_weight_format;

typedef struct gptoss_moe_desc {
    int32_t num_tokens;        /* T */
    int32_t hidden_size;       /* H */
    int32_t intermediate_size; /* I */
    int32_t num_experts;       /* E */
    int32_t top_k;             /* K */
    float swiglu_alpha;        /* 1.702 */
    float swiglu_limit;        /* 7.0 */
    gptoss_dtype dtype;        /* hidden, expert_weights, out: FLOAT32, FLOAT16 or BFLOAT16 */
    gptoss_weight_format weight_format;
    gptoss_dtype weight_dtype; /* FLOAT: FLOAT32/FLOAT16/BFLOAT16 weights; MXFP4: UINT8 blocks */
} gptoss_moe_desc;

size_t gptoss_moe_workspace_size(const gptoss_moe_desc* desc);

/*
 * hidden [T,H], expert_ids [T,K] int32, expert_weights [T,K] (dtype), biases float32: gate_up_bias [E,2I],
 * down_bias [E,H]. Weights are [out, in] per expert:
 *   FLOAT: gate_up_weight [E,2I,H], down_weight [E,H,I] (weight_dtype); scales are NULL.
 *   MXFP4: gate_up_weight = blocks [E,2I,H/32,16] uint8, gate_up_scales [E,2I,H/32] uint8 (E8M0, bias 127),
 *          down_weight = blocks [E,H,I/32,16], down_scales [E,H,I/32]; byte j of a block holds element 2j in
 *          its low nibble and 2j+1 in its high nibble (FP4 E2M1). Dequantized on the fly, never in memory.
 * For each token and selected expert: u = W1 x + b1; gate = min(u[0::2], limit);
 * up = clamp(u[1::2], -limit, limit); h = gate * sigmoid(alpha * gate) * (up + 1); y = W2 h + b2;
 * out = sum_k expert_weights[k] * y_k, accumulated in float32.
 */
int gptoss_moe(const gptoss_moe_desc* desc, const void* hidden, const int32_t* expert_ids,
               const void* expert_weights, const void* gate_up_weight, const uint8_t* gate_up_scales,
               const float* gate_up_bias, const void* down_weight, const uint8_t* down_scales,
               const float* down_bias, void* out, void* workspace, gptoss_stream stream);

/* Version string of the kernel library ("1.x.y"); the plugin version is its major number. */
const char* gptoss_kernels_version(void);

#ifdef __cplusplus
}
#endif

#endif /* GPTOSS_KERNELS_H */
