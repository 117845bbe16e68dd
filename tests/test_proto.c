/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the wire protocol (common/proto.c): message sizes, every
 * rule proto_validate() enforces, and proto_send()/proto_recv() over a real
 * SOCK_SEQPACKET socketpair, including hostile senders (too many fds, too
 * many bytes) whose descriptors must not leak into the receiver.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fd.h"
#include "pager.h"
#include "proto.h"

#define HDR sizeof(struct proto_hdr)

/* ---- helpers ----------------------------------------------------------- */

/* A message of `type` with a body that passes validation. */
static size_t make_valid(struct proto_msg *m, enum proto_type type)
{
	memset(m, 0, sizeof(*m));
	switch (type) {
	case PROTO_HELLO:
		m->body.hello.flags = PROTO_HELLO_KERNEL_FAULTS;
		m->body.hello.page_size = 4096;
		m->body.hello.uffd_features = 0x1234;
		break;
	case PROTO_REGION_CREATE:
		m->body.region_create.addr = 0x7f0000000000ull;
		m->body.region_create.len = 1ull << 30;
		m->body.region_create.memory_limit = 1ull << 20;
		strcpy(m->body.region_create.name, "heap");
		break;
	case PROTO_REGION_DESTROY:
		m->body.region_destroy.region_id = 7;
		break;
	case PROTO_REPLY:
		m->body.reply.status = -ENOMEM;
		m->body.reply.version = PROTO_VERSION;
		break;
	default:
		break;
	}
	return proto_finish(m, type, 42);
}

/*
 * proto_validate() on a copy of exactly `n` bytes in its own heap block, so
 * that under ASan a read past `n` is caught rather than landing in the rest
 * of the caller's struct.
 */
static int validate_exact(const void *buf, size_t n)
{
	void *copy = malloc(n ? n : 1);
	int r;

	assert_non_null(copy);
	memcpy(copy, buf, n);
	r = proto_validate(copy, n);
	free(copy);
	return r;
}

static void check_validate(const void *buf, size_t n, int want,
			   const char *what, const char *file, int line)
{
	int r = validate_exact(buf, n);

	if (r != want) {
		print_error("%s (%zu bytes): proto_validate = %d (%s), want %d (%s)\n",
			    what, n, r, strerror(-r), want, strerror(-want));
		_fail(file, line);
	}
}
#define assert_validate(buf, n, want) \
	check_validate((buf), (n), (want), #buf, __FILE__, __LINE__)

/* Descriptors open in this process: what a leak would change. */
static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int new_memfd(void)
{
	int fd = memfd_create("test_proto", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4096), 0);
	return fd;
}

static void assert_same_file(int a, int b)
{
	struct stat sa, sb;

	assert_int_equal(fstat(a, &sa), 0);
	assert_int_equal(fstat(b, &sb), 0);
	assert_int_equal(sa.st_dev, sb.st_dev);
	assert_int_equal(sa.st_ino, sb.st_ino);
}

/* sendmsg() with any number of fds and bytes, bypassing proto_send()'s
 * limits: a hostile or buggy peer. */
static void raw_send(int sock, const void *buf, size_t n, const int *fds,
		     unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 32)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	assert_true(nfds <= 32);
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	assert_int_equal(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t)n);
}

/* Receives a valid hello the test sent after a refused message: the refused
 * one was consumed whole and the stream is still in step. */
static void assert_next_is_hello(int sock)
{
	struct proto_msg m;
	int fds[PROTO_MAX_FDS];
	unsigned nfds = 99;
	ssize_t r = proto_recv(sock, &m, fds, &nfds);

	assert_int_equal(r, HDR + sizeof(struct proto_hello));
	assert_int_equal(nfds, 0);
	assert_int_equal(m.hdr.type, PROTO_HELLO);
	assert_validate(&m, (size_t)r, 0);
}

static void send_hello(int sock)
{
	struct proto_msg m;
	size_t n = make_valid(&m, PROTO_HELLO);

	assert_int_equal(proto_send(sock, &m, n, NULL, 0), 0);
}

/* ---- sizes and tables -------------------------------------------------- */

static void test_finish_sizes(void **state)
{
	static const struct {
		enum proto_type type;
		size_t body; /* the wire size: changing it needs a new version */
	} t[] = {
		{ PROTO_HELLO, 16 },
		{ PROTO_REGION_CREATE, 92 },
		{ PROTO_REGION_DESTROY, 8 },
		{ PROTO_STATUS, 0 },
		{ PROTO_AGENT_ATTACH, 0 },
		{ PROTO_REGION_SET_LIMIT, 16 },
		{ PROTO_REGION_DISCARD, 24 },
		{ PROTO_REGION_STATS, 16 },
		{ PROTO_REGION_INFO, 16 },
		{ PROTO_SET_LIMIT, 24 },
		{ PROTO_TEST_INJECT, 24 },
		{ PROTO_SNAPSHOT_START, 320 },
		{ PROTO_SNAPSHOT_STATUS, 320 },
		{ PROTO_REGION_SET_IMAGE, 320 },
		{ PROTO_PAGEMAP, 0 },
		{ PROTO_IMAGE_INFO, 320 },
		{ PROTO_REPLY, 728 },
		{ PROTO_AGENT_DROP, 776 },
	};
	struct proto_msg m;

	(void)state;
	assert_int_equal(HDR, 16);
	assert_int_equal(sizeof(struct proto_msg), HDR + 776);
	assert_true(sizeof(struct proto_msg) <= PROTO_MAX_MSG);
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		memset(&m, 0xa5, sizeof(m));
		size_t n = proto_finish(&m, t[i].type, 0xdeadbeef);

		assert_int_equal(n, HDR + t[i].body);
		assert_int_equal(proto_body_size((uint16_t)t[i].type), t[i].body);
		assert_int_equal(m.hdr.magic, PROTO_MAGIC);
		assert_int_equal(m.hdr.version, PROTO_VERSION);
		assert_int_equal(m.hdr.type, t[i].type);
		assert_int_equal(m.hdr.size, n);
		assert_int_equal(m.hdr.seq, 0xdeadbeef);
	}
}

static void test_type_tables(void **state)
{
	(void)state;
	assert_int_equal(proto_body_size(0), 0);
	assert_int_equal(proto_body_size(PROTO_TYPE_MAX_REQUEST + 1), 0);
	assert_int_equal(proto_fds_expected(PROTO_REGION_CREATE), 1);
	assert_int_equal(proto_fds_expected(PROTO_HELLO), 0);
	assert_int_equal(proto_fds_expected(PROTO_REGION_DESTROY), 0);
	assert_int_equal(proto_fds_expected(PROTO_STATUS), 0);
	assert_int_equal(proto_fds_expected(PROTO_REPLY), 0);
	assert_int_equal(proto_fds_expected(PROTO_PAGEMAP), 1);
	/* At most: the image, its IMAGE.crc and IMAGE.order. */
	assert_int_equal(proto_fds_expected(PROTO_SNAPSHOT_START), 3);
	assert_int_equal(proto_fds_expected(PROTO_REGION_SET_IMAGE), 3);
	assert_string_equal(proto_type_name(PROTO_PAGEMAP), "pagemap");
	assert_string_equal(proto_type_name(PROTO_HELLO), "hello");
	assert_string_equal(proto_type_name(PROTO_REGION_CREATE), "region-create");
	assert_string_equal(proto_type_name(PROTO_REGION_DESTROY), "region-destroy");
	assert_string_equal(proto_type_name(PROTO_STATUS), "status");
	assert_string_equal(proto_type_name(PROTO_REPLY), "reply");
	assert_string_equal(proto_type_name(0xffff), "unknown");
}

/* ---- counters: one list, every layout ---------------------------------- */

#define NONE SIZE_MAX
#define PUB_SIZE(f) sizeof(((struct pager_region_stats *)0)->f)

/* Each counter of common/counters.h, with where each layout has it. */
static const struct counter_row {
	const char *name;
	enum counter_scope scope;
	const char *metric, *kind, *help;
	size_t all;    /* in struct proto_counters (STATUS) */
	size_t region; /* in struct proto_region_counters, or NONE */
	size_t pub;    /* in libpager's struct pager_region_stats, or NONE */
	size_t pub_size;
} counter_rows[] = {
#define X(name, scope, unit, metric, kind, help) \
	{ #name, COUNTER_SCOPE(scope), metric, kind, help, \
	  offsetof(struct proto_counters, name), \
	  COUNTER_CHOOSE_##scope((offsetof(struct proto_region_counters, name)), NONE), \
	  COUNTER_CHOOSE_##scope((offsetof(struct pager_region_stats, name)), NONE), \
	  COUNTER_CHOOSE_##scope(PUB_SIZE(name), 0) },
	PAGER_COUNTERS(X)
#undef X
};
#define NCOUNTERS (sizeof(counter_rows) / sizeof(counter_rows[0]))

static const char *const counter_families[] = {
#define F(name, help) name,
	PAGER_COUNTER_FAMILIES(F)
#undef F
};

/*
 * The wire layouts are the list, in its order, with nothing else between:
 * both ends generate them from common/counters.h, and a peer of another
 * version is refused (PROTO_VERSION), so order is all that can go wrong.
 */
static void test_counters_wire_layout(void **state)
{
	size_t nregion = 0;

	(void)state;
	assert_true(NCOUNTERS > 0);
	for (size_t i = 0; i < NCOUNTERS; i++) {
		const struct counter_row *c = &counter_rows[i];

		print_message("%-24s all %3zu region %3zd public %3zd\n", c->name, c->all,
			      c->region == NONE ? (ssize_t)-1 : (ssize_t)c->region,
			      c->pub == NONE ? (ssize_t)-1 : (ssize_t)c->pub);
		assert_int_equal(c->all, 8 * i);
		if (c->scope == COUNTER_SCOPE_REGION) {
			assert_int_equal(c->region, 8 * nregion);
			nregion++;
		} else {
			assert_int_equal(c->scope, COUNTER_SCOPE_DAEMON);
			assert_int_equal(c->region, NONE);
		}
	}
	assert_int_equal(sizeof(struct proto_counters), 8 * NCOUNTERS);
	assert_int_equal(sizeof(struct proto_region_counters), 8 * nregion);
	/* Version 5 (the pool's counters appended) keeps version 4's places,
	 * and version 6 (named images; image_learned_reads and
	 * snapshot_writes_parked appended, three fds, the IMAGE.order flags)
	 * too: moving them needs a new version. */
	assert_int_equal(PROTO_VERSION, 6);
	assert_int_equal(offsetof(struct proto_reply, counters), 112);
	assert_int_equal(offsetof(struct proto_region_stats, counters), 136);
}

/*
 * What libpager hands its caller: every REGION counter has its field in
 * struct pager_region_stats (libpager copies by name; a missing one does
 * not build), the fields come in the list's order (both only grow at the
 * end, so a program built against 0.2.0 finds its fields where they were:
 * libpager/region.c pins those offsets), and every public field is filled:
 * a REGION counter, or one of the few others libpager sets by hand.
 */
static void test_counters_public_layout(void **state)
{
	/* sz, then what is not a counter: pages, resident, swapped, zero,
	 * memory_limit, image_pending, faults_minor (always 0), pool_pages
	 * and pool_bytes. */
	const size_t others = sizeof(size_t) + 9 * 8;
	size_t last = 0, nregion = 0;

	(void)state;
	for (size_t i = 0; i < NCOUNTERS; i++) {
		const struct counter_row *c = &counter_rows[i];

		if (c->scope != COUNTER_SCOPE_REGION) {
			assert_int_equal(c->pub, NONE);
			continue;
		}
		assert_int_equal(c->pub_size, 8);
		assert_true(c->pub > last);
		last = c->pub;
		nregion++;
	}
	assert_int_equal(sizeof(struct pager_region_stats), others + 8 * nregion);
	assert_int_equal(offsetof(struct pager_region_stats, faults_minor),
			 offsetof(struct pager_region_stats, faults_missing) + 8);
}

/* Names the metrics and pagerctl print: unique, well-formed, described. */
static void test_counters_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < NCOUNTERS; i++) {
		const struct counter_row *c = &counter_rows[i];
		size_t ml = strlen(c->metric);
		bool family = false;

		assert_true(strlen(c->name) > 0 && strlen(c->help) > 0);
		assert_int_equal(strncmp(c->metric, "pagerd_", 7), 0);
		assert_true(ml > 6 && strcmp(c->metric + ml - 6, "_total") == 0);
		for (size_t f = 0; f < sizeof(counter_families) / sizeof(counter_families[0]); f++)
			family |= strcmp(counter_families[f], c->metric) == 0;
		/* A row with a kind belongs to a family with its HELP; a row
		 * without one has its family to itself. */
		assert_int_equal(family, c->kind != NULL);
		for (size_t j = 0; j < i; j++) {
			const struct counter_row *o = &counter_rows[j];

			assert_string_not_equal(o->name, c->name);
			if (strcmp(o->metric, c->metric) == 0)
				assert_true(o->kind && c->kind && strcmp(o->kind, c->kind) != 0);
		}
	}
}

/* ---- proto_validate: accepted ------------------------------------------ */

static void test_validate_accepts_each_type(void **state)
{
	static const enum proto_type types[] = {
		PROTO_HELLO, PROTO_REGION_CREATE, PROTO_REGION_DESTROY,
		PROTO_STATUS, PROTO_REPLY,
	};
	struct proto_msg m;

	(void)state;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		size_t n = make_valid(&m, types[i]);

		assert_validate(&m, n, 0);
	}
}

/* A named image (rbd:...) travels in the snapshot body: terminated and
 * printable, never on a status poll; IMAGE_INFO names one and no region. */
static void test_validate_image_name(void **state)
{
	struct proto_msg m;
	size_t n;

	(void)state;
	n = make_valid(&m, PROTO_SNAPSHOT_START);
	m.body.snapshot.region_id = 3;
	assert_validate(&m, n, 0);
	strcpy(m.body.snapshot.image, "rbd:pool/ns/image");
	assert_validate(&m, n, 0);
	m.body.snapshot.image[4] = '\n';
	assert_validate(&m, n, -EINVAL);
	memset(m.body.snapshot.image, 'a', sizeof(m.body.snapshot.image));
	assert_validate(&m, n, -EINVAL);

	n = make_valid(&m, PROTO_SNAPSHOT_STATUS);
	m.body.snapshot.region_id = 3;
	assert_validate(&m, n, 0);
	strcpy(m.body.snapshot.image, "rbd:pool/image");
	assert_validate(&m, n, -EINVAL);

	n = make_valid(&m, PROTO_IMAGE_INFO);
	assert_validate(&m, n, -EINVAL); /* no name */
	strcpy(m.body.snapshot.image, "rbd:pool/image");
	assert_validate(&m, n, 0);
	m.body.snapshot.region_id = 1;
	assert_validate(&m, n, -EINVAL);
	m.body.snapshot.region_id = 0;
	m.body.snapshot.flags = PROTO_IMAGE_NO_PREFETCH;
	assert_validate(&m, n, -EINVAL);
	assert_int_equal(proto_fds_expected(PROTO_IMAGE_INFO), 0);
	assert_string_equal(proto_type_name(PROTO_IMAGE_INFO), "image-info");
}

static void test_validate_accepts_edge_values(void **state)
{
	static const uint32_t flags[] = {
		0, PROTO_HELLO_CONTROL, PROTO_HELLO_KERNEL_FAULTS,
		PROTO_HELLO_CONTROL | PROTO_HELLO_KERNEL_FAULTS,
	};
	static const uint32_t pages[] = { 1, 4096, 16384, 65536, 1u << 21, 1u << 31 };
	static const int32_t statuses[] = { 0, -1, -EINVAL, -4095 };
	struct proto_msg m;
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		n = make_valid(&m, PROTO_HELLO);
		m.body.hello.flags = flags[i];
		assert_validate(&m, n, 0);
	}
	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		n = make_valid(&m, PROTO_HELLO);
		m.body.hello.page_size = pages[i];
		assert_validate(&m, n, 0);
	}
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		n = make_valid(&m, PROTO_REPLY);
		m.body.reply.status = statuses[i];
		assert_validate(&m, n, 0);
	}

	/* The longest name that still has its NUL, spanning every printable. */
	n = make_valid(&m, PROTO_REGION_CREATE);
	for (int i = 0; i < PROTO_NAME_MAX - 1; i++)
		m.body.region_create.name[i] = (char)(i % 2 ? ' ' + i : '~' - i);
	m.body.region_create.name[PROTO_NAME_MAX - 1] = '\0';
	assert_validate(&m, n, 0);

	/* A region ending one page below the top of the address space. */
	n = make_valid(&m, PROTO_REGION_CREATE);
	m.body.region_create.addr = UINT64_MAX - 8191;
	m.body.region_create.len = 4096;
	assert_validate(&m, n, 0);

	n = make_valid(&m, PROTO_REGION_DESTROY);
	m.body.region_destroy.region_id = UINT64_MAX;
	assert_validate(&m, n, 0);
}

/* ---- proto_validate: the header ---------------------------------------- */

static void test_validate_truncated(void **state)
{
	struct proto_msg m;

	(void)state;
	make_valid(&m, PROTO_STATUS);
	for (size_t n = 0; n < HDR; n++) {
		m.hdr.size = (uint32_t)n;
		assert_validate(&m, n, -EBADMSG);
	}
}

static void test_validate_longer_than_any_message(void **state)
{
	unsigned char buf[sizeof(struct proto_msg) + 8];
	struct proto_msg m;

	(void)state;
	make_valid(&m, PROTO_REPLY);
	memset(buf, 0, sizeof(buf));
	memcpy(buf, &m, sizeof(m));
	for (size_t n = sizeof(m) + 1; n <= sizeof(buf); n++) {
		((struct proto_hdr *)buf)->size = (uint32_t)n;
		assert_validate(buf, n, -EBADMSG);
	}
}

static void test_validate_bad_magic(void **state)
{
	static const uint32_t magics[] = {
		0, PROTO_MAGIC ^ 1, PROTO_MAGIC ^ 0x80000000u, 0x44524750u /* byte-swapped */
	};
	struct proto_msg m;

	(void)state;
	for (size_t i = 0; i < sizeof(magics) / sizeof(magics[0]); i++) {
		size_t n = make_valid(&m, PROTO_HELLO);

		m.hdr.magic = magics[i];
		assert_validate(&m, n, -EBADMSG);
	}
}

static void test_validate_other_version(void **state)
{
	static const uint16_t versions[] = { 0, PROTO_VERSION + 1, 0xffff };
	struct proto_msg m;
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		n = make_valid(&m, PROTO_HELLO);
		m.hdr.version = versions[i];
		assert_validate(&m, n, -EPROTONOSUPPORT);
	}
	/* Another version may have other types and sizes: the version is
	 * what the peer must be told about, not the size it cannot know. */
	n = make_valid(&m, PROTO_HELLO);
	m.hdr.version = PROTO_VERSION + 1;
	m.hdr.type = 77;
	m.hdr.size = (uint32_t)(n + 24);
	assert_validate(&m, n + 24, -EPROTONOSUPPORT);
}

static void test_validate_size_field_mismatch(void **state)
{
	static const int64_t deltas[] = { -1, +1, -(int64_t)HDR };
	struct proto_msg m;

	(void)state;
	for (size_t i = 0; i < sizeof(deltas) / sizeof(deltas[0]); i++) {
		size_t n = make_valid(&m, PROTO_REGION_DESTROY);

		m.hdr.size = (uint32_t)((int64_t)n + deltas[i]);
		assert_validate(&m, n, -EBADMSG);
	}
	make_valid(&m, PROTO_REGION_DESTROY);
	m.hdr.size = 0;
	assert_validate(&m, HDR + 8, -EBADMSG);
	m.hdr.size = UINT32_MAX;
	assert_validate(&m, HDR + 8, -EBADMSG);
}

/* The declared size agrees with the bytes received, but not with the type:
 * every body here would otherwise pass its field checks. */
static void test_validate_body_size_wrong_for_type(void **state)
{
	static const struct {
		enum proto_type type;
		long delta;
	} t[] = {
		{ PROTO_HELLO, -8 },  { PROTO_HELLO, +8 },
		{ PROTO_REGION_CREATE, -1 }, { PROTO_REGION_CREATE, +4 },
		{ PROTO_REGION_DESTROY, -8 }, { PROTO_REGION_DESTROY, +8 },
		{ PROTO_STATUS, +1 }, { PROTO_STATUS, +8 },
		{ PROTO_REPLY, -1 }, { PROTO_REPLY, -8 },
	};
	struct proto_msg m;

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		size_t n = make_valid(&m, t[i].type) + (size_t)t[i].delta;

		m.hdr.size = (uint32_t)n;
		assert_validate(&m, n, -EBADMSG);
	}
}

static void test_validate_unknown_type(void **state)
{
	static const uint16_t types[] = {
		0, PROTO_TYPE_MAX_REQUEST + 1, PROTO_REPLY - 1, PROTO_REPLY + 1, 0xffff,
	};
	struct proto_msg m;

	(void)state;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		size_t n = make_valid(&m, PROTO_STATUS);

		m.hdr.type = types[i];
		assert_validate(&m, n, -EOPNOTSUPP);
		/* also with a body, as a newer peer's message would have */
		n = make_valid(&m, PROTO_HELLO);
		m.hdr.type = types[i];
		assert_validate(&m, n, -EOPNOTSUPP);
	}
}

/* ---- proto_validate: the bodies ---------------------------------------- */

static void test_validate_hello_unknown_flags(void **state)
{
	struct proto_msg m;

	(void)state;
	for (int bit = 2; bit < 32; bit++) {
		size_t n = make_valid(&m, PROTO_HELLO);

		m.body.hello.flags = PROTO_HELLO_CONTROL | (1u << bit);
		assert_validate(&m, n, -EINVAL);
	}
}

static void test_validate_hello_page_size(void **state)
{
	static const uint32_t bad[] = { 0, 3, 4095, 4097, 12288, 0x80000001u, UINT32_MAX };
	struct proto_msg m;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = make_valid(&m, PROTO_HELLO);

		m.body.hello.page_size = bad[i];
		assert_validate(&m, n, -EINVAL);
	}
}

/* Snapshot and restore flags: each request knows its own (the learned
 * order's fd is announced by a flag), nothing else passes. */
static void test_validate_snapshot_flags(void **state)
{
	static const struct {
		enum proto_type type;
		uint32_t known;
	} t[] = {
		{ PROTO_SNAPSHOT_START, PROTO_SNAPSHOT_ORDER },
		{ PROTO_SNAPSHOT_STATUS, 0 },
		{ PROTO_REGION_SET_IMAGE, PROTO_IMAGE_NO_PREFETCH | PROTO_IMAGE_ORDER },
	};
	struct proto_msg m;
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		for (int bit = 0; bit < 32; bit++) {
			n = make_valid(&m, t[i].type);
			m.body.snapshot.region_id = 7;
			m.body.snapshot.flags = 1u << bit;
			assert_validate(&m, n, (t[i].known >> bit) & 1 ? 0 : -EINVAL);
		}
	}
}

static void test_validate_region_create_fields(void **state)
{
	struct proto_msg m;
	struct proto_region_create *rc = &m.body.region_create;
	size_t n;

	(void)state;
	for (int bit = 0; bit < 32; bit++) {
		n = make_valid(&m, PROTO_REGION_CREATE);
		rc->flags = 1u << bit;
		assert_validate(&m, n, -EINVAL);
	}

	n = make_valid(&m, PROTO_REGION_CREATE);
	rc->len = 0;
	assert_validate(&m, n, -EINVAL);

	n = make_valid(&m, PROTO_REGION_CREATE);
	rc->addr = 0;
	assert_validate(&m, n, -EINVAL);

	n = make_valid(&m, PROTO_REGION_CREATE);
	rc->addr = UINT64_MAX - 4095;
	rc->len = 8192;
	assert_validate(&m, n, -EINVAL);

	n = make_valid(&m, PROTO_REGION_CREATE);
	rc->addr = 4096;
	rc->len = UINT64_MAX;
	assert_validate(&m, n, -EINVAL);

	/* ends exactly at 2^64: addr + len wraps to 0 */
	n = make_valid(&m, PROTO_REGION_CREATE);
	rc->addr = UINT64_MAX - 4095;
	rc->len = 4096;
	assert_validate(&m, n, -EINVAL);
}

static void test_validate_region_create_name(void **state)
{
	static const char bad[] = { '\x01', '\t', '\n', '\x1f', '\x7f', '\x80', '\xff' };
	struct proto_msg m;
	struct proto_region_create *rc = &m.body.region_create;
	size_t n;

	(void)state;
	n = make_valid(&m, PROTO_REGION_CREATE);
	memset(rc->name, 'a', sizeof(rc->name));
	assert_validate(&m, n, -EINVAL);

	for (size_t i = 0; i < sizeof(bad); i++) {
		/* first, middle and last character before the NUL */
		static const size_t at[] = { 0, 5, PROTO_NAME_MAX - 2 };

		for (size_t j = 0; j < sizeof(at) / sizeof(at[0]); j++) {
			n = make_valid(&m, PROTO_REGION_CREATE);
			memset(rc->name, 'b', PROTO_NAME_MAX - 1);
			rc->name[PROTO_NAME_MAX - 1] = '\0';
			rc->name[at[j]] = bad[i];
			assert_validate(&m, n, -EINVAL);
		}
	}
}

static void test_validate_destroy_id_zero(void **state)
{
	struct proto_msg m;
	size_t n = make_valid(&m, PROTO_REGION_DESTROY);

	(void)state;
	m.body.region_destroy.region_id = 0;
	assert_validate(&m, n, -EINVAL);
}

static void test_validate_reply_status(void **state)
{
	static const int32_t bad[] = { 1, 4096, INT32_MAX, -4096, INT32_MIN };
	struct proto_msg m;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = make_valid(&m, PROTO_REPLY);

		m.body.reply.status = bad[i];
		assert_validate(&m, n, -EINVAL);
	}
}

/* ---- proto_send / proto_recv over a socketpair ------------------------- */

struct pair {
	int s[2]; /* s[0] sends, s[1] receives */
};

static int pair_setup(void **state)
{
	struct pair *p = malloc(sizeof(*p));

	if (!p || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p->s) < 0) {
		free(p);
		return -1;
	}
	*state = p;
	return 0;
}

static int pair_teardown(void **state)
{
	struct pair *p = *state;

	for (int i = 0; i < 2; i++)
		if (p->s[i] >= 0)
			close(p->s[i]);
	free(p);
	return 0;
}

static void test_roundtrip_no_fd(void **state)
{
	struct pair *p = *state;
	struct proto_msg out, in;
	int fds[PROTO_MAX_FDS] = { -1 };
	unsigned nfds = 99;
	size_t n = make_valid(&out, PROTO_REPLY);
	ssize_t r;

	out.body.reply.region_id = 0x0102030405060708ull;
	out.body.reply.pid = 4321;
	assert_int_equal(proto_send(p->s[0], &out, n, NULL, 0), 0);
	memset(&in, 0, sizeof(in));
	r = proto_recv(p->s[1], &in, fds, &nfds);
	assert_int_equal(r, n);
	assert_int_equal(nfds, 0);
	assert_memory_equal(&in, &out, n);
	assert_validate(&in, (size_t)r, 0);
}

static void test_roundtrip_one_fd(void **state)
{
	struct pair *p = *state;
	struct proto_msg out, in;
	int mfd = new_memfd();
	int fds[PROTO_MAX_FDS] = { -1 };
	unsigned nfds = 99;
	size_t n = make_valid(&out, PROTO_REGION_CREATE);
	ssize_t r;

	assert_int_equal(proto_send(p->s[0], &out, n, &mfd, 1), 0);
	r = proto_recv(p->s[1], &in, fds, &nfds);
	assert_int_equal(r, n);
	assert_int_equal(nfds, 1);
	assert_memory_equal(&in, &out, n);
	assert_true(fds[0] >= 0);
	assert_int_not_equal(fds[0], mfd);
	assert_same_file(fds[0], mfd);
	assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
	close(fds[0]);
	close(mfd);
}

/* More than PROTO_MAX_FDS (3: a snapshot's image, its IMAGE.crc and its
 * IMAGE.order). */
static void test_recv_four_fds_refused(void **state)
{
	struct pair *p = *state;
	struct proto_msg m;
	int four[4] = { new_memfd(), new_memfd(), new_memfd(), new_memfd() };
	int fds[PROTO_MAX_FDS] = { -1 };
	unsigned nfds = 99;
	size_t n = make_valid(&m, PROTO_REGION_CREATE);
	int before;

	assert_int_equal(PROTO_MAX_FDS, 3);
	raw_send(p->s[0], &m, n, four, 4);
	for (int i = 0; i < 4; i++)
		close(four[i]);
	send_hello(p->s[0]);
	before = fd_count();
	assert_int_equal(proto_recv(p->s[1], &m, fds, &nfds), -EMSGSIZE);
	assert_int_equal(nfds, 0);
	assert_int_equal(fd_count(), before);
	assert_next_is_hello(p->s[1]);
}

/* More than proto_recv() has control space for: the kernel drops what does
 * not fit and flags MSG_CTRUNC; the ones it did install must be closed. */
static void test_recv_many_fds_refused(void **state)
{
	struct pair *p = *state;
	struct proto_msg m;
	int many[32];
	int fds[PROTO_MAX_FDS] = { -1 };
	unsigned nfds = 99;
	size_t n = make_valid(&m, PROTO_REGION_CREATE);
	int before;

	for (int i = 0; i < 32; i++)
		many[i] = new_memfd();
	raw_send(p->s[0], &m, n, many, 32);
	for (int i = 0; i < 32; i++)
		close(many[i]);
	send_hello(p->s[0]);
	before = fd_count();
	assert_int_equal(proto_recv(p->s[1], &m, fds, &nfds), -EMSGSIZE);
	assert_int_equal(nfds, 0);
	assert_int_equal(fd_count(), before);
	assert_next_is_hello(p->s[1]);
}

static void test_recv_oversized_refused(void **state)
{
	struct pair *p = *state;
	static const size_t sizes[] = { sizeof(struct proto_msg) + 1, PROTO_MAX_MSG, 65536 };
	struct proto_msg m;
	int fds[PROTO_MAX_FDS] = { -1 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		/* once bare, once carrying an fd that must not leak */
		for (unsigned with_fd = 0; with_fd < 2; with_fd++) {
			unsigned char *big = calloc(1, sizes[i]);
			int mfd = new_memfd();
			unsigned nfds = 99;
			int before;

			assert_non_null(big);
			make_valid((struct proto_msg *)big, PROTO_HELLO);
			raw_send(p->s[0], big, sizes[i], &mfd, with_fd);
			close(mfd);
			free(big);
			send_hello(p->s[0]);
			before = fd_count();
			assert_int_equal(proto_recv(p->s[1], &m, fds, &nfds), -EMSGSIZE);
			assert_int_equal(nfds, 0);
			assert_int_equal(fd_count(), before);
			assert_next_is_hello(p->s[1]);
		}
	}
}

/* The largest message proto_recv() takes is exactly one proto_msg. */
static void test_recv_largest_accepted(void **state)
{
	struct pair *p = *state;
	struct proto_msg out, in;
	int fds[PROTO_MAX_FDS];
	unsigned nfds;

	memset(&out, 0x5a, sizeof(out));
	raw_send(p->s[0], &out, sizeof(out), NULL, 0);
	assert_int_equal(proto_recv(p->s[1], &in, fds, &nfds), sizeof(out));
	assert_int_equal(nfds, 0);
	assert_memory_equal(&in, &out, sizeof(out));
}

static void test_recv_end_of_stream(void **state)
{
	struct pair *p = *state;
	struct proto_msg m;
	int fds[PROTO_MAX_FDS];
	unsigned nfds = 99;

	send_hello(p->s[0]);
	close(p->s[0]);
	p->s[0] = -1;
	/* what was queued before the close is still delivered */
	assert_next_is_hello(p->s[1]);
	assert_int_equal(proto_recv(p->s[1], &m, fds, &nfds), 0);
	assert_int_equal(nfds, 0);
}

static void test_recv_nonblocking_empty(void **state)
{
	struct pair *p = *state;
	struct proto_msg m;
	int fds[PROTO_MAX_FDS];
	unsigned nfds = 99;

	assert_int_equal(fd_nonblock(p->s[1], true), 0);
	assert_int_equal(proto_recv(p->s[1], &m, fds, &nfds), -EAGAIN);
	assert_int_equal(nfds, 0);
	send_hello(p->s[0]);
	assert_next_is_hello(p->s[1]);
	assert_int_equal(proto_recv(p->s[1], &m, fds, &nfds), -EAGAIN);
}

static void test_recv_bad_socket(void **state)
{
	struct proto_msg m;
	int fds[PROTO_MAX_FDS];
	unsigned nfds = 99;
	int fd = new_memfd();

	(void)state;
	assert_int_equal(proto_recv(-1, &m, fds, &nfds), -EBADF);
	assert_int_equal(nfds, 0);
	assert_int_equal(proto_recv(fd, &m, fds, &nfds), -ENOTSOCK);
	close(fd);
}

static void test_send_refuses_what_recv_would(void **state)
{
	struct pair *p = *state;
	struct proto_msg m;
	int four[4] = { 0, 1, 2, 0 };
	int fds[PROTO_MAX_FDS];
	unsigned nfds;
	size_t n = make_valid(&m, PROTO_REGION_CREATE);

	assert_int_equal(proto_send(p->s[0], &m, n, four, 4), -EINVAL);
	assert_int_equal(proto_send(p->s[0], &m, sizeof(m) + 1, NULL, 0), -EINVAL);
	/* nothing went out */
	assert_int_equal(fd_nonblock(p->s[1], true), 0);
	assert_int_equal(proto_recv(p->s[1], &m, fds, &nfds), -EAGAIN);
}

static void test_send_peer_gone(void **state)
{
	struct pair *p = *state;
	struct proto_msg m;
	size_t n = make_valid(&m, PROTO_STATUS);

	close(p->s[1]);
	p->s[1] = -1;
	/* Linux raises no SIGPIPE on SEQPACKET (MSG_NOSIGNAL is for other
	 * kernels), so only the errno can be checked here. */
	assert_int_equal(proto_send(p->s[0], &m, n, NULL, 0), -EPIPE);
	assert_int_equal(proto_send(-1, &m, n, NULL, 0), -EBADF);
}

/*
 * Two proto_recv() bugs these tests caught, fixed:
 *
 * An empty message reads as end of stream (recvmsg returns 0), and callers
 * treat 0 as "peer gone" without looking at fds[]: a descriptor riding on
 * it would leak.  A hostile client can do this once per connection.
 */
static void test_recv_empty_message_with_fd(void **state)
{
	struct pair *p = *state;
	struct proto_msg m;
	int mfd = new_memfd();
	int fds[PROTO_MAX_FDS] = { -1 };
	unsigned nfds = 99;
	int before;
	ssize_t r;

	raw_send(p->s[0], "", 0, &mfd, 1);
	close(mfd);
	before = fd_count();
	r = proto_recv(p->s[1], &m, fds, &nfds);
	assert_true(r <= 0);
	assert_int_equal(nfds, 0);
	assert_int_equal(fd_count(), before);
}

/* With SO_PASSCRED the kernel puts SCM_CREDENTIALS before SCM_RIGHTS: the
 * fd must come from the SCM_RIGHTS header, not the first one. */
static void test_recv_fd_after_credentials(void **state)
{
	struct pair *p = *state;
	struct proto_msg m;
	int one = 1, mfd = new_memfd();
	int fds[PROTO_MAX_FDS] = { -1 };
	unsigned nfds = 99;
	size_t n = make_valid(&m, PROTO_REGION_CREATE);
	int before;

	assert_int_equal(setsockopt(p->s[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	assert_int_equal(proto_send(p->s[0], &m, n, &mfd, 1), 0);
	before = fd_count();
	assert_int_equal(proto_recv(p->s[1], &m, fds, &nfds), n);
	assert_int_equal(nfds, 1);
	assert_same_file(fds[0], mfd);
	close(fds[0]);
	assert_int_equal(fd_count(), before);
	close(mfd);
}

/*
 * EINTR: a thread waits until the test's main thread is asleep in the
 * call under test, signals it (a handler without SA_RESTART, so the
 * syscall fails with EINTR), waits for the handler to have run, then
 * does what lets the call complete.
 */
static volatile sig_atomic_t sig_hits;

static void on_sigusr1(int sig)
{
	(void)sig;
	sig_hits++;
}

struct interrupter {
	pthread_t target;
	pid_t target_tid;
	int sock;
	void (*then)(int sock);
};

static bool thread_sleeping(pid_t tid)
{
	char path[64], buf[512];
	const char *st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	st = strrchr(buf, ')');
	return st && st[1] == ' ' && st[2] == 'S';
}

static void wait_for(bool (*cond)(const struct interrupter *), const struct interrupter *it)
{
	const struct timespec tick = { 0, 1000000 };

	for (int i = 0; i < 10000 && !cond(it); i++)
		nanosleep(&tick, NULL);
}

static bool target_sleeping(const struct interrupter *it)
{
	return thread_sleeping(it->target_tid);
}

static bool handler_ran(const struct interrupter *it)
{
	(void)it;
	return sig_hits > 0;
}

static void *interrupter_main(void *arg)
{
	struct interrupter *it = arg;

	wait_for(target_sleeping, it);
	pthread_kill(it->target, SIGUSR1);
	wait_for(handler_ran, it);
	it->then(it->sock);
	return NULL;
}

static void run_interrupted(struct interrupter *it, pthread_t *ret_thread)
{
	struct sigaction sa = { .sa_handler = on_sigusr1 }; /* no SA_RESTART */

	sig_hits = 0;
	assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
	it->target = pthread_self();
	it->target_tid = (pid_t)syscall(SYS_gettid);
	assert_int_equal(pthread_create(ret_thread, NULL, interrupter_main, it), 0);
}

static void test_recv_retries_eintr(void **state)
{
	struct pair *p = *state;
	struct interrupter it = { .sock = p->s[0], .then = send_hello };
	struct proto_msg m;
	int fds[PROTO_MAX_FDS];
	unsigned nfds;
	pthread_t t;
	ssize_t r;

	run_interrupted(&it, &t);
	r = proto_recv(p->s[1], &m, fds, &nfds);
	/* join before asserting: a failed assert must not leave the thread
	 * running on this frame */
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(sig_hits, 1);
	assert_int_equal(r, HDR + sizeof(struct proto_hello));
	assert_int_equal(nfds, 0);
	assert_int_equal(m.hdr.type, PROTO_HELLO);
}

/* All of it: a blocked sender wakes only once the queue is below half its
 * limit. */
static void drain(int sock)
{
	char buf[sizeof(struct proto_msg)];

	while (recv(sock, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

static void test_send_retries_eintr(void **state)
{
	struct pair *p = *state;
	struct interrupter it = { .sock = p->s[1], .then = drain };
	struct proto_msg m;
	size_t n = make_valid(&m, PROTO_HELLO);
	int queued = 0, r;
	pthread_t t;

	/* fill the socket so that the next send blocks */
	assert_int_equal(fd_nonblock(p->s[0], true), 0);
	while (send(p->s[0], &m, n, MSG_NOSIGNAL) == (ssize_t)n)
		queued++;
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(fd_nonblock(p->s[0], false), 0);
	assert_true(queued > 0);

	run_interrupted(&it, &t);
	r = proto_send(p->s[0], &m, n, NULL, 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(sig_hits, 1);
	assert_int_equal(r, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_finish_sizes),
		cmocka_unit_test(test_type_tables),
		cmocka_unit_test(test_counters_wire_layout),
		cmocka_unit_test(test_counters_public_layout),
		cmocka_unit_test(test_counters_names),
		cmocka_unit_test(test_validate_accepts_each_type),
		cmocka_unit_test(test_validate_accepts_edge_values),
		cmocka_unit_test(test_validate_image_name),
		cmocka_unit_test(test_validate_truncated),
		cmocka_unit_test(test_validate_longer_than_any_message),
		cmocka_unit_test(test_validate_bad_magic),
		cmocka_unit_test(test_validate_other_version),
		cmocka_unit_test(test_validate_size_field_mismatch),
		cmocka_unit_test(test_validate_body_size_wrong_for_type),
		cmocka_unit_test(test_validate_unknown_type),
		cmocka_unit_test(test_validate_hello_unknown_flags),
		cmocka_unit_test(test_validate_snapshot_flags),
		cmocka_unit_test(test_validate_hello_page_size),
		cmocka_unit_test(test_validate_region_create_fields),
		cmocka_unit_test(test_validate_region_create_name),
		cmocka_unit_test(test_validate_destroy_id_zero),
		cmocka_unit_test(test_validate_reply_status),
		cmocka_unit_test_setup_teardown(test_roundtrip_no_fd, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_one_fd, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_recv_four_fds_refused, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_recv_many_fds_refused, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_recv_oversized_refused, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_recv_largest_accepted, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_recv_end_of_stream, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_recv_empty_message_with_fd, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_recv_fd_after_credentials, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_recv_nonblocking_empty, pair_setup, pair_teardown),
		cmocka_unit_test(test_recv_bad_socket),
		cmocka_unit_test_setup_teardown(test_send_refuses_what_recv_would, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_send_peer_gone, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_recv_retries_eintr, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_send_retries_eintr, pair_setup, pair_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
