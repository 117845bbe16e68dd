/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for pagerd's settings (daemon/config.c): a good file, bad
 * lines reported with their line numbers, unknown keys, bad values,
 * options over the file, the default file being optional and an explicit
 * one not, what SIGHUP may and may not change, --check-config's output
 * read back as a file, and the access checks.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The default file, so that a test controls whether it exists (one a
 * process: test runs may overlap). */
static char default_path[64];
#undef PAGERD_CONFIG_FILE
#define PAGERD_CONFIG_FILE default_path

#include "../daemon/config.c"
#include "../daemon/log.c"

#define KiB 1024ull
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

/* ---- helpers ----------------------------------------------------------- */

/* Every message config.c said, one a line, "E " / "W " / "N " first. */
struct msgs {
	char text[16384];
	int errors, warnings, notices;
};

static void collect(void *ctx, int level, const char *msg)
{
	struct msgs *m = ctx;
	size_t len = strlen(m->text);

	snprintf(m->text + len, sizeof(m->text) - len, "%c %s\n",
		 level <= LOG_ERR ? 'E' : level == LOG_WARNING ? 'W' : 'N', msg);
	if (level <= LOG_ERR)
		m->errors++;
	else if (level == LOG_WARNING)
		m->warnings++;
	else
		m->notices++;
}

struct fixture {
	char path[64];
	struct msgs m;
	struct config_log log;
	struct config cfg;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int fd;

	if (!f)
		return -1;
	snprintf(f->path, sizeof(f->path), "/tmp/pagerd-test-XXXXXX");
	fd = mkstemp(f->path);
	if (fd < 0)
		return -1;
	close(fd);
	f->log = (struct config_log){ collect, &f->m };
	snprintf(default_path, sizeof(default_path), "/tmp/pagerd-test-default-%d.conf",
		 (int)getpid());
	unlink(PAGERD_CONFIG_FILE);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	config_free(&f->cfg);
	unlink(f->path);
	unlink(PAGERD_CONFIG_FILE);
	free(f);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

/* config_load on `file`'s text with --config and then the options in
 * `...` (NULL-terminated).  Messages start afresh. */
static int load(struct fixture *f, const char *file, ...)
{
	char *argv[32] = { "pagerd", "--config", f->path };
	int argc = 3;
	va_list ap;

	write_file(f->path, file);
	va_start(ap, file);
	for (char *a; (a = va_arg(ap, char *)) && argc < 31;)
		argv[argc++] = a;
	va_end(ap);
	config_free(&f->cfg);
	memset(&f->m, 0, sizeof(f->m));
	return config_load(&f->cfg, argc, argv, &f->log);
}

static int reload(struct fixture *f, const char *file)
{
	write_file(f->path, file);
	memset(&f->m, 0, sizeof(f->m));
	return config_reload(&f->cfg, &f->log);
}

/* Asserts that a message line contains `want`. */
#define assert_said(f, want)                                                    \
	do {                                                                    \
		if (!strstr((f)->m.text, (want)))                               \
			fail_msg("expected '%s' in:\n%s", (want), (f)->m.text); \
	} while (0)

/* ---- tests ------------------------------------------------------------- */

static void defaults_are_valid(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(load(f, "", NULL), 0);
	assert_int_equal(f->m.errors, 0);
	assert_string_equal(f->cfg.socket_path, PAGER_SYSTEM_SOCKET);
	assert_int_equal(f->cfg.socket_mode, 0666);
	assert_int_equal(f->cfg.private_fd, -1);
	assert_int_equal(f->cfg.memory_limit, 0);
	assert_int_equal(f->cfg.high_watermark, 95);
	assert_int_equal(f->cfg.low_watermark, 90);
	assert_int_equal(f->cfg.policy, CONFIG_POLICY_CLOCK);
	assert_string_equal(f->cfg.swap_path, "");
	assert_int_equal(f->cfg.max_region_bytes, 1ull << 40);
	assert_int_equal(f->cfg.max_regions, 4096);
	assert_int_equal(f->cfg.max_clients, 1024);
	assert_int_equal(f->cfg.fault_around_max, 512);
	assert_int_equal(f->cfg.fault_spin_us, 0);
	assert_int_equal(f->cfg.log_level, LOG_INFO);
	assert_string_equal(f->cfg.metrics_address, "");
	assert_true(f->cfg.config_explicit);
	for (size_t i = 0; i < NSETTINGS; i++)
		if (!(settings[i].flags & CLI_ONLY))
			assert_int_equal(f->cfg.set_at[i], 0);
}

static void good_file(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(load(f,
			      "# pagerd.conf\n"
			      "; both comment styles\n"
			      "[pagerd]\n"
			      "socket_path = /tmp/p.sock\n"
			      "socket_mode = 0660\n"
			      "memory_limit = 2G\n"
			      "client_memory_limit=512MiB\n"
			      "   high_watermark = 80 ; indented, inline comment\n"
			      "low_watermark = 70\n"
			      "policy = fifo\n"
			      "swap_path = /var/lib/pagerd/swap\n"
			      "swap_size = 4G\n"
			      "max_region = 64M\n"
			      "max_regions = 10\n"
			      "max_clients = 20\n"
			      "fault_around = 16\n"
			      "fault_spin = 5\n"
			      "allowed_users = root,0\n"
			      "allowed_groups = root\n"
			      "admin_group = root\n"
			      "log_level = debug\n"
			      "metrics_address = 9100\n",
			      NULL),
			 0);
	assert_int_equal(f->m.errors, 0);
	assert_string_equal(f->cfg.socket_path, "/tmp/p.sock");
	assert_int_equal(f->cfg.socket_mode, 0660);
	assert_int_equal(f->cfg.memory_limit, 2 * GiB);
	assert_int_equal(f->cfg.client_memory_limit, 512 * MiB);
	assert_int_equal(f->cfg.high_watermark, 80);
	assert_int_equal(f->cfg.low_watermark, 70);
	assert_int_equal(f->cfg.policy, CONFIG_POLICY_FIFO);
	assert_string_equal(f->cfg.swap_path, "/var/lib/pagerd/swap");
	assert_int_equal(f->cfg.swap_size, 4 * GiB);
	assert_int_equal(f->cfg.max_region_bytes, 64 * MiB);
	assert_int_equal(f->cfg.max_regions, 10);
	assert_int_equal(f->cfg.max_clients, 20);
	assert_int_equal(f->cfg.fault_around_max, 16);
	assert_int_equal(f->cfg.fault_spin_us, 5);
	assert_int_equal(f->cfg.log_level, LOG_DEBUG);
	assert_string_equal(f->cfg.metrics_address, "9100");
	assert_int_equal(f->cfg.access->nuids, 2);
	assert_int_equal(f->cfg.access->uids[0], 0);
	assert_int_equal(f->cfg.access->ngids, 1);
	assert_true(f->cfg.access->has_admin);
	/* Origins are file lines. */
	assert_int_equal(f->cfg.set_at[setting_at(OFF(memory_limit)) - settings], 6);
	assert_int_equal(f->cfg.set_at[setting_at(OFF(high_watermark)) - settings], 8);
}

static void bad_lines_name_file_line_and_setting(void **state)
{
	struct fixture *f = *state;
	char want[256];

	assert_int_equal(load(f,
			      "[pagerd]\n"                 /* 1 */
			      "memory_limit = lots\n"      /* 2 */
			      "just some words\n"          /* 3 */
			      "max_clients = 0\n"          /* 4 */
			      "\n"                         /* 5 */
			      "log_level = chatty\n"       /* 6 */
			      "policy = lru\n"             /* 7 */
			      "socket_mode = 0999\n"       /* 8 */
			      "memory_limit = 1G\n"        /* 9 */
			      "[elsewhere]\n"              /* 10 */
			      "fault_around = 4\n"         /* 11 */
			      "[pagerd\n",                 /* 12 */
			      NULL),
			 -EINVAL);
	snprintf(want, sizeof(want), "%s:2: memory_limit: 'lots' is not a size", f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:3: 'just some words' is not a setting", f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:4: max_clients: '0' is not a whole number from 1 to", f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:6: log_level: 'chatty' is not a log level", f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:7: policy: 'lru' is not one of: clock, fifo", f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:8: socket_mode: '0999' is not an octal mode", f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:9: memory_limit: set again (first on line 2)", f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:11: fault_around: in section [elsewhere]", f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:12: '[pagerd' is not a setting", f->path);
	assert_said(f, want);
	assert_int_equal(f->m.errors, 9);
}

static void unknown_keys(void **state)
{
	struct fixture *f = *state;
	char want[256];

	assert_int_equal(load(f, "memory-limit = 1G\nswap = /x\nbanana = 3\nconfig = /x\n", NULL),
			 -EINVAL);
	snprintf(want, sizeof(want), "%s:1: unknown setting 'memory-limit' (did you mean memory_limit?)",
		 f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:2: unknown setting 'swap' (did you mean swap_path?)", f->path);
	assert_said(f, want);
	snprintf(want, sizeof(want), "%s:3: unknown setting 'banana'\n", f->path);
	assert_said(f, want);
	/* Command-line-only settings have no key. */
	snprintf(want, sizeof(want), "%s:4: unknown setting 'config'", f->path);
	assert_said(f, want);
	assert_int_equal(f->m.errors, 4);
}

static void sizes(void **state)
{
	static const struct {
		const char *text;
		uint64_t want; /* 0: refused */
	} cases[] = {
		{ "4096", 4096 }, { "4K", 4 * KiB }, { "4k", 4 * KiB }, { "4KB", 4 * KiB },
		{ "4KiB", 4 * KiB }, { "3M", 3 * MiB }, { "2G", 2 * GiB }, { "1T", 1024 * GiB },
		{ "", 0 }, { "G", 0 }, { "-1", 0 }, { "1.5G", 0 }, { "12Q", 0 }, { "1 G", 0 },
		{ "4KiBs", 0 }, { "99999999999999999999", 0 }, { "20000000T", 0 }, { "0x10", 0 },
	};
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char file[128];
		int r;

		snprintf(file, sizeof(file), "max_region = %s\n", cases[i].text);
		r = load(f, file, NULL);
		if (cases[i].want) {
			if (r != 0)
				fail_msg("'%s' refused: %s", cases[i].text, f->m.text);
			assert_int_equal(f->cfg.max_region_bytes, cases[i].want);
		} else {
			if (r != -EINVAL)
				fail_msg("'%s' accepted", cases[i].text);
			assert_said(f, "max_region: '");
		}
	}
	/* max_region must be at least 1 byte; memory_limit 0 means none. */
	assert_int_equal(load(f, "max_region = 0\n", NULL), -EINVAL);
	assert_said(f, "must be at least 1");
	assert_int_equal(load(f, "memory_limit = 0\n", NULL), 0);
	/* swap_size is counted in pages. */
	assert_int_equal(load(f, "swap_size = 1000\n", NULL), -EINVAL);
	assert_said(f, "swap_size: must be a multiple of the page size");
}

static void options_override_the_file(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(load(f, "memory_limit = 1G\nmax_clients = 5\nlog_level = debug\n",
			      "--memory-limit", "2G", "-l", "warning", "--policy=fifo", NULL),
			 0);
	assert_int_equal(f->cfg.memory_limit, 2 * GiB);
	assert_int_equal(f->cfg.max_clients, 5);
	assert_int_equal(f->cfg.log_level, LOG_WARNING);
	assert_int_equal(f->cfg.policy, CONFIG_POLICY_FIFO);
	assert_int_equal(f->cfg.set_at[setting_at(OFF(memory_limit)) - settings], -1);
	assert_int_equal(f->cfg.set_at[setting_at(OFF(max_clients)) - settings], 2);
	/* Errors in options name the option. */
	assert_int_equal(load(f, "", "--max-regions", "many", NULL), -EINVAL);
	assert_said(f, "--max-regions: 'many' is not a whole number");
	assert_int_equal(load(f, "", "--bogus", NULL), -EINVAL);
	assert_said(f, "unknown option '--bogus'");
	assert_int_equal(load(f, "", "--socket", NULL), -EINVAL);
	assert_said(f, "option '--socket' needs a value");
	assert_int_equal(load(f, "", "stray", NULL), -EINVAL);
	assert_said(f, "unexpected argument 'stray'");
	/* An option's bad value and the file's are both reported. */
	assert_int_equal(load(f, "fault_around = x\n", "--fault-spin", "y", NULL), -EINVAL);
	assert_int_equal(f->m.errors, 2);
}

static void default_file_optional_explicit_required(void **state)
{
	struct fixture *f = *state;
	char *argv_default[] = { "pagerd", NULL };
	char *argv_missing[] = { "pagerd", "--config", "/nonexistent/pagerd.conf", NULL };

	/* PAGERD_CONFIG_FILE does not exist: defaults. */
	assert_int_equal(config_load(&f->cfg, 1, argv_default, &f->log), 0);
	assert_false(f->cfg.config_explicit);
	assert_string_equal(f->cfg.config_path, PAGERD_CONFIG_FILE);
	config_free(&f->cfg);
	/* It exists: read. */
	write_file(PAGERD_CONFIG_FILE, "max_clients = 3\n");
	assert_int_equal(config_load(&f->cfg, 1, argv_default, &f->log), 0);
	assert_int_equal(f->cfg.max_clients, 3);
	config_free(&f->cfg);
	/* An explicit file must exist. */
	assert_int_equal(config_load(&f->cfg, 3, argv_missing, &f->log), -EINVAL);
	assert_said(f, "/nonexistent/pagerd.conf: cannot read: No such file or directory");
}

static void private_daemon_skips_the_system_file(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "pagerd", "--private-fd=5", NULL };

	write_file(PAGERD_CONFIG_FILE, "swap_path = /var/lib/pagerd/swap\nlog_level = debug\n");
	assert_int_equal(config_load(&f->cfg, 2, argv, &f->log), 0);
	assert_int_equal(f->cfg.private_fd, 5);
	assert_string_equal(f->cfg.swap_path, "");
	/* And says less unless told otherwise. */
	assert_int_equal(f->cfg.log_level, LOG_WARNING);
	assert_int_equal(load(f, "", "--private-fd", "5", "-l", "debug", NULL), 0);
	assert_int_equal(f->cfg.log_level, LOG_DEBUG);
}

static void long_and_indented_lines(void **state)
{
	struct fixture *f = *state;
	char file[512], want[128];

	/* inih would take an indented line for the previous value's
	 * continuation; here it is a setting of its own. */
	assert_int_equal(load(f, "max_clients = 5\n    max_regions = 6\n", NULL), 0);
	assert_int_equal(f->cfg.max_clients, 5);
	assert_int_equal(f->cfg.max_regions, 6);
	/* A line too long for inih is refused, not split. */
	snprintf(file, sizeof(file), "max_clients = 5\nswap_path = /%0300d\nmax_regions = 7\n", 0);
	assert_int_equal(load(f, file, NULL), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: line longer than", f->path);
	assert_said(f, want);
	assert_int_equal(f->m.errors, 1);
}

static void cross_checks(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(load(f, "high_watermark = 50\nlow_watermark = 60\n", NULL), -EINVAL);
	assert_said(f, ":2: low_watermark: 60% must be below high_watermark (50%)");
	assert_int_equal(load(f, "high_watermark = 101\n", NULL), -EINVAL);
	assert_int_equal(load(f, "allowed_users = root,no-such-user-here\n", NULL), -EINVAL);
	assert_said(f, "allowed_users: no such user 'no-such-user-here'");
	assert_int_equal(load(f, "allowed_groups = root, daemon\n", NULL), -EINVAL);
	assert_said(f, "comma-separated list without spaces");
	assert_int_equal(load(f, "admin_group = no-such-group-here\n", NULL), -EINVAL);
	assert_said(f, "admin_group: no such group");
	assert_int_equal(load(f, "socket_group = no-such-group-here\n", NULL), -EINVAL);
	assert_said(f, "socket_group: no such group");
	assert_int_equal(load(f, "socket_path =\n", NULL), -EINVAL);
	assert_said(f, "socket_path: '' must not be empty");
}

static void addresses(void **state)
{
	static const struct {
		const char *in, *host;
		unsigned port;
	} good[] = {
		{ "9100", "127.0.0.1", 9100 }, { ":9100", "127.0.0.1", 9100 },
		{ "0.0.0.0:80", "0.0.0.0", 80 }, { "[::1]:9100", "::1", 9100 },
		{ "localhost:0", "localhost", 0 },
	};
	static const char *const bad_addrs[] = { "", "x", "::1:9100", "[::1]", "[]:80",
						 "host:", "host:65536", "host:-1", ":" };
	char host[64];
	unsigned port;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(config_parse_address(good[i].in, host, sizeof(host), &port), 0);
		assert_string_equal(host, good[i].host);
		assert_int_equal(port, good[i].port);
	}
	for (size_t i = 0; i < sizeof(bad_addrs) / sizeof(bad_addrs[0]); i++)
		if (config_parse_address(bad_addrs[i], host, sizeof(host), &port) == 0)
			fail_msg("'%s' accepted", bad_addrs[i]);
}

static void reload_applies_what_it_may(void **state)
{
	struct fixture *f = *state;
	const char *before = "socket_path = /tmp/a.sock\n"
			     "memory_limit = 1G\n"
			     "max_clients = 5\n"
			     "log_level = info\n"
			     "policy = clock\n";

	assert_int_equal(load(f, before, "--max-regions", "7", NULL), 0);
	/* Nothing changed: nothing applied. */
	assert_int_equal(reload(f, before), 0);
	assert_int_equal(f->m.warnings, 0);
	assert_int_equal(reload(f,
				"socket_path = /tmp/b.sock\n"  /* not at run time */
				"memory_limit = 2G\n"          /* applied */
				"max_clients = 5\n"
				"log_level = debug\n"          /* applied */
				"policy = fifo\n"              /* not at run time */
				"max_regions = 9\n"            /* the option wins */
				"allowed_users = root\n"       /* applied */
				"metrics_address = 9100\n"),   /* not at run time */
			 3);
	assert_int_equal(f->cfg.memory_limit, 2 * GiB);
	assert_int_equal(f->cfg.log_level, LOG_DEBUG);
	assert_int_equal(f->cfg.access->nuids, 1);
	assert_string_equal(f->cfg.socket_path, "/tmp/a.sock");
	assert_int_equal(f->cfg.policy, CONFIG_POLICY_CLOCK);
	assert_int_equal(f->cfg.max_regions, 7);
	assert_string_equal(f->cfg.metrics_address, "");
	assert_said(f, "N memory_limit: '1G' -> '2G'");
	assert_said(f, "N log_level: 'info' -> 'debug'");
	assert_said(f, "N allowed_users: '' -> 'root'");
	assert_said(f, ":1: socket_path: changed to '/tmp/b.sock', but cannot change while pagerd runs: still '/tmp/a.sock'");
	assert_said(f, ":5: policy: changed to 'fifo'");
	assert_said(f, "metrics_address: changed to '9100'");
	assert_int_equal(f->m.warnings, 3);
	assert_int_equal(f->m.errors, 0);
	/* Back to the default when a key is removed. */
	assert_int_equal(reload(f, "socket_path = /tmp/a.sock\n"), 4);
	assert_int_equal(f->cfg.memory_limit, 0);
	assert_int_equal(f->cfg.max_clients, 1024);
	assert_int_equal(f->cfg.access->nuids, 0);
}

static void reload_with_errors_changes_nothing(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(load(f, "memory_limit = 1G\nlog_level = info\n", NULL), 0);
	assert_int_equal(reload(f, "memory_limit = 2G\nlog_level = loud\n"), -EINVAL);
	assert_said(f, ":2: log_level: 'loud' is not a log level");
	assert_said(f, "not reloaded: the running configuration stays");
	assert_int_equal(f->cfg.memory_limit, 1 * GiB);
	assert_int_equal(f->cfg.log_level, LOG_INFO);
	/* A file removed since start: also an error, when it was named. */
	unlink(f->path);
	memset(&f->m, 0, sizeof(f->m));
	assert_int_equal(config_reload(&f->cfg, &f->log), -EINVAL);
	assert_said(f, "cannot read");
}

/* --check-config prints a file that reads back to the same settings. */
static void printed_config_reads_back(void **state)
{
	struct fixture *f = *state;
	char *first = NULL, *second = NULL, *a, *b;
	size_t n1 = 0, n2 = 0;
	FILE *out;

	assert_int_equal(load(f, "memory_limit = 3G\npolicy = fifo\nsocket_mode = 0600\n"
			      "allowed_groups = root,0\nmetrics_address = [::1]:9100\n",
			      "--max-regions", "77", NULL),
			 0);
	out = open_memstream(&first, &n1);
	config_print(&f->cfg, out);
	fclose(out);
	assert_non_null(strstr(first, "memory_limit         = 3G "));
	assert_non_null(strstr(first, "max_regions          = 77 "));
	assert_non_null(strstr(first, "; command line\n"));
	assert_int_equal(load(f, first, NULL), 0);
	out = open_memstream(&second, &n2);
	config_print(&f->cfg, out);
	fclose(out);
	/* Same values, line for line (the origins differ). */
	a = first;
	b = second;
	for (;;) {
		size_t la = strcspn(a, ";"), lb = strcspn(b, ";");

		assert_int_equal(la, lb);
		assert_memory_equal(a, b, la);
		a = strchr(a, '\n');
		b = strchr(b, '\n');
		if (!a || !b)
			break;
		a++, b++;
	}
	assert_null(a);
	assert_null(b);
	free(first);
	free(second);
}

static void help_and_version_end_the_run(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "pagerd", "--version", NULL };

	assert_int_equal(load(f, "", "--help", NULL), 1);
	config_free(&f->cfg);
	assert_int_equal(config_load(&f->cfg, 2, argv, &f->log), 1);
}

static void access_lists(void **state)
{
	struct fixture *f = *state;
	struct passwd *nobody = getpwnam("nobody");
	struct ucred root = { .pid = 1, .uid = 0, .gid = 0 };
	struct ucred stranger = { .pid = 1, .uid = 54321, .gid = 54321 };
	struct ucred nob, nob_other_gid;
	struct group *gr = NULL;
	char file[128];

	if (!nobody || !(gr = getgrgid(nobody->pw_gid)))
		skip();
	nob = (struct ucred){ .pid = 1, .uid = nobody->pw_uid, .gid = nobody->pw_gid };
	/* Same user, running with another gid: only getgrouplist knows. */
	nob_other_gid = (struct ucred){ .pid = 1, .uid = nobody->pw_uid, .gid = 54321 };
	/* Empty lists: everyone connects; only root controls. */
	assert_int_equal(load(f, "", NULL), 0);
	assert_true(config_cred_allowed(&f->cfg, &stranger));
	assert_false(config_cred_admin(&f->cfg, &stranger));
	assert_true(config_cred_admin(&f->cfg, &root));
	/* A user list. */
	assert_int_equal(load(f, "allowed_users = nobody\n", NULL), 0);
	assert_true(config_cred_allowed(&f->cfg, &nob));
	assert_false(config_cred_allowed(&f->cfg, &stranger));
	assert_true(config_cred_allowed(&f->cfg, &root)); /* root always */
	/* A group list, met by the peer's gid... */
	assert_int_equal(load(f, "allowed_groups = 54321\n", NULL), 0);
	assert_true(config_cred_allowed(&f->cfg, &stranger));
	assert_false(config_cred_allowed(&f->cfg, &nob));
	/* ...or by the groups of the peer's user. */
	snprintf(file, sizeof(file), "allowed_groups = %s\nadmin_group = %s\n", gr->gr_name,
		 gr->gr_name);
	assert_int_equal(load(f, file, NULL), 0);
	assert_true(config_cred_allowed(&f->cfg, &nob_other_gid));
	assert_false(config_cred_allowed(&f->cfg, &stranger));
	assert_true(config_cred_admin(&f->cfg, &nob_other_gid));
	assert_false(config_cred_admin(&f->cfg, &stranger));
}

/*
 * Who may name which RBD pool/namespace (snapshot and restore targets):
 * pagerd opens them with its own Ceph identity, so this is the check.
 */
static void rbd_grants(void **state)
{
	struct fixture *f = *state;
	struct passwd *nobody = getpwnam("nobody");
	struct ucred root = { .pid = 1, .uid = 0, .gid = 0 };
	struct ucred stranger = { .pid = 1, .uid = 54321, .gid = 54321 };
	struct ucred member = { .pid = 1, .uid = 54323, .gid = 54322 };
	struct group *gr = NULL;
	char file[256];

	/* Nothing granted: nobody but root (and pagerd's own user). */
	assert_int_equal(load(f, "", NULL), 0);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "rbd", ""), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "rbd", "u54321"), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &root, "rbd", "anything"), 0);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "", ""), -EINVAL);

	/* A namespace per uid: uN of that pool, and nothing else. */
	assert_int_equal(load(f, "rbd_user_namespace = pagerd\n", NULL), 0);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "pagerd", "u54321"), 0);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "pagerd", "u54323"), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &member, "pagerd", "u54321"), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "pagerd", ""), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "rbd", "u54321"), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "pagerd", "u543210"), -EACCES);

	/* Grants to a uid, to a gid (the peer's own), every namespace of a
	 * pool, the default namespace alone. */
	assert_int_equal(load(f, "rbd_allow = user:54321 pool/ns, group:54322 shared/*,"
				 "uid:54323  solo\n", NULL), 0);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "pool", "ns"), 0);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "pool", "ns2"), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "pool", ""), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &member, "pool", "ns"), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &member, "shared", "x"), 0);
	assert_int_equal(config_rbd_allowed(&f->cfg, &member, "shared", ""), 0);
	assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "shared", "x"), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &member, "solo", ""), 0);
	assert_int_equal(config_rbd_allowed(&f->cfg, &member, "solo", "x"), -EACCES);
	assert_int_equal(config_rbd_allowed(&f->cfg, &member, "sol", ""), -EACCES);

	/* A group met through the user's groups (getgrouplist), by name. */
	if (nobody && (gr = getgrgid(nobody->pw_gid))) {
		struct ucred nob = { .pid = 1, .uid = nobody->pw_uid, .gid = 54321 };

		snprintf(file, sizeof(file), "rbd_allow = group:%s g/n\n", gr->gr_name);
		assert_int_equal(load(f, file, NULL), 0);
		assert_int_equal(config_rbd_allowed(&f->cfg, &nob, "g", "n"), 0);
		assert_int_equal(config_rbd_allowed(&f->cfg, &stranger, "g", "n"), -EACCES);
	}

	/* Bad grants are refused when the file is read. */
	assert_int_equal(load(f, "rbd_allow = 54321 pool\n", NULL), -EINVAL);
	assert_said(f, "rbd_allow");
	assert_int_equal(load(f, "rbd_allow = user:54321 ../x\n", NULL), -EINVAL);
	assert_int_equal(load(f, "rbd_allow = user:54321 pool/a/b\n", NULL), -EINVAL);
	assert_int_equal(load(f, "rbd_allow = host:x pool\n", NULL), -EINVAL);
	assert_int_equal(load(f, "rbd_allow = user:54321\n", NULL), -EINVAL);
	assert_int_equal(load(f, "rbd_allow = user:no-such-user-here pool\n", NULL), -EINVAL);
	assert_said(f, "rbd_allow: no such user 'no-such-user-here'");
	assert_int_equal(load(f, "rbd_user_namespace = a/b\n", NULL), -EINVAL);
}

/* A new swap file without swap_size: the RAM, at most half the free space
 * of its filesystem and CONFIG_SWAP_DEFAULT_MAX, in whole pages. */
/* fault_threads: "cpus" (the default) or a count, 0 for the loop alone;
 * printed as it was given, so that the printed file reads back. */
static void fault_threads_setting(void **state)
{
	struct fixture *f = *state;
	char *text = NULL;
	size_t n = 0;
	FILE *out;

	assert_int_equal(load(f, "", NULL), 0);
	assert_int_equal(f->cfg.fault_threads, FAULT_THREADS_CPUS);
	out = open_memstream(&text, &n);
	config_print(&f->cfg, out);
	fclose(out);
	assert_non_null(strstr(text, "fault_threads        = cpus "));
	free(text);
	assert_int_equal(load(f, "fault_threads = 0\n", NULL), 0);
	assert_int_equal(f->cfg.fault_threads, 0);
	assert_int_equal(load(f, "fault_threads = cpus\n", "--fault-threads", "3", NULL), 0);
	assert_int_equal(f->cfg.fault_threads, 3);
	assert_int_equal(load(f, "", "--fault-threads=cpus", NULL), 0);
	assert_int_equal(f->cfg.fault_threads, FAULT_THREADS_CPUS);
	assert_int_equal(load(f, "fault_threads = 257\n", NULL), -EINVAL);
	assert_said(f, "fault_threads: '257' is not a whole number from 0 to 256");
	assert_int_equal(load(f, "fault_threads = all\n", NULL), -EINVAL);
}

static void default_swap_size(void **state)
{
	const uint64_t ps = 4096;

	(void)state;
	/* A small machine on a roomy disk: its memory. */
	assert_int_equal(config_default_swap_size(1 * GiB, 100 * GiB, ps), 1 * GiB);
	/* A small disk: half of what is free. */
	assert_int_equal(config_default_swap_size(8 * GiB, 3 * GiB, ps), 1536 * MiB);
	/* A large machine on a large disk: the cap. */
	assert_int_equal(config_default_swap_size(256 * GiB, 4096 * GiB, ps),
			 CONFIG_SWAP_DEFAULT_MAX);
	/* Whole pages. */
	assert_int_equal(config_default_swap_size(1 * GiB, 64 * MiB + 3 * ps + 100, ps),
			 32 * MiB + ps);
	/* A full disk: nothing. */
	assert_int_equal(config_default_swap_size(1 * GiB, 0, ps), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(defaults_are_valid, setup, teardown),
		cmocka_unit_test_setup_teardown(good_file, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_lines_name_file_line_and_setting, setup, teardown),
		cmocka_unit_test_setup_teardown(unknown_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(options_override_the_file, setup, teardown),
		cmocka_unit_test_setup_teardown(default_file_optional_explicit_required, setup, teardown),
		cmocka_unit_test_setup_teardown(private_daemon_skips_the_system_file, setup, teardown),
		cmocka_unit_test_setup_teardown(long_and_indented_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(cross_checks, setup, teardown),
		cmocka_unit_test(addresses),
		cmocka_unit_test_setup_teardown(reload_applies_what_it_may, setup, teardown),
		cmocka_unit_test_setup_teardown(reload_with_errors_changes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(printed_config_reads_back, setup, teardown),
		cmocka_unit_test_setup_teardown(help_and_version_end_the_run, setup, teardown),
		cmocka_unit_test_setup_teardown(access_lists, setup, teardown),
		cmocka_unit_test_setup_teardown(rbd_grants, setup, teardown),
		cmocka_unit_test(default_swap_size),
		cmocka_unit_test_setup_teardown(fault_threads_setting, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
