# The AdaGrad loops of _loops.pxi compiled for the avx512 ISA level (flags: setup.py ISA_FLAGS).
cdef const char* ISA_NAME = b"avx512"
include "_loops.pxi"
