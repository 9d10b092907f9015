/* Runtime ISA choice, compiled with baseline flags: which loop tables this build holds and which
 * of them this CPU can run. Nothing here executes an instruction beyond the x86-64 baseline. */
#include <string.h>
#include "kernel_table.h"

extern const KernelTable fa_table_generic;
#ifdef FA_HAVE_AVX2
extern const KernelTable fa_table_avx2;
#endif
#ifdef FA_HAVE_AVX512
extern const KernelTable fa_table_avx512;
#endif

const char *const fa_isa_compiled[] = {
#ifdef FA_HAVE_AVX512
    "avx512",
#endif
#ifdef FA_HAVE_AVX2
    "avx2",
#endif
    "generic",
    NULL,
};

int fa_cpu_supports(const char *isa)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    /* libgcc's cpuid reader also checks that the OS saves the vector state (XCR0). */
    __builtin_cpu_init();
    /* F16C: the units are compiled with -mf16c (float16 conversions, loops_mixed.h) */
    if (strcmp(isa, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    if (strcmp(isa, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("f16c")
               && __builtin_cpu_supports("avx512vl")
               && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    return strcmp(isa, "generic") == 0;
}

const KernelTable *fa_kernel_table(const char *isa)
{
    if (!fa_cpu_supports(isa))
        return NULL;
#ifdef FA_HAVE_AVX512
    if (strcmp(isa, "avx512") == 0)
        return &fa_table_avx512;
#endif
#ifdef FA_HAVE_AVX2
    if (strcmp(isa, "avx2") == 0)
        return &fa_table_avx2;
#endif
    if (strcmp(isa, "generic") == 0)
        return &fa_table_generic;
    return NULL;
}
