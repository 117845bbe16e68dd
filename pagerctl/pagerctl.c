/* SPDX-License-Identifier: MIT */
/*
 * pagerctl: inspect and steer a running pagerd over its control channel.
 *
 *   pagerctl [--socket PATH] [--json] status | stats
 *   pagerctl [--socket PATH] [--json] regions
 *   pagerctl [--socket PATH] [--json] clients
 *   pagerctl [--socket PATH] set-limit global SIZE
 *   pagerctl [--socket PATH] set-limit client|region ID SIZE
 *
 * Output is a table for people, or with --json one JSON value for scripts:
 * an object for status, an array of objects for regions and clients.  In
 * JSON, sizes are bytes or pages as the key says and a memory_limit of 0
 * means none.  set-limit prints nothing on success.
 *
 * In the regions table, RA HITS is "pages read ahead that were then used /
 * pages read ahead", and EVICT(z/c/d) counts evictions of zero, clean and
 * dirty pages.
 *
 * Exit codes: 0 success, 1 pagerd unreachable or refused the request, 2 bad
 * command line.  Arguments are checked before connecting, so a usage error
 * never depends on whether pagerd runs.
 */
#include <errno.h>
#include <time.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "image.h"
#include "proto.h"
#include "pager.h"
#include "size.h"

enum {
	EXIT_OK = 0,
	EXIT_DAEMON = 1,
	EXIT_USAGE = 2,
};

/*
 * pagerd answers REGION_INFO for as many regions as it holds; a bound keeps
 * a daemon gone wrong from making us loop or allocate without end.
 */
#define CTL_MAX_REGIONS (1u << 20)

struct ctl {
	int sock;
	uint32_t seq;
	bool json;
	uint64_t page_size;
	const char *cmd;	/* for error messages */
};

/* What a command's arguments parse into before pagerd is contacted. */
struct cmd_args {
	struct proto_set_limit limit;	/* set-limit */
	uint64_t region_id;		/* snapshot */
	const char *path;		/* snapshot */
};

static int ctl_call_fd(struct ctl *c, struct proto_msg *msg, enum proto_type type,
		       const int *sfds, unsigned nsfds, struct proto_reply *ret)
{
	struct proto_msg rep;
	int fds[PROTO_MAX_FDS];
	unsigned nfds;
	uint32_t seq = ++c->seq;
	size_t n = proto_finish(msg, type, seq);
	ssize_t got;
	int r = proto_send(c->sock, msg, n, sfds, nsfds);

	if (r < 0)
		return r;
	got = proto_recv(c->sock, &rep, fds, &nfds);
	if (got == 0)
		return -ECONNRESET;
	if (got < 0)
		return (int)got;
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	r = proto_validate(&rep, (size_t)got);
	if (r < 0)
		return r;
	if (rep.hdr.type != PROTO_REPLY || rep.hdr.seq != seq)
		return -EBADMSG;
	*ret = rep.body.reply;
	return rep.body.reply.status;
}

static int ctl_call(struct ctl *c, struct proto_msg *msg, enum proto_type type,
		    struct proto_reply *ret)
{
	return ctl_call_fd(c, msg, type, NULL, 0, ret);
}

/* Connects and says hello as a control client; returns 0 or -errno. */
static int ctl_connect(struct ctl *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct proto_msg msg = { 0 };
	struct proto_reply rep;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	c->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->sock < 0)
		return -errno;
	if (connect(c->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	msg.body.hello.flags = PROTO_HELLO_CONTROL;
	msg.body.hello.page_size = (uint32_t)c->page_size;
	return ctl_call(c, &msg, PROTO_HELLO, &rep);
}

/* Reports a failed request; returns the exit code for it. */
static int ctl_error(const struct ctl *c, int e)
{
	fprintf(stderr, "pagerctl: %s: %s\n", c->cmd, strerror(-e));
	return EXIT_DAEMON;
}

static void human_bytes(uint64_t b, char *buf, size_t n)
{
	static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int i = 0;

	while (v >= 1024 && i < 4)
		v /= 1024, i++;
	snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* A limit in bytes for a table: "none" for 0. */
static void human_limit(uint64_t b, char *buf, size_t n)
{
	if (b)
		human_bytes(b, buf, n);
	else
		snprintf(buf, n, "none");
}

/*
 * The length of the well-formed UTF-8 sequence at s (1 to 4 bytes), or 0
 * if the byte there starts none (a stray continuation byte, an overlong
 * form, a surrogate, past U+10FFFF, or cut short).
 */
static size_t utf8_seq_len(const unsigned char *s)
{
	unsigned char c = s[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0; /* overlong */
	else if (c == 0xed)
		hi = 0x9f; /* surrogates */
	else if (c == 0xf0)
		lo = 0x90; /* overlong */
	else if (c == 0xf4)
		hi = 0x8f; /* past U+10FFFF */
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/*
 * Prints a JSON string.  Paths are the user's and may hold any bytes:
 * well-formed UTF-8 goes out as it is (JSON text is UTF-8), quotes,
 * backslashes and control characters are escaped, and a byte that is not
 * part of well-formed UTF-8 becomes U+FFFD, so that the output is always
 * valid JSON.
 */
static void json_string(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	putchar('"');
	while (*s) {
		size_t n = utf8_seq_len(s);

		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if (*s < 0x20 || *s == 0x7f)
			printf("\\u%04x", *s);
		else if (n == 0)
			fputs("\\ufffd", stdout);
		else
			fwrite(s, 1, n, stdout);
		s += n ? n : 1;
	}
	putchar('"');
}

static int cmd_status(struct ctl *c, const struct cmd_args *a)
{
	struct proto_msg msg = { 0 };
	struct proto_reply r;
	char mapped[32], resident[32], limit[32], used[32], total[32];
	int e = ctl_call(c, &msg, PROTO_STATUS, &r);

	(void)a;
	if (e < 0)
		return ctl_error(c, e);
	if (c->json) {
		printf("{\"pid\":%d,\"uptime_ms\":%" PRIu64 ",\"clients\":%" PRIu64
		       ",\"regions\":%" PRIu64 ",\"mapped_bytes\":%" PRIu64
		       ",\"resident_pages\":%" PRIu64 ",\"page_size\":%" PRIu64
		       ",\"memory_limit\":%" PRIu64 ",\"swap_total_pages\":%" PRIu64
		       ",\"swap_used_pages\":%" PRIu64 ",\"swap_io_errors\":%" PRIu64
		       ",\"swap_bad_pages\":%" PRIu64 ",\"config_errors\":%" PRIu32
		       ",\"swap_failing\":%s,\"over_limit\":%s"
		       ",\"pool_pages\":%" PRIu64 ",\"pool_bytes\":%" PRIu64,
		       r.pid, r.uptime_ms, r.clients, r.regions, r.mapped_bytes,
		       r.resident_pages, c->page_size, r.memory_limit, r.swap_total,
		       r.swap_used, r.swap_io_errors, r.swap_bad, r.config_errors,
		       r.swap_failing ? "true" : "false", r.over_limit ? "true" : "false",
		       r.pool_pages, r.pool_bytes);
#define X(name, ...) printf(",\"" #name "\":%" PRIu64, r.counters.name);
		PAGER_COUNTERS(X)
#undef X
		printf("}\n");
		return EXIT_OK;
	}
	human_bytes(r.mapped_bytes, mapped, sizeof(mapped));
	human_bytes(r.resident_pages * c->page_size, resident, sizeof(resident));
	human_limit(r.memory_limit, limit, sizeof(limit));
	printf("pagerd pid %d, up %" PRIu64 ".%03" PRIu64 " s\n", r.pid,
	       r.uptime_ms / 1000, r.uptime_ms % 1000);
	printf("  clients            %" PRIu64 "\n", r.clients);
	printf("  regions            %" PRIu64 " (%s mapped)\n", r.regions, mapped);
	printf("  resident           %" PRIu64 " pages (%s)\n", r.resident_pages, resident);
	printf("  memory limit       %s\n", limit);
	if (r.swap_total) {
		human_bytes(r.swap_used * c->page_size, used, sizeof(used));
		human_bytes(r.swap_total * c->page_size, total, sizeof(total));
		printf("  swap               %" PRIu64 " of %" PRIu64 " pages used (%s of %s)\n",
		       r.swap_used, r.swap_total, used, total);
	} else {
		printf("  swap               no swap\n");
	}
	printf("  swap I/O errors    %" PRIu64 "\n", r.swap_io_errors);
	if (r.pool_pages || r.counters.pool_stores) {
		char pb[32];

		human_bytes(r.pool_bytes, pb, sizeof(pb));
		printf("  compressed pool    %" PRIu64 " pages in %s (stored at %.2fx), %" PRIu64
		       " hits, %" PRIu64 " spilled, %" PRIu64 " too big\n", r.pool_pages, pb,
		       r.counters.pool_stored_bytes ?
		       (double)r.counters.pool_stores * (double)c->page_size /
		       (double)r.counters.pool_stored_bytes : 0.0,
		       r.counters.pool_hits, r.counters.pool_spills, r.counters.pool_rejects);
	}
	if (r.swap_bad || r.counters.writeback_failed_pages || r.swap_failing)
		printf("  swap writes        %s: %" PRIu64 " pages failed, %" PRIu64
		       " slots retired\n", r.swap_failing ? "FAILING (paused)" : "work",
		       r.counters.writeback_failed_pages, r.swap_bad);
	if (r.over_limit)
		printf("  over limit         nothing can be evicted: resident memory may exceed the limits\n");
	if (r.config_errors)
		printf("  configuration      %" PRIu32 " error%s in the file: not in effect (see pagerd's log)\n",
		       r.config_errors, r.config_errors == 1 ? "" : "s");
	/* Named as in --json and the metrics, so what one sees here is
	 * what a script asks for. */
	printf("counters since start\n");
#define X(name, scope, unit, ...) \
	printf("  %-24s %12" PRIu64 " %s\n", #name, r.counters.name, unit);
	PAGER_COUNTERS(X)
#undef X
	return EXIT_OK;
}

static int region_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct proto_region_stats *)a)->region_id;
	uint64_t y = ((const struct proto_region_stats *)b)->region_id;

	return (x > y) - (x < y);
}

/*
 * Fetches every region, asking for index 0, 1, ... until pagerd answers
 * -ENOENT.  The walk is not atomic: a region created or destroyed meanwhile
 * may be missed or listed twice.  On success *ret is a malloc'ed array the
 * caller frees (NULL when there are no regions), sorted by region id so the
 * output is stable, with names NUL-terminated; returns 0 or -errno, leaving
 * *ret and *ret_n untouched on failure.
 */
static int fetch_regions(struct ctl *c, struct proto_region_stats **ret,
			 size_t *ret_n)
{
	struct proto_region_stats *v = NULL;
	size_t n = 0, cap = 0;

	for (;;) {
		struct proto_msg msg = { 0 };
		struct proto_reply r;
		int e;

		if (n == CTL_MAX_REGIONS) {
			free(v);
			return -E2BIG;
		}
		msg.body.region_ref.index = n;
		e = ctl_call(c, &msg, PROTO_REGION_INFO, &r);
		if (e == -ENOENT)
			break;
		if (e < 0) {
			free(v);
			return e;
		}
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 16;
			struct proto_region_stats *nv = realloc(v, ncap * sizeof(*v));

			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = ncap;
		}
		v[n] = r.region;
		v[n].name[PROTO_NAME_MAX - 1] = '\0';
		n++;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), region_cmp);
	*ret = v;
	*ret_n = n;
	return 0;
}

static void print_region_json(const struct ctl *c, const struct proto_region_stats *s)
{
	printf("{\"region_id\":%" PRIu64 ",\"client_id\":%" PRIu64
	       ",\"client_pid\":%d,\"name\":",
	       s->region_id, s->client_id, s->client_pid);
	json_string(s->name);
	printf(",\"pages\":%" PRIu64 ",\"size_bytes\":%" PRIu64
	       ",\"resident_pages\":%" PRIu64 ",\"swapped_pages\":%" PRIu64
	       ",\"zero_pages\":%" PRIu64 ",\"memory_limit\":%" PRIu64
	       ",\"image_pending\":%" PRIu64 ",\"pool_pages\":%" PRIu64
	       ",\"pool_bytes\":%" PRIu64,
	       s->pages, s->pages * c->page_size, s->resident, s->swapped,
	       s->zero, s->memory_limit, s->image_pending, s->pool_pages, s->pool_bytes);
#define X(name, scope, ...) \
	COUNTER_IF_##scope(printf(",\"" #name "\":%" PRIu64, s->counters.name);)
	PAGER_COUNTERS(X)
#undef X
	putchar('}');
}

static int cmd_regions(struct ctl *c, const struct cmd_args *a)
{
	struct proto_region_stats *v;
	size_t n;
	int namew = 4;
	int e = fetch_regions(c, &v, &n);

	(void)a;
	if (e < 0)
		return ctl_error(c, e);
	if (c->json) {
		putchar('[');
		for (size_t i = 0; i < n; i++) {
			if (i)
				putchar(',');
			print_region_json(c, &v[i]);
		}
		printf("]\n");
		free(v);
		return EXIT_OK;
	}
	if (n == 0) {
		printf("no regions\n");
		return EXIT_OK;
	}
	for (size_t i = 0; i < n; i++) {
		int len = (int)strlen(v[i].name);

		if (len > namew)
			namew = len;
	}
	printf("%6s %6s %8s  %-*s %10s %10s %10s %10s %8s %8s %15s %13s\n",
	       "ID", "CLIENT", "PID", namew, "NAME", "SIZE", "RESIDENT",
	       "SWAPPED", "LIMIT", "SWAP-IN", "SWAP-OUT", "EVICT(z/c/d)",
	       "RA HITS");
	for (size_t i = 0; i < n; i++) {
		const struct proto_region_stats *s = &v[i];
		char size[32], res[32], swp[32], lim[32], ev[64], ra[48];

		human_bytes(s->pages * c->page_size, size, sizeof(size));
		human_bytes(s->resident * c->page_size, res, sizeof(res));
		human_bytes(s->swapped * c->page_size, swp, sizeof(swp));
		human_limit(s->memory_limit, lim, sizeof(lim));
		snprintf(ev, sizeof(ev), "%" PRIu64 "/%" PRIu64 "/%" PRIu64,
			 s->counters.evict_zero, s->counters.evict_clean,
			 s->counters.evict_dirty);
		snprintf(ra, sizeof(ra), "%" PRIu64 "/%" PRIu64,
			 s->counters.readahead_hits, s->counters.readahead);
		printf("%6" PRIu64 " %6" PRIu64 " %8d  %-*s %10s %10s %10s %10s %8"
		       PRIu64 " %8" PRIu64 " %15s %13s\n",
		       s->region_id, s->client_id, s->client_pid, namew,
		       s->name[0] ? s->name : "-", size, res, swp, lim,
		       s->counters.swap_ins, s->counters.swap_outs, ev, ra);
	}
	free(v);
	return EXIT_OK;
}

static int client_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct proto_region_stats *)a)->client_id;
	uint64_t y = ((const struct proto_region_stats *)b)->client_id;

	return (x > y) - (x < y);
}

struct client_row {
	uint64_t id;
	int32_t pid;
	uint64_t regions, pages, resident, swapped;
};

/*
 * The protocol has no message listing clients, so clients are derived from
 * the regions: a client that has no region (yet) is not listed.
 */
static int cmd_clients(struct ctl *c, const struct cmd_args *a)
{
	struct proto_region_stats *v;
	struct client_row *rows;
	size_t n, nrows = 0;
	int e = fetch_regions(c, &v, &n);

	(void)a;
	if (e < 0)
		return ctl_error(c, e);
	rows = calloc(n ? n : 1, sizeof(*rows));
	if (!rows) {
		free(v);
		return ctl_error(c, -ENOMEM);
	}
	/* Sorted by client, a client's regions are adjacent: one pass sums
	 * them in O(n log n) however many clients there are. */
	if (n > 1)
		qsort(v, n, sizeof(*v), client_cmp);
	for (size_t i = 0; i < n; i++) {
		struct client_row *row = nrows ? &rows[nrows - 1] : NULL;

		if (!row || row->id != v[i].client_id) {
			row = &rows[nrows++];
			row->id = v[i].client_id;
			row->pid = v[i].client_pid;
		}
		row->regions++;
		row->pages += v[i].pages;
		row->resident += v[i].resident;
		row->swapped += v[i].swapped;
	}
	free(v);
	if (c->json) {
		putchar('[');
		for (size_t i = 0; i < nrows; i++)
			printf("%s{\"client_id\":%" PRIu64 ",\"pid\":%d,\"regions\":%" PRIu64
			       ",\"pages\":%" PRIu64 ",\"size_bytes\":%" PRIu64
			       ",\"resident_pages\":%" PRIu64 ",\"swapped_pages\":%" PRIu64 "}",
			       i ? "," : "", rows[i].id, rows[i].pid, rows[i].regions,
			       rows[i].pages, rows[i].pages * c->page_size,
			       rows[i].resident, rows[i].swapped);
		printf("]\n");
	} else if (nrows == 0) {
		printf("no clients with regions\n");
	} else {
		printf("%6s %8s %7s %10s %10s %10s\n", "CLIENT", "PID", "REGIONS",
		       "SIZE", "RESIDENT", "SWAPPED");
		for (size_t i = 0; i < nrows; i++) {
			char size[32], res[32], swp[32];

			human_bytes(rows[i].pages * c->page_size, size, sizeof(size));
			human_bytes(rows[i].resident * c->page_size, res, sizeof(res));
			human_bytes(rows[i].swapped * c->page_size, swp, sizeof(swp));
			printf("%6" PRIu64 " %8d %7" PRIu64 " %10s %10s %10s\n",
			       rows[i].id, rows[i].pid, rows[i].regions, size, res, swp);
		}
	}
	free(rows);
	return EXIT_OK;
}

static const char *const scope_names[] = {
	[PROTO_LIMIT_GLOBAL] = "global",
	[PROTO_LIMIT_CLIENT] = "client",
	[PROTO_LIMIT_REGION] = "region",
};
#define NSCOPES (sizeof(scope_names) / sizeof(scope_names[0]))

/*
 * set-limit global SIZE | set-limit client|region ID SIZE.  SIZE is 0 or
 * "none" to clear, else at least a page: pagerd counts limits in whole pages,
 * and a smaller nonzero size would silently mean "none".  Returns 0, or
 * -EINVAL after saying what is wrong.
 */
static int parse_set_limit(char **args, int nargs, struct cmd_args *ret)
{
	uint64_t page_size = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t id = 0, limit;
	const char *size;
	unsigned scope;
	int e;

	for (scope = 0; nargs >= 1 && scope < NSCOPES; scope++)
		if (strcmp(args[0], scope_names[scope]) == 0)
			break;
	if (nargs < 1 || scope == NSCOPES) {
		fprintf(stderr, "pagerctl: set-limit needs global, client or region\n");
		return -EINVAL;
	}
	if (nargs != (scope == PROTO_LIMIT_GLOBAL ? 2 : 3)) {
		fprintf(stderr, "pagerctl: set-limit %s takes %s\n", args[0],
			scope == PROTO_LIMIT_GLOBAL ? "SIZE" : "ID SIZE");
		return -EINVAL;
	}
	if (scope != PROTO_LIMIT_GLOBAL &&
	    (parse_u64(args[1], &id) < 0 || id == 0)) {
		fprintf(stderr, "pagerctl: set-limit: bad %s id '%s'\n", args[0], args[1]);
		return -EINVAL;
	}
	size = args[nargs - 1];
	if (strcmp(size, "none") == 0) {
		limit = 0;
	} else if ((e = parse_size(size, &limit)) < 0) {
		fprintf(stderr, "pagerctl: set-limit: %s size '%s'\n",
			e == -ERANGE ? "too large a" : "bad", size);
		return -EINVAL;
	} else if (limit && limit < page_size) {
		fprintf(stderr, "pagerctl: set-limit: size '%s' is less than a page (%" PRIu64
			" bytes); use 0 or none for no limit\n", size, page_size);
		return -EINVAL;
	}
	ret->limit.scope = scope;
	ret->limit.id = id;
	ret->limit.limit = limit;
	return 0;
}

static int cmd_set_limit(struct ctl *c, const struct cmd_args *a)
{
	struct proto_msg msg = { 0 };
	struct proto_reply r;
	int e;

	msg.body.set_limit = a->limit;
	e = ctl_call(c, &msg, PROTO_SET_LIMIT, &r);
	if (e == -ENOENT) {
		fprintf(stderr, "pagerctl: set-limit: no such %s %" PRIu64 "\n",
			scope_names[a->limit.scope], a->limit.id);
		return EXIT_DAEMON;
	}
	if (e < 0)
		return ctl_error(c, e);
	return EXIT_OK;
}

static int parse_snapshot(char **args, int nargs, struct cmd_args *ret)
{
	if (nargs != 2 || parse_u64(args[0], &ret->region_id) < 0 ||
	    ret->region_id == 0 || !*args[1]) {
		fprintf(stderr, "pagerctl: snapshot takes REGION-ID PATH\n");
		return -EINVAL;
	}
	ret->path = args[1];
	return 0;
}

/* A progress line on a terminal, redrawn in place. */
static void progress(const struct proto_snapshot_status *st, bool final)
{
	unsigned width = 40, fill;
	double f = st->pages_total ? (double)st->pages_done / (double)st->pages_total : 1.0;

	if (!isatty(STDERR_FILENO) && !final)
		return;
	fill = (unsigned)(f * width);
	fprintf(stderr, "\r[");
	for (unsigned i = 0; i < width; i++)
		fputc(i < fill ? '#' : '.', stderr);
	fprintf(stderr, "] %5.1f%%  %" PRIu64 "/%" PRIu64 " pages%s", f * 100,
		st->pages_done, st->pages_total, final ? "\n" : "");
}

/*
 * Takes a snapshot of any client's region into PATH, opened with our own
 * rights, and commits the sidecar once pagerd has copied every page.
 */
/* The size of region `id` in bytes (0: no such region); 0 or -errno. */
static int region_size(struct ctl *c, uint64_t id, uint64_t *ret)
{
	struct proto_region_stats *v;
	size_t n;
	int e = fetch_regions(c, &v, &n);

	if (e < 0)
		return e;
	*ret = 0;
	for (size_t i = 0; i < n; i++)
		if (v[i].region_id == id)
			*ret = v[i].pages * c->page_size;
	free(v);
	return 0;
}

static int cmd_snapshot(struct ctl *c, const struct cmd_args *a)
{
	struct proto_msg msg = { 0 };
	struct proto_reply r;
	struct image_meta m = { 0 };
	uint64_t size = 0;
	int fd = -1, e, crc_fd = -1, order_fd = -1;
	/* A Ceph RBD image: pagerd opens, fills and commits it with its own
	 * Ceph identity, once it has checked our uid against rbd_allow. */
	bool named = !strncmp(a->path, "rbd:", 4);

	if (named) {
		if (strlen(a->path) >= sizeof(msg.body.snapshot.image)) {
			fprintf(stderr, "pagerctl: snapshot: %s: name too long\n", a->path);
			return EXIT_USAGE;
		}
		strcpy(msg.body.snapshot.image, a->path);
		msg.body.snapshot.region_id = a->region_id;
		e = ctl_call(c, &msg, PROTO_SNAPSHOT_START, &r);
		goto poll;
	}

	/* The image is sized here, with our rights: pagerd does no
	 * synchronous I/O on a file it is handed. */
	if ((e = region_size(c, a->region_id, &size)) < 0)
		return ctl_error(c, e);
	if (!size) {
		fprintf(stderr, "pagerctl: snapshot: no such region %" PRIu64 "\n", a->region_id);
		return EXIT_DAEMON;
	}
	if ((e = image_meta_remove(a->path)) < 0 ||
	    (fd = open(a->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
		fprintf(stderr, "pagerctl: snapshot: %s: %s\n", a->path,
			strerror(e < 0 ? -e : errno));
		return EXIT_DAEMON;
	}
	if (ftruncate(fd, (off_t)size) < 0)
		e = -errno;
	else
		e = image_crc_create(size / c->page_size, &crc_fd);
	if (e == 0)
		e = image_order_create(&order_fd);
	if (e < 0) {
		fprintf(stderr, "pagerctl: snapshot: %s: %s\n", a->path, strerror(-e));
		if (crc_fd >= 0)
			close(crc_fd);
		close(fd);
		unlink(a->path);
		return EXIT_DAEMON;
	}
	msg.body.snapshot.region_id = a->region_id;
	msg.body.snapshot.flags = PROTO_SNAPSHOT_ORDER;
	e = ctl_call_fd(c, &msg, PROTO_SNAPSHOT_START, (int[]){ fd, crc_fd, order_fd }, 3, &r);
poll:
	for (unsigned wait_ms = 1; e == 0;) {
		struct timespec ts = { 0, (long)wait_ms * 1000000 };

		memset(&msg, 0, sizeof(msg));
		msg.body.snapshot.region_id = a->region_id;
		e = ctl_call(c, &msg, PROTO_SNAPSHOT_STATUS, &r);
		if (e < 0)
			break;
		if (r.snapshot.done) {
			e = r.snapshot.status;
			break;
		}
		progress(&r.snapshot, false);
		nanosleep(&ts, NULL);
		if (wait_ms < 100)
			wait_ms *= 2;
	}
	if (e == 0 && !named) {
		struct stat st;

		/* pagerd sized the image to the region. */
		if (fstat(fd, &st) < 0)
			e = -errno;
		m.size = (uint64_t)st.st_size;
		m.page_size = (uint32_t)c->page_size;
		m.data_pages = r.snapshot.pages_total;
		m.created = (uint64_t)time(NULL);
		/* The checksums before the sidecar that vouches for them. */
		if (e == 0)
			e = image_crc_commit(a->path, crc_fd);
		/* The learned order only steers prefetch: never fatal. */
		if (e == 0 && image_order_commit(a->path, order_fd) < 0)
			image_order_remove(a->path);
		if (e == 0)
			e = image_meta_commit(a->path, fd, &m);
	}
	if (!named) {
		close(order_fd);
		close(crc_fd);
		close(fd);
		if (e < 0)
			unlink(a->path); /* never leave an image that was not made */
	}
	if (e == -ENOENT) {
		if (named)
			fprintf(stderr, "pagerctl: snapshot: no such region %" PRIu64 ", or no such "
				"pool or namespace for %s\n", a->region_id, a->path);
		else
			fprintf(stderr, "pagerctl: snapshot: no such region %" PRIu64 "\n",
				a->region_id);
		return EXIT_DAEMON;
	}
	if (e < 0)
		return ctl_error(c, e);
	progress(&r.snapshot, true);
	if (c->json) {
		printf("{\"region_id\":%" PRIu64 ",\"path\":", a->region_id);
		json_string(a->path);
		printf(",\"pages\":%" PRIu64 ",\"pause_ns\":%" PRIu64 "}\n",
		       r.snapshot.pages_total, r.snapshot.pause_ns);
	} else {
		printf("snapshot of region %" PRIu64 " in %s: %" PRIu64 " pages, writers paused %.3f ms\n",
		       a->region_id, a->path, r.snapshot.pages_total,
		       (double)r.snapshot.pause_ns / 1e6);
	}
	return EXIT_OK;
}

static const struct command {
	const char *name;
	/* NULL: the command takes no arguments */
	int (*parse)(char **args, int nargs, struct cmd_args *ret);
	int (*run)(struct ctl *c, const struct cmd_args *a);
} commands[] = {
	{ "status", NULL, cmd_status },
	{ "stats", NULL, cmd_status },
	{ "regions", NULL, cmd_regions },
	{ "clients", NULL, cmd_clients },
	{ "set-limit", parse_set_limit, cmd_set_limit },
	{ "snapshot", parse_snapshot, cmd_snapshot },
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: pagerctl [--socket PATH] [--json] COMMAND [ARGS]\n"
		"\n"
		"Commands:\n"
		"  status                      daemon-wide counters, limit and swap use\n"
		"  stats                       the same as status\n"
		"  regions                     one row per region of every client\n"
		"  clients                     clients that have regions, with their totals\n"
		"  set-limit global SIZE       the daemon-wide resident memory limit\n"
		"  set-limit client ID SIZE    a client's limit\n"
		"  set-limit region ID SIZE    a region's limit\n"
		"  snapshot ID PATH            copy-on-write snapshot of a live region to PATH\n"
		"                              (or rbd:POOL[/NAMESPACE]/IMAGE, written by pagerd)\n"
		"                              (a sparse raw image, PATH.meta written when complete)\n"
		"\n"
		"SIZE is bytes with an optional K, M, G or T suffix (powers of 1024),\n"
		"counted in whole pages; 0 or none removes the limit.\n"
		"--json prints one JSON value; its memory_limit 0 means none.\n"
		"Exit status: 0 success, 1 pagerd error, 2 bad usage.\n"
		"\n"
		"The socket is --socket, else $PAGER_SOCKET, else %s.\n",
		PAGER_SYSTEM_SOCKET);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct ctl c = { .sock = -1 };
	struct cmd_args args = { 0 };
	const struct command *cmd = NULL;
	const char *path = getenv("PAGER_SOCKET");
	int o, e, rc, nargs;

	if (!path || !*path)
		path = PAGER_SYSTEM_SOCKET;
	while ((o = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
		switch (o) {
		case 's': path = optarg; break;
		case 'j': c.json = true; break;
		case 'h': usage(stdout); return EXIT_OK;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[optind], commands[i].name) == 0)
			cmd = &commands[i];
	if (!cmd) {
		fprintf(stderr, "pagerctl: unknown command '%s'\n", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	nargs = argc - optind - 1;
	if (!cmd->parse && nargs > 0) {
		fprintf(stderr, "pagerctl: %s takes no arguments\n", cmd->name);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (cmd->parse && cmd->parse(argv + optind + 1, nargs, &args) < 0) {
		usage(stderr);
		return EXIT_USAGE;
	}
	c.cmd = cmd->name;
	c.page_size = (uint64_t)sysconf(_SC_PAGESIZE);
	e = ctl_connect(&c, path);
	if (e < 0) {
		fprintf(stderr, "pagerctl: cannot talk to pagerd at %s: %s\n", path,
			strerror(-e));
		if (c.sock >= 0)
			close(c.sock);
		return EXIT_DAEMON;
	}
	rc = cmd->run(&c, &args);
	close(c.sock);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "pagerctl: writing output: %s\n", strerror(errno));
		return EXIT_DAEMON;
	}
	return rc;
}
