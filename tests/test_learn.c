/* SPDX-License-Identifier: MIT */
/*
 * learn.c alone: the recording of first touches (faults, and read runs
 * filtered through a pagemap — here a file of made-up entries), its cap,
 * and the IMAGE.order codec with every way a file can be refused.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "../daemon/crc32c.c"
#include "../daemon/learn.c"

#define PRESENT (1ull << 63)

/* A pagemap of n entries, base pages before the region's first, with
 * the region's pages in `present` mapped. */
static int fake_pagemap(uint64_t base, uint64_t n, const uint64_t *present, size_t np)
{
	int fd = memfd_create("pagemap", MFD_CLOEXEC);
	uint64_t *pm = calloc(base + n, sizeof(*pm));

	assert_true(fd >= 0 && pm);
	for (size_t i = 0; i < np; i++)
		pm[base + present[i]] = PRESENT | 0x1234;
	assert_int_equal(pwrite(fd, pm, (base + n) * 8, 0), (ssize_t)((base + n) * 8));
	free(pm);
	return fd;
}

static void faults_and_touched_runs(void **state)
{
	struct learn *l = learn_new(1000);
	static const uint64_t present[] = { 10, 11, 500, 502, 900 };
	int pm = fake_pagemap(77, 1000, present, 5);
	uint64_t *o;
	size_t n;

	(void)state;
	assert_non_null(l);
	learn_fault(l, 10);
	learn_read(l, 10, 64, false);   /* 11 touched: after 10 */
	learn_fault(l, 900);
	learn_fault(l, 10);             /* again: counted once */
	learn_read(l, 500, 8, true);    /* 500, 502 touched */
	learn_read(l, 600, 8, false);   /* nothing touched */
	learn_fault(l, 5000);           /* beyond the region: ignored */
	assert_int_equal(learn_build(l, pm, 77, false, &o, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(o[0], 10);
	assert_int_equal(o[1], 11);
	assert_int_equal(o[2], 900);
	assert_int_equal(o[3], 500);
	assert_int_equal(o[4], 502);
	free(o);
	/* Without a pagemap: the learned prefetch's runs whole, no others. */
	assert_int_equal(learn_build(l, -1, 0, false, &o, &n), 0);
	assert_int_equal(n, 2 + 8);
	assert_int_equal(o[0], 10);
	assert_int_equal(o[1], 900);
	assert_int_equal(o[2], 500);
	assert_int_equal(o[9], 507);
	free(o);
	/* Finished: the order stays as built, nothing more is recorded. */
	assert_int_equal(learn_build(l, pm, 77, true, &o, &n), 0);
	free(o);
	assert_false(learn_recording(l));
	learn_fault(l, 1);
	assert_int_equal(learn_build(l, -1, 0, false, &o, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(o[0], 10);
	free(o);
	close(pm);
	learn_free(l);
}

static void capped(void **state)
{
	struct learn *l = learn_new(4 * LEARN_PAGES_MAX);
	uint64_t *o;
	size_t n;

	(void)state;
	for (uint64_t p = 0; p < 2 * LEARN_PAGES_MAX; p++)
		learn_fault(l, 2 * LEARN_PAGES_MAX - 1 - p);
	assert_false(learn_recording(l));
	assert_int_equal(learn_build(l, -1, 0, false, &o, &n), 0);
	assert_int_equal(n, LEARN_PAGES_MAX);
	/* What came first is what is kept. */
	assert_int_equal(o[0], 2 * LEARN_PAGES_MAX - 1);
	assert_int_equal(o[n - 1], LEARN_PAGES_MAX);
	free(o);
	learn_free(l);
	/* Nothing recorded: no order. */
	l = learn_new(10);
	assert_int_equal(learn_build(l, -1, 0, true, &o, &n), 0);
	assert_null(o);
	assert_int_equal(n, 0);
	learn_free(l);
	learn_fault(NULL, 1); /* no memory for a recording: a no-op */
}

static void codec(void **state)
{
	static const uint64_t order[] = { 7, 3, 7, 99, 0 };
	uint8_t buf[IMAGE_ORDER_ENTRIES_OFF + 8 * 8], bad[sizeof(buf) + 8];
	const char *why;
	uint64_t *o;
	size_t n;
	int64_t len;

	(void)state;
	len = learn_order_encode(buf, order, 5, 100, 4096, 0xabcd);
	assert_int_equal(len, image_order_size(5));
	assert_int_equal(learn_order_decode(buf, (size_t)len, 100, 4096, 0xabcd, &o, &n, &why), 0);
	assert_int_equal(n, 4); /* 7 once, at its first place */
	assert_int_equal(o[0], 7);
	assert_int_equal(o[1], 3);
	assert_int_equal(o[2], 99);
	assert_int_equal(o[3], 0);
	free(o);

#define REFUSED(b, l, pages, psz, icrc, text) do { \
		assert_int_equal(learn_order_decode(b, l, pages, psz, icrc, &o, &n, &why), -EINVAL); \
		assert_non_null(why); \
		assert_non_null(strstr(why, text)); \
		assert_null(o); \
	} while (0)
	REFUSED(buf, (size_t)len, 100, 4096, 0xabce, "another image");
	REFUSED(buf, (size_t)len, 101, 4096, 0xabcd, "another page size or image size");
	REFUSED(buf, (size_t)len, 100, 8192, 0xabcd, "another page size or image size");
	REFUSED(buf, (size_t)len - 8, 100, 4096, 0xabcd, "not what its header says");
	REFUSED(buf, 20, 100, 4096, 0xabcd, "damaged header");
	memcpy(bad, buf, (size_t)len);
	bad[IMAGE_ORDER_ENTRIES_OFF + 3] ^= 1;
	REFUSED(bad, (size_t)len, 100, 4096, 0xabcd, "entries are damaged");
	memcpy(bad, buf, (size_t)len);
	bad[9] ^= 1; /* the version */
	REFUSED(bad, (size_t)len, 100, 4096, 0xabcd, "damaged header");
	/* A page beyond the image, well formed otherwise. */
	len = learn_order_encode(buf, order, 5, 99, 4096, 0);
	REFUSED(buf, (size_t)len, 99, 4096, 0, "beyond the image");
	/* More entries than the format allows. */
	assert_int_equal(learn_order_encode(buf, order, IMAGE_ORDER_MAX + 1, 100, 4096, 0),
			 -EINVAL);
	{
		struct image_order_hdr *h = (struct image_order_hdr *)buf;

		learn_order_encode(buf, order, 5, 100, 4096, 0);
		h->count = htole64(IMAGE_ORDER_MAX + 1);
		h->hdr_crc = htole32(crc32c(0, h, offsetof(struct image_order_hdr, hdr_crc)));
		REFUSED(buf, (size_t)image_order_size(5), 100, 4096, 0, "larger than the format");
	}
	/* Empty, well formed: no order, no error. */
	len = learn_order_encode(buf, order, 0, 100, 4096, 0);
	assert_int_equal(learn_order_decode(buf, (size_t)len, 100, 4096, 0, &o, &n, &why), 0);
	assert_int_equal(n, 0);
	assert_null(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(faults_and_touched_runs),
		cmocka_unit_test(capped),
		cmocka_unit_test(codec),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
