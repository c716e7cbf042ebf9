// NNOPS_HD marks per-element functions compiled for both the host and the device.
#pragma once

#if defined(__CUDACC__)
#define NNOPS_HD __host__ __device__
#else
#define NNOPS_HD
#endif
