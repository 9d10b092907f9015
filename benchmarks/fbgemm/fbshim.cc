// Benchmark-only ctypes shim around fbgemm::GenerateSparseAdaGrad<int64_t>.
#include <cstdint>
#include <functional>
#include <new>
#include <cpuinfo.h>
#include "fbgemm/FbgemmEmbedding.h"
#include "fbgemm/Utils.h"

using Kernel = fbgemm::SparseAdaGradSignature<std::int64_t>::Type;

extern "C" {

// D = block_size; rowwise: 0 element-wise accum (N*D floats), 1 row-wise accum (N floats);
// prefetch: FBGEMM's default is 16; use_weight_decay = false (plain AdaGrad).
void* fb_make(int D, int rowwise, int prefetch) {
  try {
    auto k = fbgemm::GenerateSparseAdaGrad<std::int64_t>(
        D, rowwise != 0, prefetch, /*use_weight_decay=*/false);
    if (!k) return nullptr;
    return new Kernel(std::move(k));
  } catch (...) {
    return nullptr;
  }
}

void fb_free(void* k) { delete static_cast<Kernel*>(k); }

// Returns the number of rows processed (== num_rows on success). param_size = N * D (size of w).
// FBGEMM adds: w += lr * g / (sqrt(h) + eps); pass a negative lr for a descent step.
int fb_run(void* k, std::int64_t num_rows, std::int64_t param_size, float* w, const float* g,
           float* h, const std::int64_t* indices, float epsilon, float lr) {
  return (*static_cast<Kernel*>(k))(static_cast<int>(num_rows),
                                    static_cast<std::uint64_t>(param_size), w, g, h, indices,
                                    epsilon, lr, /*weight_decay=*/0.0f, /*counter=*/nullptr,
                                    /*counter_halflife=*/0);
}

// Diagnostic only: fb_run, then vzeroupper (FBGEMM's JIT epilogue emits none, so the caller
// returns to legacy-SSE code with the upper YMM halves dirty).
int fb_run_vzu(void* k, std::int64_t num_rows, std::int64_t param_size, float* w,
               const float* g, float* h, const std::int64_t* indices, float epsilon, float lr) {
  int r = fb_run(k, num_rows, param_size, w, g, h, indices, epsilon, lr);
  asm volatile("vzeroupper" ::: "memory");
  return r;
}

// bit 0: fbgemmHasAvx2Support(), bit 1: fbgemmHasAvx512Support(),
// bit 2: fbgemmInstructionSet() == avx512 (or avx512_vnni...), as FBGEMM sees the CPU.
// NB: GenerateSparseAdaGrad (src/SparseAdagrad.cc at this commit) instantiates
// GenSparseAdagrad<IndexType, inst_set_t::avx2> unconditionally whenever AVX2 or AVX-512 is
// present, so its JIT code is AVX2 (ymm) even on AVX-512 CPUs; see fb_jit_isa().
int fb_isa() {
  cpuinfo_initialize();
  int r = 0;
  if (fbgemm::fbgemmHasAvx2Support()) r |= 1;
  if (fbgemm::fbgemmHasAvx512Support()) r |= 2;
  auto s = fbgemm::fbgemmInstructionSet();
  if (s != fbgemm::inst_set_t::avx2 && s != fbgemm::inst_set_t::anyarch) r |= 4;
  return r;
}

// The ISA the SparseAdaGrad JIT path takes, per the dispatch in GenerateSparseAdaGrad:
// 2 = AVX2 JIT generator (taken if fbgemmHasAvx512Support() || fbgemmHasAvx2Support()),
// 0 = reference C++ path.
int fb_jit_isa() {
  cpuinfo_initialize();
  return (fbgemm::fbgemmHasAvx512Support() || fbgemm::fbgemmHasAvx2Support()) ? 2 : 0;
}

}  // extern "C"
