/* The loops of loops.h compiled for the generic ISA level (flags: setup.py ISA_FLAGS). */
#define FA_ISA generic
#include "loops.h"

/* The stochastic-rounding keys (kernel_table.h): compiled once, here, with the baseline flags. */
void fa_sr_keys(uint64_t seed, int64_t step, SrKey *key)
{
    uint64_t st = (uint64_t)step;
    key->k0 = FA_FN(hash32)((uint32_t)seed ^ FA_FN(hash32)((uint32_t)(seed >> 32) ^ FA_FN(hash32)(
        (uint32_t)st ^ FA_FN(hash32)((uint32_t)(st >> 32) ^ 0x5eedu))));
    key->k1 = FA_FN(hash32)(key->k0 ^ 0x9e3779b9u);
}
