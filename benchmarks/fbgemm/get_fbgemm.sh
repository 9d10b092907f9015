#!/bin/sh
# Fetch the FBGEMM sources the shim is built from (benchmark only; nothing here is shipped),
# at the commit README's figures were measured with, and the two submodules it needs.
set -e
cd "$(dirname "$0")"
COMMIT=71d6f8b229d964e61cac24df9bbd2ffcc4b4d378
[ -d FBGEMM/.git ] || git clone --filter=blob:none https://github.com/pytorch/FBGEMM.git FBGEMM
git -C FBGEMM checkout -q "$COMMIT"
git -C FBGEMM submodule update --init external/asmjit external/cpuinfo
