# The AdaGrad loops of _loops.pxi compiled for the generic ISA level (flags: setup.py ISA_FLAGS).
cdef const char* ISA_NAME = b"generic"
include "_loops.pxi"
