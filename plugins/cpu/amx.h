// bf16 x bf16 gemm tiles on AMX (amx.cpp), for CPUs that have AMX-BF16 and a kernel that grants its tile state.
#ifndef GPTOSS_CPU_AMX_H
#define GPTOSS_CPU_AMX_H

#include "isa.h"

namespace gptoss_cpu::amx {

// Whether this CPU has AMX-BF16 and this process may use it (asked of the kernel once).
bool available();

// Whether gemm_bf16 takes a K of `k` elements (a multiple of 32).
bool fits(int k);

// Activations as gemm_bf16 reads them: for each chunk of 16 tokens and each 32-element block, 16 rows of 16
// dwords, row p holding elements (2p, 2p + 1) of each token (zero past the last token). x is bf16 [tokens, ldx].
size_t packed_size(int k, int tokens);  // uint32 elements
void pack_activations(const uint16_t* x, size_t ldx, int k, int tokens, uint32_t* packed);

// isa.h's GemmFn for bf16 weights with a K that fits, reading g.packed (t0 a multiple of 16), over the rows it tiles:
// [r0, end) with end the last multiple of 16 rows. Returns end; the caller computes the rows after it.
int gemm_bf16(const Gemm& g, int r0, int r1, int t0, int t1, float* c, int ldc);

}  // namespace gptoss_cpu::amx

#endif  // GPTOSS_CPU_AMX_H
