// Constants shared by the kernels, the torch binding and Python.
//
// Defined here once.  The binding (csrc/pytorch/acon_cpu.cpp) exports them as
// attributes of the compiled module (`ext.SEG`, ...), which is how Python reads them
// (acon_mm/ops/cpu_ext.py); the build cache key hashes this file with the other
// sources, so a changed constant always means a rebuild (and a module built from other
// sources is never loaded: no interface version is needed).
#pragma once

#include <cstdint>

namespace acon {

typedef int64_t i64;

// Longest contiguous run of a (sample, channel) row that one parallel work item
// handles: longer rows are cut into segments of at most kSeg elements.
constexpr i64 kSeg = 1024;

// Rows of at most this many elements take the channel-major backward (a channel's
// rows for all samples in one work item; see bwd_channel_major).
constexpr i64 kChannelMajorMaxRow = 512;

// Rows shorter than this (and not a multiple of the vector width) take the flat
// layout (see flat_rows).
constexpr i64 kFlatMaxRow = 256;

// Below this many elements a call runs on one thread (threads cost more than they
// save).
constexpr i64 kParallelMinNumel = 32768;

}  // namespace acon
