/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd ioctls (uffd.h): one place that talks to the kernel about
 * a client's address space.  Rules for their errors: fault.c's header.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pagerd.h"
#include "uffd.h"
#include "uffd_compat.h"

int uffd_check(int fd, uint64_t *ret_features)
{
	char path[64], buf[512], target[64];
	unsigned long long api, features;
	ssize_t n;
	FILE *f;
	int found = 0;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -EBADF;
	target[n] = '\0';
	if (strcmp(target, "anon_inode:[userfaultfd]") != 0)
		return -EBADF;
	/* The features in force are what the client's UFFDIO_API asked for;
	 * read them from the kernel rather than trust the hello. */
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return -EBADF;
	while (fgets(buf, sizeof(buf), f))
		if (sscanf(buf, "API:\t%llx:%llx:", &api, &features) == 2)
			found = 1;
	fclose(f);
	if (!found)
		return -EBADF;
	if ((features & PAGER_UFFD_FEATURES_REQUIRED) != PAGER_UFFD_FEATURES_REQUIRED)
		return -EOPNOTSUPP;
	*ret_features = features;
	return 0;
}

void uffd_wake(struct client *c, uint64_t addr, uint64_t len)
{
	struct uffdio_range rng = { .start = addr, .len = len };

	if (ioctl(c->uffd, UFFDIO_WAKE, &rng) < 0 && errno != ENOENT &&
	    errno != ESRCH)
		log_debug("client %" PRIu64 ": UFFDIO_WAKE: %m", c->id);
}

int uffd_writeprotect(struct region *r, uint64_t page, uint64_t n, bool wp)
{
	struct client *c = r->client;
	size_t ps = c->d->page_size;
	struct uffdio_writeprotect w = {
		.range = { .start = r->addr + page * ps, .len = n * ps },
		.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(c->uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

int uffd_writeprotect_range(int uffd, uint64_t addr, uint64_t len)
{
	struct uffdio_writeprotect w = {
		.range = { .start = addr, .len = len },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};

	return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

int64_t uffd_copy(struct region *r, uint64_t page, uint64_t n,
		  const void *src)
{
	struct client *c = r->client;
	size_t ps = c->d->page_size;
	struct uffdio_copy cp = {
		.dst = r->addr + page * ps,
		.src = (uintptr_t)src,
		.len = n * ps,
		.mode = UFFDIO_COPY_MODE_WP,
	};

	if (ioctl(c->uffd, UFFDIO_COPY, &cp) == 0)
		cp.copy = (int64_t)(n * ps);
	else if (cp.copy <= 0)
		return -errno;
	return cp.copy / (int64_t)ps;
}

int64_t uffd_zeropage(struct region *r, uint64_t page, uint64_t n)
{
	struct client *c = r->client;
	size_t ps = c->d->page_size;
	struct uffdio_zeropage zp = {
		.range = { .start = r->addr + page * ps, .len = n * ps },
	};

	if (ioctl(c->uffd, UFFDIO_ZEROPAGE, &zp) == 0)
		return (int64_t)n;
	if (zp.zeropage > 0)
		return zp.zeropage / (int64_t)ps; /* the rest hit a page or an event */
	if (errno == EEXIST)
		return 0;
	return -errno;
}

int uffd_poison(struct region *r, uint64_t page)
{
	struct client *c = r->client;
	size_t ps = c->d->page_size;
	struct uffdio_poison po = {
		.range = { .start = r->addr + page * ps, .len = ps },
	};

	if (!(c->uffd_features & UFFD_FEATURE_POISON)) {
		/* The kernel cannot deliver SIGBUS for us: leave the thread
		 * waiting rather than hand it wrong data. */
		return 0;
	}
	struct uffdio_writeprotect unprotect = {
		.range = po.range, .mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
	};

	/* A page evicted while write-protected leaves a write-protect
	 * marker where its PTE was; POISON wants none there. */
	ioctl(c->uffd, UFFDIO_WRITEPROTECT, &unprotect);
	if (ioctl(c->uffd, UFFDIO_POISON, &po) < 0) {
		if (errno == EAGAIN && po.updated <= 0)
			return -EAGAIN;
		if (errno == EEXIST)
			uffd_wake(c, po.range.start, ps);
		else if (errno != ENOENT && errno != ESRCH)
			log_warn("region %" PRIu64 " page %" PRIu64 ": UFFDIO_POISON: %m",
				 r->id, page);
	}
	return 0;
}
