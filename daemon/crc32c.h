/* SPDX-License-Identifier: MIT */
/*
 * CRC32C (Castagnoli, the iSCSI/ext4/btrfs polynomial 0x1EDC6F41), used by
 * the swap store to catch a slot whose data changed on disk.
 *
 * crc32c() picks the SSE4.2 crc32 instruction when the CPU has it and a
 * table-driven software version otherwise; both are exported so that tests
 * can check each against the same vectors.  All three take the CRC of the
 * data before `buf` (0 to start) and return the CRC including it, so
 * crc32c(crc32c(0, a, n), b, m) is the CRC of a followed by b.  The usual
 * pre- and post-inversion is done inside: crc32c(0, "123456789", 9) is
 * 0xE3069283.
 */
#ifndef PAGERD_CRC32C_H
#define PAGERD_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* Only call when crc32c_hw_available(); otherwise it is crc32c_sw(). */
uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len);
bool crc32c_hw_available(void);

#endif
