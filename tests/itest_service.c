/* SPDX-License-Identifier: MIT */
/*
 * pagerd as a service: a real pagerd, run the ways systemd runs it.
 *
 *   notify_ready_status_watchdog_stopping  READY=1 only once the socket
 *        accepts, STATUS= lines that follow the clients, WATCHDOG=1 at half
 *        of WATCHDOG_USEC, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on
 *        SIGTERM, all read from a NOTIFY_SOCKET this test listens on
 *   socket_activation      systemd-socket-activate hands pagerd its socket;
 *        examples/hello (PAGER_SOCKET) is served through it
 *   check_config           --check-config on a good and a bad file
 *   sighup_reload          log_level info -> debug takes effect (debug lines
 *        appear), a socket_path change is reported as not applied
 *   metrics_endpoint       GET /metrics after a client faulted
 *   socket_access          socket_mode/socket_group of a socket pagerd
 *        binds, allowed_users and admin_group against a peer of another uid
 *
 * Nothing sleeps: every wait is a poll() on the notify socket, on pagerd's
 * log pipe or on a child, with a deadline that fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fd.h"
#include "harness.h"
#include "pager.h"

/* How long any one thing may take before the test fails. */
#define WAIT_MS 10000

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *pagerd_bin(void)
{
	const char *b = getenv("PAGERD");

	return b ? b : "build/pagerd";
}

/* ---- a process whose stdout and stderr we read ------------------------- */

struct proc {
	pid_t pid;
	int out;          /* read end of its stdout+stderr, non-blocking */
	char log[1 << 17];
	size_t len, seen; /* bytes read; bytes already matched */
};

/* Starts argv with `env` ("NAME=VALUE", NULL-terminated; "WATCHDOG_PID="
 * alone means the child's own pid) added to ours, after chdir-free fork. */
static void proc_start(struct proc *p, char *const argv[], char *const env[])
{
	int fds[2];

	memset(p, 0, sizeof(*p));
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		for (int i = 0; env && env[i]; i++) {
			char *e = strdup(env[i]), *eq = strchr(e, '=');
			char pid[16];

			*eq = '\0';
			snprintf(pid, sizeof(pid), "%d", (int)getpid());
			setenv(e, strcmp(e, "WATCHDOG_PID") == 0 && !eq[1] ? pid : eq + 1, 1);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	p->out = fds[0];
	assert_int_equal(fd_nonblock(p->out, true), 0);
}

/* Reads what the process wrote, waiting up to timeout_ms for more.
 * Returns false at end of file. */
static bool proc_read(struct proc *p, int timeout_ms)
{
	struct pollfd pfd = { .fd = p->out, .events = POLLIN };
	ssize_t n;

	if (poll(&pfd, 1, timeout_ms) <= 0)
		return true;
	n = read(p->out, p->log + p->len, sizeof(p->log) - 1 - p->len);
	if (n <= 0)
		return n < 0 && errno == EAGAIN;
	p->len += (size_t)n;
	p->log[p->len] = '\0';
	return true;
}

/* Waits until a line not matched before contains `want`; fails the test
 * past WAIT_MS.  Returns the start of that line (in p->log). */
static const char *proc_wait_log(struct proc *p, const char *want)
{
	long long deadline = now_ms() + WAIT_MS;

	for (;;) {
		char *hit = strstr(p->log + p->seen, want);

		if (hit) {
			char *eol = strchr(hit, '\n');

			while (hit > p->log && hit[-1] != '\n')
				hit--;
			p->seen = eol ? (size_t)(eol + 1 - p->log) : p->len;
			return hit;
		}
		if (now_ms() > deadline || !proc_read(p, (int)(deadline - now_ms())))
			fail_msg("no line with '%s' from pid %d; it wrote:\n%s", want, (int)p->pid,
				 p->log);
	}
}

/* Everything written so far, without waiting. */
static void proc_drain(struct proc *p)
{
	size_t before;

	do
		before = p->len;
	while (proc_read(p, 0) && p->len != before);
}

/* Waits for the process; returns its exit status (-1: killed). */
static int proc_wait(struct proc *p)
{
	int st;

	while (proc_read(p, 100))
		;
	close(p->out);
	p->out = -1;
	while (waitpid(p->pid, &st, 0) < 0)
		assert_int_equal(errno, EINTR);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int proc_stop(struct proc *p)
{
	kill(p->pid, SIGTERM);
	return proc_wait(p);
}

/* ---- a scratch directory others may enter ------------------------------ */

struct scratch {
	char dir[64];
	char sock[128];
	char conf[128];
};

static void scratch_make(struct scratch *s)
{
	snprintf(s->dir, sizeof(s->dir), "/tmp/pagerd-svc.XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	chmod(s->dir, 0755);
	snprintf(s->sock, sizeof(s->sock), "%s/pagerd.sock", s->dir);
	snprintf(s->conf, sizeof(s->conf), "%s/pagerd.conf", s->dir);
}

static void scratch_remove(struct scratch *s)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", s->dir);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* A client through libpager: one region of `len` bytes, every page
 * written.  Returns the pager (the region stays until pager_close). */
static struct pager *client_touch(const char *sock, size_t len)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager_region *r;
	struct pager *p;
	char *mem;

	assert_int_equal(pager_open(&p, &o), 0);
	assert_int_equal(pager_region_create(p, len, NULL, &r), 0);
	mem = pager_region_addr(r);
	for (size_t i = 0; i < len; i += 4096)
		mem[i] = 1;
	return p;
}

/* ---- NOTIFY_SOCKET ----------------------------------------------------- */

struct notify_rx {
	int fd;
	char msg[4096];
	long long at; /* ms, when msg arrived */
};

static void notify_open(struct notify_rx *n, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(n->fd >= 0);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(n->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
}

/* Receives messages until one contains `want` (each line of a message is
 * one assignment, so "READY=1" matches a line, not a substring of one). */
static void notify_wait(struct notify_rx *n, const char *want)
{
	long long deadline = now_ms() + WAIT_MS;
	size_t wl = strlen(want);

	for (;;) {
		struct pollfd pfd = { .fd = n->fd, .events = POLLIN };
		ssize_t got;

		if (now_ms() > deadline || poll(&pfd, 1, (int)(deadline - now_ms())) <= 0)
			fail_msg("no notify message with '%s'", want);
		got = recv(n->fd, n->msg, sizeof(n->msg) - 1, 0);
		assert_true(got >= 0);
		n->msg[got] = '\0';
		n->at = now_ms();
		for (char *l = n->msg; l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
			if (strncmp(l, want, wl) == 0)
				return;
	}
}

static void notify_ready_status_watchdog_stopping(void **state)
{
	struct scratch s;
	struct notify_rx n;
	char notify_path[160], notify_env[192];
	char *argv[] = { (char *)pagerd_bin(), "--config", "/dev/null", "--socket", s.sock, NULL };
	char *env[] = { notify_env, "WATCHDOG_USEC=1000000", "WATCHDOG_PID=", NULL };
	long long prev, first;
	struct pager *p;
	struct proc d;
	int c;

	(void)state;
	scratch_make(&s);
	argv[4] = s.sock;
	snprintf(notify_path, sizeof(notify_path), "%s/notify", s.dir);
	snprintf(notify_env, sizeof(notify_env), "NOTIFY_SOCKET=%s", notify_path);
	notify_open(&n, notify_path);
	proc_start(&d, argv, env);

	/* READY=1 means the socket accepts: connect at once, no retry. */
	notify_wait(&n, "READY=1");
	assert_non_null(strstr(n.msg, "STATUS=0 clients, 0 regions, 0.0 MiB resident"));
	c = test_raw_connect(s.sock);
	assert_true(c >= 0);
	close(c);

	/* WATCHDOG=1 every 500 ms: never late for the 1 s deadline, and not
	 * a flood either.  (A deadline of 1 s, not less, leaves this test,
	 * which times the pings as it receives them, room for a loaded
	 * machine: a 425 ms gap was seen against a 400 ms deadline.) */
	notify_wait(&n, "WATCHDOG=1");
	prev = first = n.at;
	for (int i = 0; i < 5; i++) {
		notify_wait(&n, "WATCHDOG=1");
		if (n.at - prev >= 1000)
			fail_msg("watchdog %d came %lld ms after the previous one", i, n.at - prev);
		prev = n.at;
	}
	/* Not a flood: two pings can reach a delayed reader together, so
	 * the pace is judged over all five. */
	if (prev - first < 5 * 200)
		fail_msg("5 watchdog pings in %lld ms: a flood", prev - first);

	/* STATUS= follows the clients. */
	p = client_touch(s.sock, 1 << 20);
	notify_wait(&n, "STATUS=1 client, 1 region, 1.0 MiB resident");
	pager_close(p);
	notify_wait(&n, "STATUS=0 clients, 0 regions");

	/* Reload. */
	kill(d.pid, SIGHUP);
	notify_wait(&n, "RELOADING=1");
	notify_wait(&n, "READY=1");

	kill(d.pid, SIGTERM);
	notify_wait(&n, "STOPPING=1");
	assert_int_equal(proc_wait(&d), 0);
	close(n.fd);
	scratch_remove(&s);
}

/* ---- socket activation ------------------------------------------------- */

static void socket_activation(void **state)
{
	const char *activate = "/usr/bin/systemd-socket-activate";
	char hello[512], pager_socket[160], exe[64], target[512];
	char *sa_argv[] = { (char *)activate, "--seqpacket", "-l", NULL, (char *)pagerd_bin(),
			    "--config", "/dev/null", "--log-level", "debug", NULL };
	char *hello_argv[] = { hello, NULL };
	char *hello_env[] = { pager_socket, NULL };
	struct proto_reply st;
	struct scratch s;
	struct proc d, h;
	struct stat sb;
	ssize_t n;

	(void)state;
	if (access(activate, X_OK) != 0)
		skip();
	scratch_make(&s);
	sa_argv[3] = s.sock;
	snprintf(hello, sizeof(hello), "%s", pagerd_bin());
	snprintf(strrchr(hello, '/') + 1, sizeof(hello) - (size_t)(strrchr(hello, '/') + 1 - hello),
		 "examples/hello");
	snprintf(pager_socket, sizeof(pager_socket), "PAGER_SOCKET=%s", s.sock);

	proc_start(&d, sa_argv, NULL);
	/* It listens first, and starts pagerd on the first connection. */
	proc_wait_log(&d, "Listening on");
	proc_start(&h, hello_argv, hello_env);
	proc_wait_log(&h, "wrote and read 64 MiB through pagerd");
	assert_int_equal(proc_wait(&h), 0);

	/* The one that served it is pagerd, on the socket it was passed. */
	proc_wait_log(&d, "listening on the socket systemd passed");
	snprintf(exe, sizeof(exe), "/proc/%d/exe", (int)d.pid);
	n = readlink(exe, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_string_equal(strrchr(target, '/'), "/pagerd");
	assert_int_equal(test_status(s.sock, &st), 0);
	assert_true(st.counters.pages_zero_filled >= (64 << 20) / 4096);
	assert_int_equal(proc_stop(&d), 0);
	/* The socket is systemd's: pagerd leaves it in place. */
	assert_int_equal(stat(s.sock, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));
	scratch_remove(&s);
}

/* ---- configuration ----------------------------------------------------- */

static void check_config(void **state)
{
	char *argv[] = { (char *)pagerd_bin(), "--check-config", "--config", NULL, NULL, NULL, NULL };
	char want[256];
	struct scratch s;
	struct proc d;

	(void)state;
	scratch_make(&s);
	argv[3] = s.conf;
	write_file(s.conf, "[pagerd]\nmemory_limit = 1G\n");
	argv[4] = "--max-clients";
	argv[5] = "9";
	proc_start(&d, argv, NULL);
	proc_wait_log(&d, "memory_limit         = 1G ");
	snprintf(want, sizeof(want), "; %s:2", s.conf);
	assert_non_null(strstr(d.log, want));
	proc_wait_log(&d, "max_clients          = 9 ");
	assert_non_null(strstr(d.log, "; command line"));
	assert_int_equal(proc_wait(&d), 0);

	write_file(s.conf, "[pagerd]\nmemory_limit = 1G\nmax_regions = lots\nnot_a_key = 1\n");
	argv[4] = NULL;
	proc_start(&d, argv, NULL);
	snprintf(want, sizeof(want), "%s:3: max_regions: 'lots' is not a whole number", s.conf);
	proc_wait_log(&d, want);
	snprintf(want, sizeof(want), "%s:4: unknown setting 'not_a_key'", s.conf);
	proc_wait_log(&d, want);
	assert_int_equal(proc_wait(&d), 1);
	assert_null(strstr(d.log, "memory_limit         =")); /* no config printed */

	/* Started with that file, pagerd refuses to run (status 2). */
	argv[1] = "--socket";
	argv[2] = s.sock;
	argv[3] = "--config";
	argv[4] = s.conf;
	proc_start(&d, argv, NULL);
	assert_int_equal(proc_wait(&d), 2);
	scratch_remove(&s);
}

static void sighup_reload(void **state)
{
	char *argv[] = { (char *)pagerd_bin(), "--config", NULL, NULL };
	struct proto_reply st;
	struct scratch s;
	struct pager *p;
	struct proc d;
	char text[512];

	(void)state;
	scratch_make(&s);
	argv[2] = s.conf;
	snprintf(text, sizeof(text), "socket_path = %s\nlog_level = info\nmax_clients = 8\n", s.sock);
	write_file(s.conf, text);
	proc_start(&d, argv, NULL);
	proc_wait_log(&d, "listening on");

	/* At info, creating a region logs nothing (it is a debug line). */
	p = client_touch(s.sock, 1 << 20);
	assert_int_equal(test_status(s.sock, &st), 0); /* pagerd is past it */
	proc_drain(&d);
	assert_null(strstr(d.log + d.seen, "bytes"));
	pager_close(p);

	snprintf(text, sizeof(text),
		 "socket_path = %s.new\nlog_level = debug\nmax_clients = 8\n", s.sock);
	write_file(s.conf, text);
	kill(d.pid, SIGHUP);
	/* In the table's order: socket_path comes first. */
	proc_wait_log(&d, "socket_path: changed to");
	proc_wait_log(&d, "log_level: 'info' -> 'debug'");
	proc_wait_log(&d, "1 setting changed");

	/* Now it does: the new level is in force. */
	p = client_touch(s.sock, 1 << 20);
	proc_wait_log(&d, "bytes");
	pager_close(p);

	/* A broken file changes nothing. */
	write_file(s.conf, "log_level = loud\n");
	kill(d.pid, SIGHUP);
	proc_wait_log(&d, "not reloaded");
	p = client_touch(s.sock, 1 << 20);
	proc_wait_log(&d, "bytes"); /* still at debug */
	pager_close(p);
	assert_int_equal(proc_stop(&d), 0);
	scratch_remove(&s);
}

/* ---- metrics ----------------------------------------------------------- */

/* GET `path` from 127.0.0.1:port; the whole response into buf. */
static void http_get(unsigned port, const char *method, const char *path, char *buf,
		     size_t n)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char req[256];
	size_t len = 0;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ssize_t got;

	assert_true(s >= 0);
	assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
		 method, path);
	assert_int_equal(write(s, req, strlen(req)), (ssize_t)strlen(req));
	/* Blocking reads until pagerd closes: the runner's timeout covers a
	 * pagerd that never answers. */
	while ((got = read(s, buf + len, n - 1 - len)) > 0)
		len += (size_t)got;
	buf[len] = '\0';
	close(s);
}

static unsigned long long metric(const char *body, const char *name)
{
	char want[128];
	const char *at;

	snprintf(want, sizeof(want), "\n%s ", name);
	at = strstr(body, want);
	if (!at)
		fail_msg("no %s in:\n%s", name, body);
	return strtoull(at + strlen(want), NULL, 10);
}

/* The family's `what` line ("# TYPE name counter") is there, once. */
static void assert_once(const char *body, const char *what, const char *family)
{
	char want[160];
	const char *at;

	snprintf(want, sizeof(want), "\n# %s %s ", what, family);
	at = strstr(body, want);
	if (!at || strstr(at + 1, want))
		fail_msg("'%s' %s in:\n%s", want + 1, at ? "twice" : "missing", body);
}

static void assert_counter(const char *body, const char *family, const char *kind,
			   uint64_t want)
{
	char row[160], type[160];

	if (kind)
		snprintf(row, sizeof(row), "%s{kind=\"%s\"}", family, kind);
	else
		snprintf(row, sizeof(row), "%s", family);
	assert_once(body, "HELP", family);
	assert_once(body, "TYPE", family);
	snprintf(type, sizeof(type), "\n# TYPE %s counter\n", family);
	if (!strstr(body, type))
		fail_msg("%s is not a counter in:\n%s", family, body);
	if (metric(body, row) != want)
		fail_msg("%s is %llu, pagerctl's status %llu", row, metric(body, row),
			 (unsigned long long)want);
}

/*
 * Every counter of common/counters.h is on the endpoint, its family's
 * HELP and TYPE once, with the value the control channel's status has
 * (st, read while nothing counts).
 */
static void assert_every_counter(const char *body, const struct proto_reply *st)
{
#define X(name, scope, unit, family, kind, help) \
	assert_counter(body, family, kind, st->counters.name);
	PAGER_COUNTERS(X)
#undef X
}

static void metrics_endpoint(void **state)
{
	char *argv[] = { (char *)pagerd_bin(), "--config", "/dev/null", "--socket", NULL,
			 "--metrics-address", "127.0.0.1:0", NULL };
	static char body[65536];
	const char *line;
	struct scratch s;
	struct proto_reply st, st2;
	struct pager *p;
	struct proc d;
	unsigned port;

	(void)state;
	scratch_make(&s);
	argv[4] = s.sock;
	proc_start(&d, argv, NULL);
	line = proc_wait_log(&d, "metrics on http://127.0.0.1:");
	assert_int_equal(sscanf(strstr(line, "127.0.0.1:") + 10, "%u", &port), 1);

	p = client_touch(s.sock, 4 << 20);
	/* Nothing counts now (no limit, the client idle): status before and
	 * after the scrape agree, and the scrape with them. */
	assert_int_equal(test_status(s.sock, &st), 0);
	http_get(port, "GET", "/metrics", body, sizeof(body));
	assert_int_equal(test_status(s.sock, &st2), 0);
	assert_memory_equal(&st.counters, &st2.counters, sizeof(st.counters));
	assert_every_counter(body, &st);
	assert_non_null(strstr(body, "HTTP/1.1 200"));
	assert_non_null(strstr(body, "Content-Type: text/plain; version=0.0.4"));
	assert_non_null(strstr(body, "# HELP pagerd_faults_total "));
	assert_non_null(strstr(body, "# TYPE pagerd_faults_total counter\n"));
	assert_non_null(strstr(body, "# TYPE pagerd_clients gauge\n"));
	assert_true(metric(body, "pagerd_faults_total{kind=\"missing\"}") >= 1);
	assert_true(metric(body, "pagerd_pages_zero_filled_total") >= 1024);
	assert_int_equal(metric(body, "pagerd_clients"), 1);
	assert_int_equal(metric(body, "pagerd_regions"), 1);
	assert_int_equal(metric(body, "pagerd_mapped_bytes"), 4 << 20);
	assert_int_equal(metric(body, "pagerd_resident_bytes"), 4 << 20);
	assert_int_equal(metric(body, "pagerd_resident_pages"), 1024);
	assert_non_null(strstr(body, "\npagerd_uptime_seconds "));
	/* The daemon lock's waits (fault threads, one per CPU here). */
	assert_non_null(strstr(body, "# TYPE pagerd_lock_waits_total counter\n"));
	assert_non_null(strstr(body, "# TYPE pagerd_lock_wait_seconds_total counter\n"));
	(void)metric(body, "pagerd_lock_waits_total"); /* a row, with a number */
	(void)metric(body, "pagerd_lock_wait_seconds_total");
	pager_close(p);

	http_get(port, "GET", "/", body, sizeof(body));
	assert_non_null(strstr(body, "HTTP/1.1 404"));
	http_get(port, "POST", "/metrics", body, sizeof(body));
	assert_null(strstr(body, "HTTP/1.1 200"));
	assert_int_equal(proc_stop(&d), 0);
	scratch_remove(&s);
}

/* ---- who may connect --------------------------------------------------- */

/*
 * In a child running as `uid`: connects and says a control hello.
 * Exits 0 if the hello succeeded, 1 if pagerd replied with a refusal
 * (connected, but not an admin), 2 if pagerd closed the connection
 * (not allowed to connect at all), 3 on anything else.
 */
static int hello_as(const char *sock, uid_t uid, gid_t gid)
{
	pid_t pid = fork();
	int st;

	assert_true(pid >= 0);
	if (pid == 0) {
		int e;

		if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
			_exit(3);
		e = test_control_connect(sock);
		if (e >= 0)
			_exit(0);
		_exit(e == -EACCES ? 1 : e == -ECONNRESET || e == -EPIPE ? 2 : 3);
	}
	while (waitpid(pid, &st, 0) < 0)
		assert_int_equal(errno, EINTR);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void socket_access(void **state)
{
	char *argv[] = { (char *)pagerd_bin(), "--config", NULL, NULL };
	struct passwd *nobody = getpwnam("nobody");
	struct group *gr = NULL;
	struct scratch s;
	struct stat sb;
	struct proc d;
	char text[512];

	(void)state;
	if (geteuid() != 0 || !nobody || !(gr = getgrgid(nobody->pw_gid)))
		skip(); /* needs root to be another user */
	scratch_make(&s);
	argv[2] = s.conf;

	/* socket_mode and socket_group of a socket pagerd binds. */
	snprintf(text, sizeof(text),
		 "socket_path = %s\nsocket_mode = 0660\nsocket_group = %s\nallowed_users = root\n",
		 s.sock, gr->gr_name);
	write_file(s.conf, text);
	proc_start(&d, argv, NULL);
	proc_wait_log(&d, "listening on");
	assert_int_equal(stat(s.sock, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0660);
	assert_int_equal(sb.st_gid, gr->gr_gid);
	/* nobody's group may reach the socket, but allowed_users says no. */
	assert_int_equal(hello_as(s.sock, nobody->pw_uid, nobody->pw_gid), 2);
	proc_wait_log(&d, "refusing a connection from pid");
	assert_int_equal(hello_as(s.sock, 0, 0), 0); /* root always */

	/* Allowed by group, not an admin; then an admin by admin_group,
	 * changed by a reload. */
	snprintf(text, sizeof(text),
		 "socket_path = %s\nsocket_mode = 0660\nsocket_group = %s\nallowed_groups = %s\n",
		 s.sock, gr->gr_name, gr->gr_name);
	write_file(s.conf, text);
	kill(d.pid, SIGHUP);
	proc_wait_log(&d, "allowed_groups: '' -> ");
	proc_wait_log(&d, "reloaded");
	assert_int_equal(hello_as(s.sock, nobody->pw_uid, nobody->pw_gid), 1);
	proc_wait_log(&d, "may not control pagerd");
	strcat(text, "admin_group = ");
	strcat(text, gr->gr_name);
	strcat(text, "\n");
	write_file(s.conf, text);
	kill(d.pid, SIGHUP);
	proc_wait_log(&d, "admin_group: '' -> ");
	proc_wait_log(&d, "reloaded");
	assert_int_equal(hello_as(s.sock, nobody->pw_uid, nobody->pw_gid), 0);
	assert_int_equal(proc_stop(&d), 0);
	scratch_remove(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(notify_ready_status_watchdog_stopping),
		cmocka_unit_test(socket_activation),
		cmocka_unit_test(check_config),
		cmocka_unit_test(sighup_reload),
		cmocka_unit_test(metrics_endpoint),
		cmocka_unit_test(socket_access),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
