# The AdaGrad loops of _loops.pxi compiled for the avx2 ISA level (flags: setup.py ISA_FLAGS).
cdef const char* ISA_NAME = b"avx2"
include "_loops.pxi"
