// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) and
// the uniform / normal transforms built on it. Everything here uses integer arithmetic and
// correctly rounded +, -, *, / in double (no libm, no fused multiply-add: the files that use it
// are compiled with contraction off), so the host and the device produce the same bits.
#pragma once

#include <math.h>
#include <stdint.h>

#include "nnops/detail/hd.hpp"

namespace nnops::detail {

struct Philox4 {
  uint32_t v[4];
};

NNOPS_HD inline void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

// counter = (c0, c1, c2, c3), key = (k0, k1); ten rounds, the key bumped between rounds.
NNOPS_HD inline Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, c.v[0], hi0, lo0);
    mulhilo32(0xCD9E8D57u, c.v[2], hi1, lo1);
    c = Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
  }
  return c;
}

// The 32 random bits of element i for a seed: counter (i / 4) in the first two words,
// lane i % 4.
NNOPS_HD inline Philox4 philox_block(uint64_t seed, uint64_t block) {
  Philox4 c{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// 24 random bits scaled into [0, 1): exact in float.
NNOPS_HD inline float bits_to_unit(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

NNOPS_HD inline float uniform_in(float u, float lo, float hi) {
  const float r = lo + u * (hi - lo);
  // Rounding can land on hi; keep the interval half-open.
  return (r >= hi && hi > lo) ? lo : r;
}

// Natural log for x in (0, 1], from the exponent and an atanh series on the mantissa:
// log(m) = 2 atanh((m-1)/(m+1)), |s| <= 0.172 so 12 terms reach double precision.
NNOPS_HD inline double portable_log(double x) {
  int e = 0;
  double m = x;
  // Scale into [sqrt(1/2), sqrt(2)) by exact multiplications by 2.
  while (m < 0.7071067811865476) {
    m *= 2.0;
    --e;
  }
  while (m >= 1.4142135623730951) {
    m *= 0.5;
    ++e;
  }
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double sum = 0.0;
  for (int k = 23; k >= 1; k -= 2) sum = sum * s2 + 1.0 / k;
  return 2.0 * s * sum + e * 0.6931471805599453;
}

// cos and sin of 2*pi*u for u in [0, 1): reduce to a quadrant exactly, then Taylor series on
// |a| <= pi/4 (terms to a^18 reach double precision).
NNOPS_HD inline void portable_sincos_2pi(double u, double& sin_out, double& cos_out) {
  const double q = static_cast<double>(static_cast<int>(u * 4.0 + 0.5));  // nearest quadrant
  const double a = (u - q * 0.25) * 6.283185307179586;
  const double a2 = a * a;
  double s = 0.0, c = 0.0;
  // sin(a) = a * sum (-a2)^k / (2k+1)!,  cos(a) = sum (-a2)^k / (2k)!
  double term_s = 1.0, term_c = 1.0;
  for (int k = 0; k < 10; ++k) {
    s += term_s;
    c += term_c;
    term_s = -term_s * a2 / ((2 * k + 2) * (2 * k + 3));
    term_c = -term_c * a2 / ((2 * k + 1) * (2 * k + 2));
  }
  s *= a;
  switch (static_cast<int>(q) & 3) {
    case 0:
      sin_out = s;
      cos_out = c;
      break;
    case 1:
      sin_out = c;
      cos_out = -s;
      break;
    case 2:
      sin_out = -s;
      cos_out = -c;
      break;
    default:
      sin_out = -c;
      cos_out = s;
      break;
  }
}

// Box-Muller on the uniforms of elements 2j and 2j+1; u1 is moved to (0, 1] as 1 - u.
NNOPS_HD inline void box_muller(float u1, float u2, float& z0, float& z1) {
  const double r = sqrt(-2.0 * portable_log(1.0 - static_cast<double>(u1)));
  double s, c;
  portable_sincos_2pi(static_cast<double>(u2), s, c);
  z0 = static_cast<float>(r * c);
  z1 = static_cast<float>(r * s);
}

}  // namespace nnops::detail
