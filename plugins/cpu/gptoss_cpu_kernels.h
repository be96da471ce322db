/*
 * gptoss-export CPU kernels: libgptoss_cpu_kernels.so implements the C ABI of gptoss_kernels.h on the host
 * (same functions, descriptors, semantics and error codes; pointers are host pointers, `stream` is ignored) and
 * adds the functions below, which a CPU decode step needs besides the two ops.
 *
 * Differences from the CUDA build: no alignment requirement; gptoss_sink_attention_workspace_size returns 0 (the
 * workspace is unused); MoE still needs the workspace that gptoss_moe_workspace_size asks for. E8M0 scales decode
 * exactly over their whole range (2^-127 .. 2^128).
 * Threads: a persistent pool of GPTOSS_CPU_THREADS threads (default: the CPUs this process may run on), the
 * calling thread included. Calls from several threads at once are serialized.
 */
#ifndef GPTOSS_CPU_KERNELS_H
#define GPTOSS_CPU_KERNELS_H

#include "gptoss_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gptoss_linear_desc {
    int32_t num_tokens;        /* T */
    int32_t in_features;       /* K */
    int32_t out_features;      /* N */
    gptoss_dtype x_dtype;      /* x [T,K]: FLOAT32, FLOAT16 or BFLOAT16 */
    gptoss_dtype weight_dtype; /* weight [N,K]: FLOAT32, FLOAT16 or BFLOAT16 */
    gptoss_dtype bias_dtype;   /* bias [N]: FLOAT32, FLOAT16 or BFLOAT16 (ignored when bias is NULL) */
    gptoss_dtype y_dtype;      /* y [T,N]: FLOAT32, FLOAT16 or BFLOAT16 */
} gptoss_linear_desc;

/*
 * y = x @ weight^T + bias, row-major and contiguous; bias may be NULL. Products and sums in float32, y rounded
 * once. bf16 x with bf16 weights uses AMX tiles or AVX512-BF16 dot products where the CPU has them (bf16
 * denormals, below 1.2e-38, then count as zero); every other combination converts exactly to float32 and uses FMA.
 * Returns 0, or 1 (cudaErrorInvalidValue) for a bad descriptor or NULL pointer.
 */
int gptoss_cpu_linear(const gptoss_linear_desc* desc, const void* x, const void* weight, const void* bias, void* y);

/* 1 when bf16 x bf16 linears run on AMX tiles (ISA "avx512", a CPU with AMX-BF16 that the kernel lets us use). */
int gptoss_cpu_linear_tiles(void);

/*
 * One decode step of a decoder layer up to its MoE, for B rows of one new token each (exporter/model.py):
 *   h += residual (the previous layer's MoE output, [B,H]; skipped when NULL)   (in place);
 *   normed = rmsnorm(h, input_norm); q, k, v = linears of normed; RoPE on q and k with cos/sin [B, D/2];
 *   sink attention over kv_cache (updated in place, as gptoss_sink_attention with kv_cache_out = kv_cache);
 *   h += o_proj(attention)   (in place);   normed = rmsnorm(h, post_norm);   router_logits = router(normed).
 * h, residual, normed [B,H], cos, sin, router_logits [B,E], the dense weights and biases and the cache are of
 * `dtype`; norms and sinks float32. Each op rounds where the PyTorch model rounds (residual adds and RMSNorm in
 * float32; RoPE's products, sums and differences each to dtype). Returns 0, or 1 for a bad descriptor or NULL
 * pointer (biases and residual may be NULL).
 */
typedef struct gptoss_decode_attention_desc {
    int32_t batch;          /* B */
    int32_t hidden_size;    /* H */
    int32_t num_heads;      /* Hq */
    int32_t num_kv_heads;   /* Hkv */
    int32_t head_dim;       /* D */
    int32_t capacity;       /* C: cache slots per row */
    int32_t sliding_window; /* W: 0 = full attention */
    int32_t num_experts;    /* E: router outputs */
    float rms_norm_eps;
    float scale; /* attention score scale */
    gptoss_dtype dtype;
} gptoss_decode_attention_desc;

typedef struct gptoss_decode_attention_weights {
    const float* input_norm; /* [H] */
    const float* post_norm;  /* [H] */
    const float* sinks;      /* [Hq] */
    const void* q;           /* [Hq*D, H] */
    const void* q_bias;
    const void* k; /* [Hkv*D, H] */
    const void* k_bias;
    const void* v; /* [Hkv*D, H] */
    const void* v_bias;
    const void* o; /* [H, Hq*D] */
    const void* o_bias;
    const void* router; /* [E, H] */
    const void* router_bias;
} gptoss_decode_attention_weights;

size_t gptoss_cpu_decode_attention_workspace_size(const gptoss_decode_attention_desc* desc);
int gptoss_cpu_decode_attention(const gptoss_decode_attention_desc* desc,
                                const gptoss_decode_attention_weights* weights, void* h, const void* residual,
                                const void* cos, const void* sin, void* kv_cache, const int32_t* past_len,
                                const int32_t* new_len, void* normed, void* router_logits, void* workspace);

/* Threads used by every kernel (the caller included); set_num_threads(0) goes back to the default. */
int gptoss_cpu_num_threads(void);
void gptoss_cpu_set_num_threads(int num_threads);

/*
 * Instruction set of the kernels: "avx512" (AVX-512F, plus AVX512-BF16 dot products when present), "avx2"
 * (AVX2 + FMA + F16C) or "scalar". The best one the CPU supports is picked at load, or $GPTOSS_CPU_ISA;
 * set_isa returns 0, or 1 when the name is unknown or the CPU lacks it.
 */
const char* gptoss_cpu_isa(void);
int gptoss_cpu_set_isa(const char* name);

/* Sum of `count` floats read at full memory bandwidth on all threads: a reference for the kernels' bandwidth. */
float gptoss_cpu_read(const float* data, size_t count);

#ifdef __cplusplus
}
#endif

#endif /* GPTOSS_CPU_KERNELS_H */
