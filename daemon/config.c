/* SPDX-License-Identifier: MIT */
/*
 * pagerd's settings, from one table: defaults, then pagerd.conf (parsed
 * with inih), then the command line.  See config.h for the contract and
 * man/pagerd.conf.5 for the settings.
 *
 * Why one table: the file key, the option, the type and range, the help
 * line and the reload rule of a setting are written once, so --help,
 * --check-config, the reload and the parser cannot disagree.  Adding a
 * setting is a field in struct config and a line in `settings` below.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <ini.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"
#include "pager.h"
#include "size.h"

#ifndef PAGERD_VERSION
#define PAGERD_VERSION "unknown"
#endif

enum setting_type {
	T_SIZE,    /* uint64_t: a number with an optional K/M/G/T suffix */
	T_UINT,    /* unsigned, from min to max */
	T_MODE,    /* unsigned, octal permissions */
	T_LEVEL,   /* int, a syslog priority from LOG_ERR to LOG_DEBUG */
	T_CHOICE,  /* int, an index into choices */
	T_STRING,  /* char *, owned; "" means unset */
	T_FD,      /* int, a file descriptor (command line only) */
	T_CONFIG,  /* char *, the file to read (command line only) */
	T_FLAG,    /* bool, no value (command line only) */
	T_HELP,    /* actions: print and exit */
	T_VERSION,
	T_IGNORED, /* accepted and ignored */
};

#define RELOAD   (1u << 0) /* SIGHUP may change it while pagerd runs */
#define CLI_ONLY (1u << 1) /* an option without a key in the file */

struct setting {
	const char *name;     /* key in pagerd.conf */
	const char *option;   /* long option */
	char short_opt;
	enum setting_type type;
	size_t offset;        /* into struct config */
	unsigned flags;
	uint64_t min, max;    /* T_SIZE, T_UINT, T_FD */
	const char *def;      /* default, parsed like a value; NULL: zero */
	const char *const *choices;
	const char *arg;      /* in --help */
	const char *help;
	/* Extra checks of a T_STRING value; returns NULL or what is wrong. */
	const char *(*check)(const char *value);
};

static const char *const policies[] = { "clock", "fifo", NULL };
static const char *const yes_no[] = { "yes", "no", NULL };
static const char *const compressors[] = { "lz4", "zstd", NULL };
/* A T_UINT with choices takes its one word for FAULT_THREADS_CPUS. */
static const char *const cpus_word[] = { "cpus", NULL };

static const char *check_socket_path(const char *v);
static const char *check_address(const char *v);
static const char *check_list(const char *v);
static const char *check_rbd_allow(const char *v);
static const char *check_rbd_pool(const char *v);

#define OFF(field) offsetof(struct config, field)
#define NOLIMIT UINT64_MAX

static const struct setting settings[] = {
	{ "config", "config", 'c', T_CONFIG, OFF(config_path), CLI_ONLY, 0, 0,
	  PAGERD_CONFIG_FILE, NULL, "PATH",
	  "read settings from this file; without --config a missing default file is fine" },
	{ "check_config", "check-config", 0, T_FLAG, OFF(check_only), CLI_ONLY, 0, 0,
	  NULL, NULL, NULL,
	  "check the file and options, print the configuration in effect, exit 0 or 1" },
	{ "socket_path", "socket", 's', T_STRING, OFF(socket_path), 0, 0, 0,
	  PAGER_SYSTEM_SOCKET, NULL, "PATH",
	  "listen on this Unix socket, unless systemd passes one", check_socket_path },
	{ "socket_mode", "socket-mode", 0, T_MODE, OFF(socket_mode), 0, 0, 0777,
	  "0666", NULL, "MODE", "permissions of a socket pagerd binds itself" },
	{ "socket_group", "socket-group", 0, T_STRING, OFF(socket_group), 0, 0, 0,
	  "", NULL, "GROUP", "group of a socket pagerd binds itself" },
	{ "private_fd", "private-fd", 0, T_FD, OFF(private_fd), CLI_ONLY, 0, 1 << 20,
	  NULL, NULL, "N", "serve the one client connected on fd N, then exit (libpager uses this)" },
	{ "memory_limit", "memory-limit", 'm', T_SIZE, OFF(memory_limit), RELOAD, 0, NOLIMIT,
	  "0", NULL, "SIZE", "resident memory of all clients together, 0 = none" },
	{ "client_memory_limit", "client-limit", 0, T_SIZE, OFF(client_memory_limit), RELOAD, 0, NOLIMIT,
	  "0", NULL, "SIZE", "resident memory of one client, 0 = none" },
	{ "high_watermark", "high-watermark", 0, T_UINT, OFF(high_watermark), RELOAD, 1, 100,
	  "95", NULL, "PERCENT", "of a limit: background eviction starts above it" },
	{ "low_watermark", "low-watermark", 0, T_UINT, OFF(low_watermark), RELOAD, 1, 100,
	  "90", NULL, "PERCENT", "of a limit: background eviction stops below it" },
	{ "policy", "policy", 0, T_CHOICE, OFF(policy), 0, 0, 0,
	  "clock", policies, "clock|fifo", "which resident page to evict" },
	{ "swap_path", "swap", 0, T_STRING, OFF(swap_path), 0, 0, 0,
	  "", NULL, "PATH", "swap file or block device, empty = none" },
	{ "swap_size", "swap-size", 0, T_SIZE, OFF(swap_size), 0, 0, NOLIMIT,
	  "0", NULL, "SIZE", "bytes of swap to use, 0 = the existing file's or device's size (a new file: the RAM, at most half the free space and 4G)" },
	{ "ceph_conf", "ceph-conf", 0, T_STRING, OFF(ceph_conf), 0, 0, 0,
	  "/etc/ceph/ceph.conf", NULL, "PATH", "the Ceph cluster's configuration (for rbd: images)" },
	{ "ceph_id", "ceph-id", 0, T_STRING, OFF(ceph_id), 0, 0, 0,
	  "client.admin", NULL, "NAME", "pagerd's Ceph user" },
	{ "ceph_keyring", "ceph-keyring", 0, T_STRING, OFF(ceph_keyring), 0, 0, 0,
	  "", NULL, "PATH", "that user's keyring, empty = what ceph_conf says" },
	{ "ceph_timeout", "ceph-timeout", 0, T_UINT, OFF(ceph_timeout_ms), 0, 100, 3600000,
	  "30000", NULL, "MSEC", "a request to the cluster that takes longer fails (its page is lost, never wrong)" },
	{ "rbd_allow", "rbd-allow", 0, T_STRING, OFF(rbd_allow), RELOAD, 0, 0,
	  "", NULL, "GRANTS", "who may name which RBD pool/namespace: 'user:U POOL[/NS|/*], group:G POOL/NS, ...'",
	  check_rbd_allow },
	{ "rbd_user_namespace", "rbd-user-namespace", 0, T_STRING, OFF(rbd_user_namespace), RELOAD, 0, 0,
	  "", NULL, "POOL", "uid N may name the RBD images of POOL/uN (besides rbd_allow)",
	  check_rbd_pool },
	{ "pool_percent", "pool-percent", 0, T_UINT, OFF(pool_percent), RELOAD, 0, 90,
	  "0", NULL, "PERCENT", "compressed pool: evicted pages are kept compressed in memory, taking up to this share of each memory limit before spilling to swap (0 = off)" },
	{ "pool_compressor", "pool-compressor", 0, T_CHOICE, OFF(pool_compressor), RELOAD, 0, 0,
	  "lz4", compressors, "lz4|zstd", "how the compressed pool compresses" },
	{ "max_region", "max-region", 0, T_SIZE, OFF(max_region_bytes), RELOAD, 1, NOLIMIT,
	  "1T", NULL, "SIZE", "largest region a client may create" },
	{ "max_regions", "max-regions", 0, T_UINT, OFF(max_regions), RELOAD, 1, 1 << 20,
	  "4096", NULL, "N", "regions one client may have" },
	{ "max_clients", "max-clients", 0, T_UINT, OFF(max_clients), RELOAD, 1, 1 << 20,
	  "1024", NULL, "N", "clients connected at once" },
	{ "max_user_clients", "max-user-clients", 0, T_UINT, OFF(max_user_clients), RELOAD, 0, 1 << 20,
	  "256", NULL, "N", "connections of one user at once, 0 = max_clients (root, pagerd's user and admin_group: no limit)" },
	{ "fault_around", "fault-around", 0, T_UINT, OFF(fault_around_max), RELOAD, 1, 1 << 16,
	  "512", NULL, "N", "most pages filled for one sequential fault" },
	{ "fault_spin", "fault-spin", 0, T_UINT, OFF(fault_spin_us), RELOAD, 0, 10000,
	  "0", NULL, "USEC", "after a fault, poll for the next this long (0 = off)" },
	{ "fault_threads", "fault-threads", 0, T_UINT, OFF(fault_threads), 0, 0, 256,
	  "cpus", cpus_word, "N|cpus", "threads serving faults, each on a CPU of its own; 0 = the event loop serves every fault" },
	{ "image_timeout", "image-timeout", 0, T_UINT, OFF(image_timeout_ms), RELOAD, 1, 3600000,
	  "30000", NULL, "MSEC", "a read or write of a snapshot image that takes longer fails that snapshot or restore" },
	{ "allowed_users", "allowed-users", 0, T_STRING, OFF(allowed_users), RELOAD, 0, 0,
	  "", NULL, "LIST", "users (names or uids) who may connect; empty with allowed_groups = everyone",
	  check_list },
	{ "allowed_groups", "allowed-groups", 0, T_STRING, OFF(allowed_groups), RELOAD, 0, 0,
	  "", NULL, "LIST", "members of these groups may connect", check_list },
	{ "admin_group", "admin-group", 0, T_STRING, OFF(admin_group), RELOAD, 0, 0,
	  "", NULL, "GROUP", "members may use the control channel (pagerctl) besides root" },
	{ "fd_store", "fd-store", 0, T_CHOICE, OFF(fd_store), 0, 0, 0,
	  "yes", yes_no, "yes|no",
	  "under systemd (NOTIFY_SOCKET), keep clients' descriptors in its fd store so a restarted pagerd keeps serving them" },
	{ "log_level", "log-level", 'l', T_LEVEL, OFF(log_level), RELOAD, 0, 0,
	  "info", NULL, "LEVEL", "error, warning, notice, info or debug (a private daemon: warning)" },
	{ "metrics_address", "metrics-address", 0, T_STRING, OFF(metrics_address), 0, 0, 0,
	  "", NULL, "[HOST:]PORT", "serve Prometheus metrics here (HOST defaults to 127.0.0.1), empty = off",
	  check_address },
	{ "test_hooks", "test-hooks", 0, T_FLAG, OFF(test_hooks), CLI_ONLY, 0, 0,
	  NULL, NULL, NULL, "accept fault-injection requests on the control channel (tests only)" },
	{ "foreground", "foreground", 'f', T_IGNORED, 0, CLI_ONLY, 0, 0,
	  NULL, NULL, NULL, "accepted for compatibility: pagerd never forks" },
	{ "version", "version", 'V', T_VERSION, 0, CLI_ONLY, 0, 0, NULL, NULL, NULL, "print the version" },
	{ "help", "help", 'h', T_HELP, 0, CLI_ONLY, 0, 0, NULL, NULL, NULL, "print this help" },
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))
_Static_assert(NSETTINGS <= CONFIG_MAX_SETTINGS, "raise CONFIG_MAX_SETTINGS");

/* One grant of rbd_allow: a user or group may name pool/ns. */
#define RBD_NAME_MAX 96 /* store.h's STORE_RBD_NAME_MAX */

struct rbd_grant {
	bool group;
	unsigned id;              /* uid or gid */
	char pool[RBD_NAME_MAX + 1];
	char ns[RBD_NAME_MAX + 1];
	bool any_ns;              /* namespace "*": every one, the default too */
};

/* What allowed_users, allowed_groups, admin_group and rbd_allow resolve
 * to. */
struct config_access {
	struct rbd_grant *grants;
	size_t ngrants;
	uid_t *uids;
	size_t nuids;
	gid_t *gids;
	size_t ngids;
	bool has_admin;
	gid_t admin_gid;
};

/* Command-line settings, applied over the file at start and every reload. */
struct config_cli {
	size_t n;
	struct {
		unsigned idx;
		char *value;
	} v[];
};

/* One parse: of the command line, a file, or both. */
struct parse {
	struct config *cfg;
	const struct config_log *log;
	int line;           /* of the file, while reading it */
	int errors;
	FILE *f;
	char *buf;
	size_t cap;
};

/* ---- messages ------------------------------------------------------ */

static void say(const struct config_log *log, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say(const struct config_log *log, int level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log && log->fn)
		log->fn(log->ctx, level, msg);
	else
		fprintf(stderr, "pagerd: %s\n", msg);
}

/* Where setting s got its value: "FILE:LINE: name", "--option" or
 * "name (default)". */
static const char *origin(const struct config *cfg, const struct setting *s,
			  char *buf, size_t n)
{
	int at = cfg->set_at[s - settings];

	if (at > 0)
		snprintf(buf, n, "%s:%d: %s", cfg->config_path, at, s->name);
	else if (at < 0)
		snprintf(buf, n, "--%s", s->option);
	else
		snprintf(buf, n, "%s (default)", s->name);
	return buf;
}

static void bad(struct parse *p, const struct setting *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void bad(struct parse *p, const struct setting *s, const char *fmt, ...)
{
	char where[512], what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	say(p->log, LOG_ERR, "%s: %s", origin(p->cfg, s, where, sizeof(where)), what);
	p->errors++;
}

/* ---- values -------------------------------------------------------- */

static void *field(const struct config *cfg, const struct setting *s)
{
	return (char *)cfg + s->offset;
}

static void format_size(uint64_t v, char *buf, size_t n)
{
	static const char units[] = "KMGT";
	int u = -1;

	while (v && u < 3 && (v & 1023) == 0)
		v >>= 10, u++;
	if (u < 0)
		snprintf(buf, n, "%" PRIu64, v);
	else
		snprintf(buf, n, "%" PRIu64 "%c", v, units[u]);
}

/* The value as the file would spell it. */
static const char *format_value(const struct config *cfg, const struct setting *s,
				char *buf, size_t n)
{
	const void *f = field(cfg, s);

	switch (s->type) {
	case T_SIZE:
		format_size(*(const uint64_t *)f, buf, n);
		break;
	case T_UINT:
		if (s->choices && *(const unsigned *)f == FAULT_THREADS_CPUS)
			snprintf(buf, n, "%s", s->choices[0]);
		else
			snprintf(buf, n, "%u", *(const unsigned *)f);
		break;
	case T_MODE:
		snprintf(buf, n, "%04o", *(const unsigned *)f);
		break;
	case T_LEVEL:
		snprintf(buf, n, "%s", log_level_name(*(const int *)f));
		break;
	case T_CHOICE:
		snprintf(buf, n, "%s", s->choices[*(const int *)f]);
		break;
	case T_FD:
		snprintf(buf, n, "%d", *(const int *)f);
		break;
	case T_STRING:
	case T_CONFIG:
		snprintf(buf, n, "%s", *(char *const *)f ? *(char *const *)f : "");
		break;
	case T_FLAG:
		snprintf(buf, n, "%s", *(const bool *)f ? "yes" : "no");
		break;
	default:
		snprintf(buf, n, "-");
		break;
	}
	return buf;
}

static const char *check_socket_path(const char *v)
{
	if (!*v)
		return "must not be empty";
	if (strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return "is longer than a Unix socket path may be (107 bytes)";
	return NULL;
}

static const char *check_address(const char *v)
{
	char host[256];
	unsigned port;

	if (*v && config_parse_address(v, host, sizeof(host), &port) < 0)
		return "is not [HOST:]PORT (HOST a name, an IPv4 address or [an IPv6 one], PORT 0-65535, 0 = any free one)";
	return NULL;
}

static const char *check_list(const char *v)
{
	for (const char *c = v; *c; c++)
		if (*c == ' ' || *c == '\t')
			return "must be a comma-separated list without spaces";
	return NULL;
}

/* An RBD pool or namespace name, as store_rbd_parse() takes them. */
static bool rbd_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > RBD_NAME_MAX || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr(".-_", s[i]))
			return false;
	return true;
}

static const char *check_rbd_pool(const char *v)
{
	if (*v && !rbd_name_ok(v, strlen(v)))
		return "is not a pool name (letters, digits, '.', '-', '_', not starting with '.')";
	return NULL;
}

/*
 * One grant, "user:NAME POOL[/NS]" (uid:, group:, gid: too; NS "*" = every
 * namespace; no NS = the pool's default one), into *g with who's name
 * (not resolved yet: names are looked up at each load) in who[].  Returns
 * NULL or what is wrong.
 */
static const char *parse_grant(const char *tok, struct rbd_grant *g, char *who, size_t wholen)
{
	const char *p = tok, *colon, *sp, *slash, *end;
	size_t n;

	memset(g, 0, sizeof(*g));
	while (*p == ' ' || *p == '\t')
		p++;
	end = p + strlen(p);
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	colon = memchr(p, ':', (size_t)(end - p));
	sp = colon ? colon + strcspn(colon, " \t") : NULL;
	if (!colon || !sp || sp >= end)
		return "a grant is 'user:NAME POOL[/NAMESPACE]' or 'group:NAME POOL[/NAMESPACE]'";
	n = (size_t)(colon - p);
	if ((n == 4 && !strncmp(p, "user", 4)) || (n == 3 && !strncmp(p, "uid", 3)))
		g->group = false;
	else if ((n == 5 && !strncmp(p, "group", 5)) || (n == 3 && !strncmp(p, "gid", 3)))
		g->group = true;
	else
		return "a grant starts with user: or group:";
	n = (size_t)(sp - colon - 1);
	if (n == 0 || n >= wholen)
		return "a grant names no user or group, or too long a one";
	memcpy(who, colon + 1, n);
	who[n] = '\0';
	while (*sp == ' ' || *sp == '\t')
		sp++;
	slash = memchr(sp, '/', (size_t)(end - sp));
	n = (size_t)((slash ? slash : end) - sp);
	if (!rbd_name_ok(sp, n))
		return "a grant's pool is not a pool name (letters, digits, '.', '-', '_')";
	memcpy(g->pool, sp, n);
	if (slash) {
		n = (size_t)(end - slash - 1);
		if (n == 1 && slash[1] == '*')
			g->any_ns = true;
		else if (rbd_name_ok(slash + 1, n))
			memcpy(g->ns, slash + 1, n);
		else
			return "a grant's namespace is not a name or '*'";
	}
	return NULL;
}

static const char *check_rbd_allow(const char *v)
{
	char *list = strdup(v), *save = NULL;
	const char *why = NULL;
	struct rbd_grant g;
	char who[64];

	if (!list)
		return "out of memory";
	for (char *tok = strtok_r(list, ",", &save); tok && !why;
	     tok = strtok_r(NULL, ",", &save))
		why = parse_grant(tok, &g, who, sizeof(who));
	free(list);
	return why;
}

int config_parse_address(const char *s, char *ret_host, size_t hostlen,
			 unsigned *ret_port)
{
	const char *host = "127.0.0.1", *port = s, *colon = strrchr(s, ':');
	size_t hlen = strlen(host);
	uint64_t v;

	if (colon) {
		port = colon + 1;
		if (colon > s) {
			host = s;
			hlen = (size_t)(colon - s);
			if (*host == '[') {
				if (hlen < 3 || host[hlen - 1] != ']')
					return -EINVAL;
				host++;
				hlen -= 2;
			} else if (memchr(host, ':', hlen)) {
				return -EINVAL; /* IPv6 needs brackets */
			}
		}
	}
	if (parse_u64(port, &v) < 0 || v > 65535 || hlen == 0 ||
	    hlen >= hostlen)
		return -EINVAL;
	memcpy(ret_host, host, hlen);
	ret_host[hlen] = '\0';
	*ret_port = (unsigned)v;
	return 0;
}

/* Parses `value` for setting s and stores it; reports what is wrong. */
static void set_value(struct parse *p, const struct setting *s, const char *value,
		      int at)
{
	void *f = field(p->cfg, s);
	const char *why;
	uint64_t v;
	char *end;
	int r;

	p->cfg->set_at[s - settings] = at;
	switch (s->type) {
	case T_SIZE:
		r = parse_size(value, &v);
		if (r < 0) {
			bad(p, s, "'%s' is not a size (a number with an optional K, M, G or T suffix)", value);
		} else if (v < s->min || v > s->max) {
			bad(p, s, "'%s' must be at least %" PRIu64, value, s->min);
		} else {
			*(uint64_t *)f = v;
		}
		break;
	case T_UINT:
	case T_FD:
		if (s->type == T_UINT && s->choices && strcmp(value, s->choices[0]) == 0) {
			*(unsigned *)f = FAULT_THREADS_CPUS;
		} else if (parse_u64(value, &v) < 0 || v < s->min || v > s->max) {
			bad(p, s, "'%s' is not a whole number from %" PRIu64 " to %" PRIu64,
			    value, s->min, s->max);
		} else if (s->type == T_FD) {
			*(int *)f = (int)v;
		} else {
			*(unsigned *)f = (unsigned)v;
		}
		break;
	case T_MODE:
		errno = 0;
		v = strtoull(value, &end, 8);
		if (!*value || *end || errno || v > s->max || *value == '-')
			bad(p, s, "'%s' is not an octal mode like 0660", value);
		else
			*(unsigned *)f = (unsigned)v;
		break;
	case T_LEVEL:
		r = log_parse_level(value);
		if (r < LOG_ERR)
			bad(p, s, "'%s' is not a log level (error, warning, notice, info, debug)", value);
		else
			*(int *)f = r;
		break;
	case T_CHOICE:
		for (r = 0; s->choices[r]; r++)
			if (strcmp(value, s->choices[r]) == 0)
				break;
		if (!s->choices[r]) {
			char list[128] = "";

			for (int i = 0; s->choices[i]; i++)
				snprintf(list + strlen(list), sizeof(list) - strlen(list),
					 "%s%s", i ? ", " : "", s->choices[i]);
			bad(p, s, "'%s' is not one of: %s", value, list);
		} else {
			*(int *)f = r;
		}
		break;
	case T_STRING:
	case T_CONFIG:
		if (s->check && (why = s->check(value))) {
			bad(p, s, "'%s' %s", value, why);
			break;
		}
		if (!(end = strdup(value))) {
			bad(p, s, "out of memory");
			break;
		}
		free(*(char **)f);
		*(char **)f = end;
		if (s->type == T_CONFIG)
			p->cfg->config_explicit = at != 0;
		break;
	case T_FLAG:
		*(bool *)f = true;
		break;
	default:
		break;
	}
}

/* ---- the file ------------------------------------------------------ */

/*
 * inih's line reader, ours so that we know the line number of every key
 * (the library only reports the first error's) and so that lines inih
 * would misread are reported instead: an indented line would continue the
 * previous value (leading blanks are dropped here), an over-long one would
 * be split in two, a line without '=' is only counted.
 */
static char *read_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	ssize_t n = getline(&p->buf, &p->cap, p->f);
	char *l;

	if (n < 0)
		return NULL;
	p->line++;
	l = p->buf + strspn(p->buf, " \t");
	n = (ssize_t)strcspn(l, "\r\n");
	l[n] = '\0';
	if (*l && *l != ';' && *l != '#') {
		if (*l == '[' ? !strchr(l, ']') : !strpbrk(l, "=:")) {
			say(p->log, LOG_ERR, "%s:%d: '%s' is not a setting (NAME = VALUE) or a [section]",
			    p->cfg->config_path, p->line, l);
			p->errors++;
			l = (char *)"";
		} else if (n + 2 > num) {
			say(p->log, LOG_ERR, "%s:%d: line longer than %d characters",
			    p->cfg->config_path, p->line, num - 2);
			p->errors++;
			l = (char *)"";
		}
	}
	snprintf(str, (size_t)num, "%s\n", l);
	return str;
}

static const struct setting *find_key(const char *name)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (!(settings[i].flags & CLI_ONLY) && strcmp(settings[i].name, name) == 0)
			return &settings[i];
	return NULL;
}

/* For an unknown key: the setting whose option it spells, if any. */
static const struct setting *find_option(const char *name)
{
	for (size_t i = 0; i < NSETTINGS; i++) {
		const char *a = settings[i].option, *b = name;

		if (settings[i].flags & CLI_ONLY)
			continue;
		while (*a && (*a == *b || (*a == '-' && *b == '_')))
			a++, b++;
		if (!*a && !*b)
			return &settings[i];
	}
	return NULL;
}

static int on_key(void *user, const char *section, const char *name,
		  const char *value)
{
	struct parse *p = user;
	const char *path = p->cfg->config_path;
	const struct setting *s;
	char alt[64];
	int prev;

	if (*section && strcmp(section, "pagerd") != 0) {
		say(p->log, LOG_ERR, "%s:%d: %s: in section [%s]; pagerd reads [pagerd] only",
		    path, p->line, name, section);
		p->errors++;
		return 1;
	}
	s = find_key(name);
	if (!s) {
		/* A common slip: the option's spelling in the file. */
		snprintf(alt, sizeof(alt), "%s", name);
		for (char *c = alt; *c; c++)
			if (*c == '-')
				*c = '_';
		s = find_key(alt);
		if (!s)
			s = find_option(name);
		say(p->log, LOG_ERR, "%s:%d: unknown setting '%s'%s%s%s", path, p->line, name,
		    s ? " (did you mean " : "", s ? s->name : "", s ? "?)" : "");
		p->errors++;
		return 1;
	}
	prev = p->cfg->set_at[s - settings];
	if (prev > 0) {
		say(p->log, LOG_ERR, "%s:%d: %s: set again (first on line %d)", path,
		    p->line, name, prev);
		p->errors++;
		return 1;
	}
	set_value(p, s, value, p->line);
	return 1; /* errors are counted by us, with their lines */
}

static void parse_file(struct parse *p)
{
	struct config *cfg = p->cfg;
	int r;

	p->f = fopen(cfg->config_path, "re");
	if (!p->f) {
		if (errno == ENOENT && !cfg->config_explicit)
			return; /* no file: defaults and options */
		say(p->log, LOG_ERR, "%s: cannot read: %s", cfg->config_path, strerror(errno));
		p->errors++;
		return;
	}
	p->line = 0;
	r = ini_parse_stream(read_line, p, on_key, p);
	if (r != 0 && p->errors == 0) {
		say(p->log, LOG_ERR, "%s:%d: cannot parse this line", cfg->config_path, r);
		p->errors++;
	}
	fclose(p->f);
	p->f = NULL;
	free(p->buf);
	p->buf = NULL;
	p->cap = 0;
}

/* ---- access lists -------------------------------------------------- */

static void access_free(struct config_access *a)
{
	if (!a)
		return;
	free(a->uids);
	free(a->gids);
	free(a->grants);
	free(a);
}

static int user_id(const char *name, uid_t *ret)
{
	struct passwd *pw;
	uint64_t v;

	if (parse_u64(name, &v) == 0 && v < (uid_t)-1) {
		*ret = (uid_t)v;
		return 0;
	}
	pw = getpwnam(name);
	if (!pw)
		return -ENOENT;
	*ret = pw->pw_uid;
	return 0;
}

int config_group_id(const char *name, gid_t *ret)
{
	struct group *gr;
	uint64_t v;

	if (parse_u64(name, &v) == 0 && v < (gid_t)-1) {
		*ret = (gid_t)v;
		return 0;
	}
	gr = getgrnam(name);
	if (!gr)
		return -ENOENT;
	*ret = gr->gr_gid;
	return 0;
}

/* Resolves a comma list of users (groups when `groups`) into *ids. */
static void resolve_list(struct parse *p, const struct setting *s, bool groups,
			 unsigned **ids, size_t *n)
{
	char *list = strdup(*(char **)field(p->cfg, s)), *save = NULL;

	*ids = NULL;
	*n = 0;
	if (!list) {
		bad(p, s, "out of memory");
		return;
	}
	for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned id, *grown;
		int r;

		if (groups) {
			gid_t g;

			r = config_group_id(tok, &g);
			id = g;
		} else {
			uid_t u;

			r = user_id(tok, &u);
			id = u;
		}
		if (r < 0) {
			bad(p, s, "no such %s '%s'", groups ? "group" : "user", tok);
			continue;
		}
		grown = realloc(*ids, (*n + 1) * sizeof(**ids));
		if (!grown) {
			bad(p, s, "out of memory");
			break;
		}
		*ids = grown;
		(*ids)[(*n)++] = id;
	}
	free(list);
}

static const struct setting *setting_at(size_t offset)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (settings[i].offset == offset && !(settings[i].flags & CLI_ONLY))
			return &settings[i];
	return NULL;
}

_Static_assert(sizeof(uid_t) == sizeof(unsigned) && sizeof(gid_t) == sizeof(unsigned),
	       "uid_t and gid_t are stored as unsigned");

/* rbd_allow's grants, their users and groups looked up. */
static void resolve_grants(struct parse *p, struct config_access *a)
{
	const struct setting *s = setting_at(OFF(rbd_allow));
	char *list = strdup(p->cfg->rbd_allow), *save = NULL;

	if (!list) {
		bad(p, s, "out of memory");
		return;
	}
	for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct rbd_grant g, *grown;
		char who[64];
		const char *why = parse_grant(tok, &g, who, sizeof(who));
		int r;

		if (why) { /* check_rbd_allow() said it already */
			bad(p, s, "%s", why);
			continue;
		}
		if (g.group) {
			gid_t gid;

			r = config_group_id(who, &gid);
			g.id = gid;
		} else {
			uid_t uid;

			r = user_id(who, &uid);
			g.id = uid;
		}
		if (r < 0) {
			bad(p, s, "no such %s '%s'", g.group ? "group" : "user", who);
			continue;
		}
		grown = realloc(a->grants, (a->ngrants + 1) * sizeof(*grown));
		if (!grown) {
			bad(p, s, "out of memory");
			break;
		}
		a->grants = grown;
		a->grants[a->ngrants++] = g;
	}
	free(list);
}

static void resolve_access(struct parse *p)
{
	struct config *cfg = p->cfg;
	struct config_access *a = calloc(1, sizeof(*a));
	const struct setting *admin = setting_at(OFF(admin_group));

	if (!a) {
		say(p->log, LOG_ERR, "out of memory");
		p->errors++;
		return;
	}
	resolve_list(p, setting_at(OFF(allowed_users)), false, (unsigned **)&a->uids, &a->nuids);
	resolve_list(p, setting_at(OFF(allowed_groups)), true, (unsigned **)&a->gids, &a->ngids);
	if (*cfg->admin_group) {
		if (config_group_id(cfg->admin_group, &a->admin_gid) < 0)
			bad(p, admin, "no such group '%s'", cfg->admin_group);
		else
			a->has_admin = true;
	}
	resolve_grants(p, a);
	access_free(cfg->access);
	cfg->access = a;
}

/* ---- checks across settings ---------------------------------------- */

static void finish(struct parse *p)
{
	struct config *cfg = p->cfg;
	long page = sysconf(_SC_PAGESIZE);
	gid_t g;

	if (cfg->low_watermark >= cfg->high_watermark)
		bad(p, setting_at(OFF(low_watermark)), "%u%% must be below high_watermark (%u%%)",
		    cfg->low_watermark, cfg->high_watermark);
	if (page > 0 && cfg->swap_size % (uint64_t)page)
		bad(p, setting_at(OFF(swap_size)), "must be a multiple of the page size (%ld)", page);
	if (*cfg->socket_group && config_group_id(cfg->socket_group, &g) < 0)
		bad(p, setting_at(OFF(socket_group)), "no such group '%s'", cfg->socket_group);
	resolve_access(p);
	/* A private daemon shares its application's terminal: say less. */
	if (cfg->private_fd >= 0 && cfg->set_at[setting_at(OFF(log_level)) - settings] == 0)
		cfg->log_level = LOG_WARNING;
}

/* ---- loading ------------------------------------------------------- */

static void config_init(struct parse *p)
{
	struct config *cfg = p->cfg;

	memset(cfg, 0, sizeof(*cfg));
	cfg->private_fd = -1;
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *s = &settings[i];

		if (s->type == T_STRING)
			set_value(p, s, s->def ? s->def : "", 0);
		else if (s->def)
			set_value(p, s, s->def, 0);
	}
}

static void cli_free(struct config_cli *cli)
{
	if (!cli)
		return;
	for (size_t i = 0; i < cli->n; i++)
		free(cli->v[i].value);
	free(cli);
}

void config_free(struct config *cfg)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (settings[i].type == T_STRING || settings[i].type == T_CONFIG) {
			free(*(char **)field(cfg, &settings[i]));
			*(char **)field(cfg, &settings[i]) = NULL;
		}
	access_free(cfg->access);
	cfg->access = NULL;
	cli_free(cfg->cli);
	cfg->cli = NULL;
}

uint64_t config_default_swap_size(uint64_t ram, uint64_t fs_free, size_t page_size)
{
	uint64_t size = ram;

	if (fs_free / 2 < size)
		size = fs_free / 2;
	if (CONFIG_SWAP_DEFAULT_MAX < size)
		size = CONFIG_SWAP_DEFAULT_MAX;
	return page_size ? size - size % page_size : size;
}

void config_usage(FILE *f)
{
	fprintf(f,
		"Usage: pagerd [OPTIONS]\n"
		"\n"
		"The user-space pager daemon: serves page faults on libpager regions.\n"
		"Every setting of %s is also an option (its key in\n"
		"brackets); options override the file.  SIGHUP reloads the file.\n"
		"\n",
		PAGERD_CONFIG_FILE);
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *s = &settings[i];
		char left[64];

		snprintf(left, sizeof(left), "%c%c%c --%s%s%s", s->short_opt ? '-' : ' ',
			 s->short_opt ? s->short_opt : ' ', s->short_opt ? ',' : ' ',
			 s->option, s->arg ? " " : "", s->arg ? s->arg : "");
		if (strlen(left) > 30)
			fprintf(f, "  %s\n  %-30s %s", left, "", s->help);
		else
			fprintf(f, "  %-30s %s", left, s->help);
		if (!(s->flags & CLI_ONLY))
			fprintf(f, "\n  %-30s [%s%s%s%s]", "", s->name,
				s->def && *s->def ? ", default " : "", s->def ? s->def : "",
				s->flags & RELOAD ? ", reloadable" : "");
		fputc('\n', f);
	}
}

/* Reads the command line: actions at once, settings into cfg->cli. */
static int parse_args(struct parse *p, int argc, char **argv)
{
	struct option opts[NSETTINGS + 1];
	char shorts[2 * NSETTINGS + 2], *sp = shorts;
	struct config *cfg = p->cfg;
	struct config_cli *cli;
	int o;

	cli = calloc(1, sizeof(*cli) + (size_t)argc * sizeof(cli->v[0]));
	if (!cli)
		return -ENOMEM;
	cfg->cli = cli;
	*sp++ = ':'; /* a missing value returns ':' */
	memset(opts, 0, sizeof(opts));
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *s = &settings[i];
		bool arg = s->type < T_FLAG;

		opts[i] = (struct option){ s->option, arg ? required_argument : no_argument,
					   NULL, s->short_opt ? s->short_opt : 256 + (int)i };
		if (s->short_opt) {
			*sp++ = s->short_opt;
			if (arg)
				*sp++ = ':';
		}
	}
	*sp = '\0';
	optind = 0; /* GNU: start afresh (the unit tests parse many times) */
	opterr = 0;
	while ((o = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
		const struct setting *s = NULL;

		if (o == '?' || o == ':') {
			const char *what = argv[optind - 1];
			char sh[3] = { '-', (char)optopt, 0 };

			if (optopt && strncmp(what, "--", 2) != 0)
				what = sh;
			say(p->log, LOG_ERR, o == ':' ? "option '%s' needs a value"
						      : "unknown option '%s' (see --help)", what);
			p->errors++;
			continue;
		}
		if (o >= 256)
			s = &settings[o - 256];
		for (size_t i = 0; !s && i < NSETTINGS; i++)
			if (settings[i].short_opt == o)
				s = &settings[i];
		if (!s)
			continue;
		switch (s->type) {
		case T_HELP:
			config_usage(stdout);
			return 1;
		case T_VERSION:
			printf("pagerd %s\n", PAGERD_VERSION);
			return 1;
		case T_IGNORED:
			break;
		case T_FLAG:
		case T_CONFIG:
		case T_FD:
			set_value(p, s, optarg ? optarg : "", -1);
			break;
		default:
			/* Kept: applied after the file, and again at reload. */
			cli->v[cli->n].idx = (unsigned)(s - settings);
			cli->v[cli->n].value = strdup(optarg);
			if (!cli->v[cli->n++].value)
				return -ENOMEM;
			break;
		}
	}
	for (; optind < argc; optind++) {
		say(p->log, LOG_ERR, "unexpected argument '%s'", argv[optind]);
		p->errors++;
	}
	return 0;
}

static void apply_cli(struct parse *p, const struct config_cli *cli)
{
	for (size_t i = 0; cli && i < cli->n; i++)
		set_value(p, &settings[cli->v[i].idx], cli->v[i].value, -1);
}

int config_load(struct config *cfg, int argc, char **argv,
		const struct config_log *log)
{
	struct parse p = { .cfg = cfg, .log = log };
	int r;

	config_init(&p);
	r = parse_args(&p, argc, argv);
	if (r < 0) {
		say(log, LOG_ERR, "%s", strerror(-r));
		return -EINVAL;
	}
	if (r > 0)
		return 1;
	if (p.errors)
		return -EINVAL;
	/* A private daemon is libpager's, configured by it: the system
	 * daemon's file is not for it (its swap, its socket group...). */
	if (cfg->private_fd < 0 || cfg->config_explicit)
		parse_file(&p);
	apply_cli(&p, cfg->cli);
	finish(&p); /* even after errors: report everything at once */
	cfg->file_errors = (unsigned)p.errors;
	return p.errors ? -EINVAL : 0;
}

int config_load_fallback(struct config *cfg, int argc, char **argv, const char *from,
			 const struct config_log *log)
{
	struct parse p = { .cfg = cfg, .log = log };
	char *real;
	int r;

	config_init(&p);
	r = parse_args(&p, argc, argv);
	if (r != 0 || p.errors)
		return -EINVAL;
	if (from) {
		/* Read as if it were the file; messages name it. */
		real = cfg->config_path;
		cfg->config_path = (char *)from;
		parse_file(&p);
		cfg->config_path = real;
	}
	apply_cli(&p, cfg->cli);
	finish(&p);
	return p.errors ? -EINVAL : 0;
}

static bool access_setting(const struct setting *s)
{
	return s->offset == OFF(allowed_users) || s->offset == OFF(allowed_groups) ||
	       s->offset == OFF(admin_group);
}

int config_reload(struct config *cfg, const struct config_log *log)
{
	struct config next;
	struct parse p = { .cfg = &next, .log = log };
	bool access_changed = false;
	int changed = 0;

	config_init(&p);
	free(next.config_path);
	next.config_path = strdup(cfg->config_path);
	next.config_explicit = cfg->config_explicit;
	next.private_fd = cfg->private_fd;
	if (!next.config_path) {
		say(log, LOG_ERR, "reload: out of memory");
		return -EINVAL;
	}
	if (cfg->private_fd < 0 || cfg->config_explicit)
		parse_file(&p);
	apply_cli(&p, cfg->cli);
	finish(&p);
	if (p.errors) {
		say(log, LOG_ERR, "%s: not reloaded: the running configuration stays",
		    cfg->config_path);
		config_free(&next);
		if (!cfg->file_errors)
			cfg->running_on = "the settings in effect before";
		cfg->file_errors = (unsigned)p.errors;
		return -EINVAL;
	}
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *s = &settings[i];
		char was[512], now[512], where[512];
		size_t size;
		char tmp[sizeof(uint64_t)];

		if (s->flags & CLI_ONLY)
			continue;
		format_value(cfg, s, was, sizeof(was));
		format_value(&next, s, now, sizeof(now));
		if (strcmp(was, now) == 0)
			continue;
		if (!(s->flags & RELOAD)) {
			say(log, LOG_WARNING,
			    "%s: changed to '%s', but cannot change while pagerd runs: still '%s' (restart pagerd to apply)",
			    origin(&next, s, where, sizeof(where)), now, was);
			continue;
		}
		/* Swap, so that freeing `next` frees the old value. */
		size = s->type == T_SIZE ? sizeof(uint64_t) :
		       s->type == T_STRING ? sizeof(char *) :
		       s->type == T_LEVEL || s->type == T_CHOICE ? sizeof(int) : sizeof(unsigned);
		memcpy(tmp, field(cfg, s), size);
		memcpy(field(cfg, s), field(&next, s), size);
		memcpy(field(&next, s), tmp, size);
		cfg->set_at[i] = next.set_at[i];
		access_changed |= access_setting(s);
		say(log, LOG_NOTICE, "%s: '%s' -> '%s'", s->name, was, now);
		changed++;
	}
	if (access_changed) {
		struct config_access *a = cfg->access;

		cfg->access = next.access;
		next.access = a;
	}
	config_free(&next);
	cfg->file_errors = 0;
	cfg->running_on = NULL;
	say(log, LOG_NOTICE, "reloaded %s: %d setting%s changed", cfg->config_path, changed,
	    changed == 1 ? "" : "s");
	return changed;
}

void config_print(const struct config *cfg, FILE *f)
{
	fprintf(f, "; pagerd configuration in effect: defaults, then %s%s, then options\n"
		   "[pagerd]\n",
		cfg->config_path,
		cfg->config_explicit || access(cfg->config_path, F_OK) == 0 ? "" : " (missing)");
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *s = &settings[i];
		char v[512], where[512];
		int at = cfg->set_at[i];

		if (s->flags & CLI_ONLY)
			continue;
		format_value(cfg, s, v, sizeof(v));
		if (at > 0)
			snprintf(where, sizeof(where), "%s:%d", cfg->config_path, at);
		else
			snprintf(where, sizeof(where), "%s", at < 0 ? "command line" : "default");
		fprintf(f, "%-20s = %-24s ; %s\n", s->name, v, where);
	}
}

/* ---- who may connect ----------------------------------------------- */

static bool gid_in(gid_t g, const gid_t *gids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (gids[i] == g)
			return true;
	return false;
}

/* Whether the groups of `uid` in the user database (getgrouplist: its
 * primary group and every group listing it) meet `gids`.  May block on
 * NSS; runs once a connection, never on the fault path. */
static bool user_in_groups(uid_t uid, const gid_t *gids, size_t n)
{
	struct passwd *pw = getpwuid(uid);
	gid_t stack[64], *groups = stack;
	int ngroups = 64;
	bool found = false;

	if (!pw || !n)
		return false;
	if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &ngroups) < 0) {
		groups = calloc((size_t)ngroups, sizeof(*groups));
		if (!groups || getgrouplist(pw->pw_name, pw->pw_gid, groups, &ngroups) < 0)
			ngroups = 0;
	}
	for (int i = 0; i < ngroups && !found; i++)
		found = gid_in(groups[i], gids, n);
	if (groups != stack)
		free(groups);
	return found;
}

bool config_cred_allowed(const struct config *cfg, const struct ucred *cred)
{
	const struct config_access *a = cfg->access;

	if (!a || (a->nuids == 0 && a->ngids == 0))
		return true;
	if (cred->uid == 0 || cred->uid == geteuid())
		return true;
	for (size_t i = 0; i < a->nuids; i++)
		if (a->uids[i] == cred->uid)
			return true;
	return gid_in(cred->gid, a->gids, a->ngids) ||
	       user_in_groups(cred->uid, a->gids, a->ngids);
}

bool config_cred_admin(const struct config *cfg, const struct ucred *cred)
{
	const struct config_access *a = cfg->access;

	if (cred->uid == 0 || cred->uid == geteuid())
		return true;
	return a && a->has_admin &&
	       (cred->gid == a->admin_gid || user_in_groups(cred->uid, &a->admin_gid, 1));
}

int config_rbd_allowed(const struct config *cfg, const struct ucred *cred,
		       const char *pool, const char *ns)
{
	const struct config_access *a = cfg->access;
	const char *upool = cfg->rbd_user_namespace;
	char own[16];

	if (!pool || !ns || !*pool)
		return -EINVAL;
	/* Root is the administrator; pagerd's own user (a private pagerd
	 * runs as its only client) reaches nothing it could not already. */
	if (cred->uid == 0 || cred->uid == geteuid())
		return 0;
	snprintf(own, sizeof(own), "u%u", (unsigned)cred->uid);
	if (upool && *upool && !strcmp(pool, upool) && !strcmp(ns, own))
		return 0;
	for (size_t i = 0; a && i < a->ngrants; i++) {
		const struct rbd_grant *g = &a->grants[i];

		if (strcmp(g->pool, pool) || (!g->any_ns && strcmp(g->ns, ns)))
			continue;
		if (!g->group && g->id == cred->uid)
			return 0;
		if (!g->group)
			continue;
		if (g->id == cred->gid)
			return 0;
		if (user_in_groups(cred->uid, &g->id, 1))
			return 0;
	}
	return -EACCES;
}

bool config_peer_allowed(const struct config *cfg, int sock)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warn_rl(0, "refusing a connection: SO_PEERCRED: %m");
		return false;
	}
	if (config_cred_allowed(cfg, &cred))
		return true;
	log_warn_rl(LOG_KEY_UID(cred.uid), "refusing a connection from pid %d uid %d: not in allowed_users or allowed_groups",
		 (int)cred.pid, (int)cred.uid);
	return false;
}
