/* SPDX-License-Identifier: MIT */
/*
 * CRC32C, hardware and software.  The only globals are the lookup tables and
 * the pointer to the implementation this CPU runs; both are written once,
 * under pthread_once, before the first CRC is computed.
 */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define CRC32C_HAVE_SSE42 1
#endif

/* The Castagnoli polynomial, bit-reflected. */
#define CRC32C_POLY 0x82F63B78u

/*
 * Slicing-by-8: table[k][b] is the CRC of byte b followed by k zero bytes,
 * so eight bytes are folded with eight look-ups instead of eight dependent
 * shift-and-look-up steps.
 */
static uint32_t crc32c_table[8][256];
static uint32_t (*crc32c_impl)(uint32_t, const void *, size_t);
static bool crc32c_hw_ok;
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
		crc32c_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			crc32c_table[k][i] = (crc32c_table[k - 1][i] >> 8) ^
					     crc32c_table[0][crc32c_table[k - 1][i] & 0xff];

	crc32c_impl = crc32c_sw;
#ifdef CRC32C_HAVE_SSE42
	__builtin_cpu_init();
	if (__builtin_cpu_supports("sse4.2")) {
		crc32c_hw_ok = true;
		crc32c_impl = crc32c_hw;
	}
#endif
}

/* Little-endian load whatever the host order, without alignment rules. */
static inline uint32_t load_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint32_t crc32c_sw_raw(uint32_t c, const unsigned char *p, size_t len)
{
	const uint32_t (*t)[256] = (const uint32_t (*)[256])crc32c_table;

	while (len >= 8) {
		uint32_t lo = c ^ load_le32(p), hi = load_le32(p + 4);

		c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^
		    t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
		    t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^
		    t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = (c >> 8) ^ t[0][(c ^ *p++) & 0xff];
	return c;
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc32c_once, crc32c_init);
	return ~crc32c_sw_raw(~crc, buf, len);
}

#ifdef CRC32C_HAVE_SSE42
/*
 * One dependent chain of crc32 instructions: about 8 bytes every 3 cycles,
 * half a microsecond for a 4 KiB page, which is noise next to the I/O it
 * guards.  (Three interleaved chains would triple that but need a combine
 * step; not worth it yet.)  The target attribute lets this file build
 * without -msse4.2; it only runs when the CPU was seen to have SSE4.2.
 */
__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t c = ~crc;

	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8(c, *p++);
		len--;
	}
#ifdef __x86_64__
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, sizeof(v));
		c = (uint32_t)_mm_crc32_u64(c, v);
		p += 8;
		len -= 8;
	}
#else
	while (len >= 4) {
		uint32_t v;

		memcpy(&v, p, sizeof(v));
		c = _mm_crc32_u32(c, v);
		p += 4;
		len -= 4;
	}
#endif
	while (len--)
		c = _mm_crc32_u8(c, *p++);
	return ~c;
}
#endif

uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc32c_once, crc32c_init);
#ifdef CRC32C_HAVE_SSE42
	if (crc32c_hw_ok)
		return crc32c_sse42(crc, buf, len);
#endif
	return crc32c_sw(crc, buf, len);
}

bool crc32c_hw_available(void)
{
	pthread_once(&crc32c_once, crc32c_init);
	return crc32c_hw_ok;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc32c_once, crc32c_init);
	return crc32c_impl(crc, buf, len);
}
