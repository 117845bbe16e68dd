/* SPDX-License-Identifier: MIT */
#include "image.h"

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMAGE_FORMAT "pagerd-image"
#define IMAGE_FORMAT_VERSION 2

/* The sidecars (IMAGE.meta, IMAGE.crc, IMAGE.order) are named alike and
 * kept alike: these do it for each. */

/* "IMAGE<suffix>"; -ENAMETOOLONG if it does not fit. */
static int sidecar_path(const char *image, const char *suffix, char *buf, size_t n)
{
	int k = snprintf(buf, n, "%s%s", image, suffix);

	return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

/* Removes IMAGE<suffix>; 0 or -errno (a missing one is fine). */
static int sidecar_remove(const char *image, const char *suffix)
{
	char path[PATH_MAX];
	int e = sidecar_path(image, suffix, path, sizeof(path));

	if (e < 0)
		return e;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* A memfd of size bytes for pagerd to fill, sealed against resizing and
 * further seals.  0 and *ret_fd, or -errno. */
static int sidecar_memfd(const char *name, uint64_t size, int *ret_fd)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), e;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		e = -errno;
		close(fd);
		return e;
	}
	*ret_fd = fd;
	return 0;
}

int image_meta_path(const char *image, char *buf, size_t n)
{
	return sidecar_path(image, ".meta", buf, n);
}

int image_meta_remove(const char *image)
{
	return sidecar_remove(image, ".meta");
}

static int sync_dir_of(const char *path)
{
	char copy[PATH_MAX];
	int fd, e = 0;

	snprintf(copy, sizeof(copy), "%s", path);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		e = -errno;
	close(fd);
	return e;
}

int image_meta_commit(const char *image, int image_fd, const struct image_meta *m)
{
	char meta[PATH_MAX], tmp[PATH_MAX + 8];
	FILE *f;
	int e;

	if ((e = image_meta_path(image, meta, sizeof(meta))) < 0)
		return e;
	snprintf(tmp, sizeof(tmp), "%s.tmp", meta);
	/* The data first: a sidecar must never vouch for unsynced pages. */
	if (fdatasync(image_fd) < 0)
		return -errno;
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f, "# pagerd snapshot: byte i of the image is byte i of the region\n"
		   "format " IMAGE_FORMAT " %d\n"
		   "size %" PRIu64 "\n"
		   "page_size %" PRIu32 "\n"
		   "pages %" PRIu64 "\n"
		   "data_pages %" PRIu64 "\n"
		   "name %s\n"
		   "created %" PRIu64 "\n"
		   "complete yes\n",
		IMAGE_FORMAT_VERSION, m->size, m->page_size, m->size / m->page_size, m->data_pages,
		m->name[0] ? m->name : "-", m->created);
	if (fflush(f) != 0 || fsync(fileno(f)) < 0) {
		e = -errno;
		fclose(f);
		unlink(tmp);
		return e;
	}
	if (fclose(f) != 0 || rename(tmp, meta) < 0) {
		e = -errno;
		unlink(tmp);
		return e;
	}
	return sync_dir_of(meta);
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*ret = v;
	return 0;
}

int image_meta_load(const char *image, int image_fd, struct image_meta *ret)
{
	enum { K_FORMAT, K_SIZE, K_PS, K_PAGES, K_DATA, K_NAME, K_CREATED, K_COMPLETE, K_N };
	static const char *const keys[K_N] = {
		"format", "size", "page_size", "pages", "data_pages", "name",
		"created", "complete",
	};
	char meta[PATH_MAX], line[256];
	struct image_meta m = { 0 };
	bool seen[K_N] = { false };
	uint64_t pages = 0, v;
	struct stat st;
	FILE *f;
	int e = 0, lines = 0;

	if ((e = image_meta_path(image, meta, sizeof(meta))) < 0)
		return e;
	f = fopen(meta, "re");
	if (!f)
		return errno == ENOENT ? -ENOENT : -errno;
	while (fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		char *val;
		int k;

		if (++lines > 64 || len == 0 || line[len - 1] != '\n') {
			e = -EINVAL; /* too long, too many, or cut short */
			break;
		}
		line[--len] = '\0';
		if (line[0] == '#' || len == 0)
			continue;
		val = strchr(line, ' ');
		if (!val) {
			e = -EINVAL;
			break;
		}
		*val++ = '\0';
		for (k = 0; k < K_N && strcmp(line, keys[k]); k++)
			;
		if (k == K_N || seen[k]) {
			e = -EINVAL;
			break;
		}
		seen[k] = true;
		switch (k) {
		case K_FORMAT:
			/* 1: before IMAGE.crc; 2: with it. */
			if (!strcmp(val, IMAGE_FORMAT " 1"))
				m.format = 1;
			else if (!strcmp(val, IMAGE_FORMAT " 2"))
				m.format = 2;
			else
				e = -EINVAL;
			break;
		case K_SIZE:
			e = parse_u64(val, &m.size);
			break;
		case K_PS:
			e = parse_u64(val, &v);
			if (!e && (v < 512 || v > (1u << 30) || (v & (v - 1))))
				e = -EINVAL;
			m.page_size = (uint32_t)v;
			break;
		case K_PAGES:
			e = parse_u64(val, &pages);
			break;
		case K_DATA:
			e = parse_u64(val, &m.data_pages);
			break;
		case K_NAME:
			snprintf(m.name, sizeof(m.name), "%s", val);
			break;
		case K_CREATED:
			e = parse_u64(val, &m.created);
			break;
		case K_COMPLETE:
			if (strcmp(val, "yes"))
				e = -EINVAL;
			break;
		}
		if (e)
			break;
	}
	fclose(f);
	if (e)
		return e;
	for (int k = 0; k < K_N; k++)
		if (!seen[k])
			return -EINVAL;
	if (!m.size || m.size % m.page_size || pages != m.size / m.page_size ||
	    m.data_pages > pages)
		return -EINVAL;
	if (fstat(image_fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != m.size)
		return -EINVAL; /* truncated, grown, or not a file */
	*ret = m;
	return 0;
}

int image_crc_path(const char *image, char *buf, size_t n)
{
	return sidecar_path(image, ".crc", buf, n);
}

int image_crc_create(uint64_t pages, int *ret_fd)
{
	return sidecar_memfd("pager-image-crc", image_crc_size(pages), ret_fd);
}

/* Copies len bytes from `from` (at 0) to `to`; 0 or -errno. */
static int copy_fd(int from, int to, uint64_t len)
{
	char buf[65536];
	uint64_t off = 0;

	while (off < len) {
		size_t want = len - off < sizeof(buf) ? (size_t)(len - off) : sizeof(buf);
		ssize_t k = pread(from, buf, want, (off_t)off), w;

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		for (ssize_t done = 0; done < k; done += w) {
			w = pwrite(to, buf + done, (size_t)(k - done), (off_t)off + done);
			if (w < 0 && errno == EINTR) {
				w = 0;
				continue;
			}
			if (w <= 0)
				return w < 0 ? -errno : -EIO;
		}
		off += (uint64_t)k;
	}
	return 0;
}

/* Writes the first len bytes of from_fd to path atomically: path.tmp,
 * synced, renamed over path.  0 or -errno (path.tmp removed). */
static int sidecar_commit(const char *path, int from_fd, uint64_t len)
{
	char tmp[PATH_MAX + 8];
	int fd, e;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	e = copy_fd(from_fd, fd, len);
	if (!e && fsync(fd) < 0)
		e = -errno;
	if (close(fd) < 0 && !e)
		e = -errno;
	if (!e && rename(tmp, path) < 0)
		e = -errno;
	if (e)
		unlink(tmp);
	return e;
}

/* Copies len bytes of fd (at 0) into a new memfd sealed against every
 * change; 0 and *ret_fd, or -errno.  fd stays the caller's. */
static int sidecar_sealed_copy(int fd, const char *name, uint64_t len, int *ret_fd)
{
	int mfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), e;

	if (mfd < 0)
		return -errno;
	e = copy_fd(fd, mfd, len);
	if (!e && fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
			F_SEAL_SEAL) < 0)
		e = -errno;
	if (e) {
		close(mfd);
		return e;
	}
	*ret_fd = mfd;
	return 0;
}

int image_crc_commit(const char *image, int crc_fd)
{
	char path[PATH_MAX];
	struct stat st;
	int e;

	if ((e = image_crc_path(image, path, sizeof(path))) < 0)
		return e;
	if (fstat(crc_fd, &st) < 0)
		return -errno;
	return sidecar_commit(path, crc_fd, (uint64_t)st.st_size);
}

int image_crc_load(const char *image, uint64_t pages, int *ret_fd)
{
	char path[PATH_MAX];
	struct stat st;
	int fd, e;

	if ((e = image_crc_path(image, path, sizeof(path))) < 0)
		return e;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != image_crc_size(pages)) {
		close(fd);
		return -EINVAL;
	}
	/* Immutable from here: pagerd checks it once and trusts it after. */
	e = sidecar_sealed_copy(fd, "pager-image-crc", (uint64_t)st.st_size, ret_fd);
	close(fd);
	return e;
}

int image_order_path(const char *image, char *buf, size_t n)
{
	return sidecar_path(image, ".order", buf, n);
}

int image_order_remove(const char *image)
{
	return sidecar_remove(image, ".order");
}

int image_order_create(int *ret_fd)
{
	return sidecar_memfd("pager-image-order", image_order_size(IMAGE_ORDER_MAX), ret_fd);
}

int image_order_commit(const char *image, int order_fd)
{
	char path[PATH_MAX];
	struct image_order_hdr h;
	uint64_t count;
	int e;

	if ((e = image_order_path(image, path, sizeof(path))) < 0)
		return e;
	if (pread(order_fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return -EIO;
	count = le64toh(h.count);
	/* pagerd learned nothing: an old order must not steer the new image
	 * (pagerd would refuse it anyway: its image_crc is another's). */
	if (memcmp(h.magic, IMAGE_ORDER_MAGIC, sizeof(h.magic)) || count == 0)
		return image_order_remove(image);
	if (count > IMAGE_ORDER_MAX)
		return -EINVAL;
	return sidecar_commit(path, order_fd, image_order_size(count));
}

int image_order_load(const char *image, int *ret_fd)
{
	const uint64_t max = image_order_size(IMAGE_ORDER_MAX) + 1;
	char path[PATH_MAX];
	struct stat st;
	int fd, e;

	if ((e = image_order_path(image, path, sizeof(path))) < 0)
		return e;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	/* Never more than the format allows, plus a byte for pagerd to see
	 * that there was more (it says so, and ignores the file). */
	e = sidecar_sealed_copy(fd, "pager-image-order",
				(uint64_t)st.st_size < max ? (uint64_t)st.st_size : max, ret_fd);
	close(fd);
	return e;
}
