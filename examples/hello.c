/* SPDX-License-Identifier: MIT */
/*
 * The smallest libpager program: create a region, write to it, read it
 * back.  No daemon needs to be running: libpager starts a private pagerd.
 *
 *   cc hello.c $(pkg-config --cflags --libs libpager) -o hello
 */
#include <pager.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	struct pager *p;
	struct pager_region *r;
	size_t len = 64 << 20;
	int e;

	e = pager_open(&p, NULL);
	if (e < 0) {
		fprintf(stderr, "pager_open: %s\n", strerror(-e));
		return 1;
	}
	e = pager_region_create(p, len, NULL, &r);
	if (e < 0) {
		fprintf(stderr, "pager_region_create: %s\n", strerror(-e));
		pager_close(p);
		return 1;
	}
	char *mem = pager_region_addr(r);
	unsigned long sum = 0;

	for (size_t i = 0; i < len; i += 4096)
		mem[i] = (char)(i >> 12);
	for (size_t i = 0; i < len; i += 4096)
		sum += (unsigned char)mem[i];
	printf("wrote and read %zu MiB through pagerd, checksum %lu\n", len >> 20, sum);
	pager_region_destroy(r);
	pager_close(p);
	return 0;
}
