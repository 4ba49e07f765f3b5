// The CPU kernels and the roofline micro-kernel built for the AVX2 instruction set. setup.py compiles this
// file with the matching -m flags (see CPU_KERNEL_FLAGS there).
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "polyact_cpu_impl.h"
#include "roofline_impl.h"
