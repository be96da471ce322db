// bf16 x bf16 gemm tiles on AMX (Sapphire Rapids and later): TDPBF16PS multiplies a 16-row x 32-element tile of
// weights by 32 elements x up to 16 tokens of activations and adds into 16 x 16 float32 sums, off the vector ports.
// A tile of weight rows loads straight from the [N, K] matrix (its stride is the row pitch); the activations are
// packed once per call into the layout the instruction reads (pack_activations). bf16 products are exact in float32,
// as with vdpbf16ps; denormal inputs read as zero and the sums are float32, rounded to nearest even.
#include "amx.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f")
// GCC 12's avx512fintrin.h builds undefined vectors by self-initialization (see isa_avx512.cpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace gptoss_cpu::amx {
namespace {

constexpr int kTileRows = 16;    // weight rows per tile
constexpr int kTileK = 32;       // bf16 elements per tile row (64 bytes)
constexpr int kTileTokens = 16;  // tokens per activation tile
constexpr int kRowTiles = 2;     // weight tiles sharing one activation tile

// The tiles: 0-1 sums (weight rows x tokens, float32), 2-3 weights, 4 activations.
struct alignas(64) TileConfig {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

TileConfig make_config() {
    TileConfig config;
    for (int t = 0; t < 5; ++t) config.rows[t] = kTileRows, config.colsb[t] = 64;
    return config;
}

// Rows [r, r + 16 * R) x the first n tokens of a packed chunk of 16 into c[token * ldc + row - r] (R row tiles share
// each activation tile). Each weight row is prefetched a few blocks ahead: 16 or 32 rows read side by side are too
// many streams for the hardware prefetchers. Over its last blocks the tile prefetches the first blocks of the rows of
// `next` (the tile the thread runs next, or nullptr), which would otherwise start on demand misses (5% faster at
// K = 2880).
template <int R>
void row_tiles(const uint16_t* w, int k, const uint32_t* packed, int r, int n, float* c, int ldc, const char* next) {
    const size_t pitch = static_cast<size_t>(k) * sizeof(uint16_t);
    const char* base = reinterpret_cast<const char*>(w + static_cast<size_t>(r) * k);
    constexpr int kAhead = 8;  // blocks
    const int blocks = k / kTileK;
    _tile_zero(0);
    if constexpr (R > 1) _tile_zero(1);
    for (int b = 0; b < blocks; ++b) {
        const size_t offset = static_cast<size_t>(b) * kTileK * sizeof(uint16_t);
        const char* ahead = b + kAhead < blocks ? base + offset + kAhead * 64
                            : next             ? next + static_cast<size_t>(b + kAhead - blocks) * 64
                                               : nullptr;
        if (ahead) {
            for (int i = 0; i < kTileRows * R; ++i) __builtin_prefetch(ahead + i * pitch, 0, 2);
        }
        _tile_loadd(4, packed + static_cast<size_t>(b) * kTileRows * kTileTokens, kTileTokens * sizeof(uint32_t));
        _tile_loadd(2, base + offset, pitch);
        _tile_dpbf16ps(0, 2, 4);
        if constexpr (R > 1) {
            _tile_loadd(3, base + kTileRows * pitch + offset, pitch);
            _tile_dpbf16ps(1, 3, 4);
        }
    }
    alignas(64) float sums[kRowTiles][kTileRows][kTileTokens];
    _tile_stored(0, sums[0], kTileTokens * sizeof(float));
    if constexpr (R > 1) _tile_stored(1, sums[1], kTileTokens * sizeof(float));
    for (int q = 0; q < R; ++q) {
        for (int i = 0; i < kTileRows; ++i) {
            for (int j = 0; j < n; ++j) c[j * ldc + q * kTileRows + i] = sums[q][i][j];
        }
    }
}

bool request_permission() {
    constexpr long kArchRequestXcompPerm = 0x1023, kXfeatureTileData = 18;  // <asm/prctl.h>, XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, kArchRequestXcompPerm, kXfeatureTileData) == 0;
}

}  // namespace

bool available() {
    static const bool usable =
        __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") && request_permission();
    return usable;
}

size_t packed_size(int k, int tokens) {
    const size_t chunks = (tokens + kTileTokens - 1) / kTileTokens;
    return chunks * (k / kTileK) * kTileRows * kTileTokens;
}

void pack_activations(const uint16_t* x, size_t ldx, int k, int tokens, uint32_t* packed) {
    const int blocks = k / kTileK;
    std::fill(packed, packed + packed_size(k, tokens), 0u);
    for (int t = 0; t < tokens; ++t) {
        uint32_t* chunk = packed + static_cast<size_t>(t / kTileTokens) * blocks * kTileRows * kTileTokens;
        for (int b = 0; b < blocks; ++b) {
            for (int p = 0; p < kTileRows; ++p) {
                std::memcpy(chunk + (static_cast<size_t>(b) * kTileRows + p) * kTileTokens + t % kTileTokens,
                            x + t * ldx + b * kTileK + 2 * p, sizeof(uint32_t));
            }
        }
    }
}

bool fits(int k) { return k % kTileK == 0; }

int gemm_bf16(const Gemm& g, int r0, int r1, int t0, int t1, float* c, int ldc) {
    static const TileConfig config = make_config();
    const auto* w = static_cast<const uint16_t*>(g.w);
    const auto* packed = static_cast<const uint32_t*>(g.packed);
    const size_t chunk_size = static_cast<size_t>(g.k / kTileK) * kTileRows * kTileTokens;
    const int end = r0 + (r1 - r0) / kTileRows * kTileRows;
    _tile_loadconfig(&config);
    for (int t = t0; t < t1; t += kTileTokens) {  // t0 is a multiple of 16, as the tasks' token chunks are
        const int n = std::min(kTileTokens, t1 - t);
        const uint32_t* chunk = packed + t / kTileTokens * chunk_size;
        float* ct = c + (t - t0) * ldc;
        const auto tile = [&](int row) {  // rows from `row`; past the task's tiles, what the thread runs next
            return row < end ? reinterpret_cast<const char*>(w + static_cast<size_t>(row) * g.k)
                             : t + kTileTokens < t1 ? nullptr : static_cast<const char*>(g.next);
        };
        int r = r0;
        for (; r + kRowTiles * kTileRows <= end; r += kRowTiles * kTileRows) {
            row_tiles<kRowTiles>(w, g.k, chunk, r, n, ct + (r - r0), ldc, tile(r + kRowTiles * kTileRows));
        }
        for (; r < end; r += kTileRows) row_tiles<1>(w, g.k, chunk, r, n, ct + (r - r0), ldc, tile(r + kTileRows));
    }
    _tile_release();  // so that a context switch saves no tile data
    return end;
}

}  // namespace gptoss_cpu::amx

#pragma GCC pop_options
