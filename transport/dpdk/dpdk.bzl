"""Compiler options for code that includes DPDK's headers, written once."""

# DPDK's headers want SSE4.2 (its pkg-config cflags say -march=corei7, which only applies to the
# @dpdk library itself) and use volatile compound assignments that C++20 deprecates.
DPDK_COPTS = [
    "-march=corei7",
    "-Wno-volatile",
]
