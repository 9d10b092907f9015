/* The loops of loops.h compiled for the avx512 ISA level (flags: setup.py ISA_FLAGS). */
#define FA_ISA avx512
#include "loops.h"
