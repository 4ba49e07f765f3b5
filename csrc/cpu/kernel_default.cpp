// The CPU kernels and the roofline micro-kernel built for the DEFAULT instruction set. setup.py compiles this
// file with the matching -m flags (see CPU_KERNEL_FLAGS there).
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include "polyact_cpu_impl.h"
#include "roofline_impl.h"
