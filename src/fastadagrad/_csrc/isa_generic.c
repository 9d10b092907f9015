/* The loops of loops.h compiled for the generic ISA level (flags: setup.py ISA_FLAGS). */
#define FA_ISA generic
#include "loops.h"
