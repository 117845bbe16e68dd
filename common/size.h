/* SPDX-License-Identifier: MIT */
/* Parsing numbers and sizes from command lines and environment variables. */
#ifndef PAGER_SIZE_H
#define PAGER_SIZE_H

#include <stdint.h>


/* A decimal number; -EINVAL for anything else, -ERANGE on overflow. */
int parse_u64(const char *s, uint64_t *ret);
/* A size: a number with an optional K, M, G or T suffix (powers of 1024,
 * an optional trailing "B" or "iB"). */
int parse_size(const char *s, uint64_t *ret);

#endif
