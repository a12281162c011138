/* Out-of-line copies of the inline requantisation helpers, so tests can call them directly and
 * check them against fixedpoint.py on edge values (the kernels use the inline versions). */
#include "tk_requant.h"

int32_t tk_export_srdhm(int32_t a, int32_t b) { return tk_srdhm(a, b); }
int32_t tk_export_rdbpot(int32_t x, int32_t exponent) { return tk_rdbpot(x, exponent); }
int32_t tk_export_mbqm(int32_t x, int32_t multiplier, int32_t shift) { return tk_mbqm(x, multiplier, shift); }
int32_t tk_export_div_round(int32_t a, int32_t b) { return tk_div_round(a, b); }
