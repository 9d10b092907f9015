/* The loops of loops.h compiled for the avx2 ISA level (flags: setup.py ISA_FLAGS). */
#define FA_ISA avx2
#include "loops.h"
