/* remship.c - stub */
#include "bench.h"
int remship_run(FILE *f, const struct bench_opts *o) { return 0; }
