/* SPDX-License-Identifier: MIT */
/*
 * pagerd: the listening socket, signals and the event loop.
 *
 *   pagerd [--config FILE] [options]  serve every client that connects
 *   pagerd --private-fd=N [options]   serve the one client on fd N (libpager
 *                                     starts this), exit when it goes
 *
 * Settings come from config.c.  Under systemd the listening socket may come
 * from socket activation (LISTEN_FDS); readiness, status and the watchdog
 * go through notify.c.  SIGHUP reloads the configuration file.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "fd.h"
#include "fdstore.h"
#include "io.h"
#include "lock.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "page.h"
#include "pagerd.h"
#include "store.h"
#include "swap.h"
#include "tier.h"

/* Group and mode of a socket we bound (systemd's SocketGroup= and
 * SocketMode= do this for an activated one). */
static int socket_set_access(const struct config *cfg)
{
	gid_t g;

	if (*cfg->socket_group) {
		if (config_group_id(cfg->socket_group, &g) < 0)
			return -ENOENT;
		if (chown(cfg->socket_path, (uid_t)-1, g) < 0)
			return -errno;
	}
	return chmod(cfg->socket_path, cfg->socket_mode) < 0 ? -errno : 0;
}

static int listen_unix(const struct config *cfg)
{
	const char *path = cfg->socket_path;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[sizeof(sa.sun_path)], *slash;
	int s, e;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	/* Started by hand, before tmpfiles or systemd made /run/pagerd. */
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) == 0)
			log_info("created %s", dir);
	}
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return -errno;
	/* A stale socket from a daemon that died is replaced; a live one is
	 * not (connect succeeds: refuse to steal it). */
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(s);
		return -EADDRINUSE;
	}
	unlink(path);
	/* Connections are refused until listen(): nobody gets in before the
	 * socket has its group and mode. */
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		e = -errno;
		goto fail;
	}
	e = socket_set_access(cfg);
	if (e < 0) {
		log_err("cannot set group '%s' and mode %04o of %s: %s", cfg->socket_group,
			cfg->socket_mode, path, strerror(-e));
		unlink(path);
		goto fail;
	}
	if (listen(s, 128) < 0) {
		e = -errno;
		unlink(path);
		goto fail;
	}
	return s;
fail:
	close(s);
	return e;
}

/*
 * The listening socket: systemd's if socket-activated (found by fdstore.c
 * among LISTEN_FDS, beside the descriptors of the fd store), else our own.
 */
static int open_listener(struct daemon *d)
{
	d->listen_fd = fdstore_take_listener(d);
	if (d->listen_fd >= 0) {
		int e = fd_nonblock(d->listen_fd, true);

		d->listen_activated = true;
		if (e < 0) {
			log_err("the socket systemd passed: %s", strerror(-e));
			return e;
		}
		log_info("listening on the socket systemd passed");
		return 0;
	}
	d->listen_fd = listen_unix(&d->cfg);
	if (d->listen_fd < 0) {
		log_err("cannot listen on %s: %s", d->cfg.socket_path,
			strerror(-d->listen_fd));
		return d->listen_fd;
	}
	log_info("listening on %s", d->cfg.socket_path);
	return 0;
}

/*
 * The size of a new swap file at `path` when swap_size does not say:
 * sized to the machine and the disk (config_default_swap_size()), and at
 * least the smallest swap, so that a disk too full for even that gets
 * swap_open()'s message of how much space is missing.
 */
static uint64_t default_swap_size(const struct daemon *d, const char *path)
{
	uint64_t ram = (uint64_t)sysconf(_SC_PHYS_PAGES) * d->page_size;
	uint64_t fs_free = UINT64_MAX, size;
	struct statvfs vfs;
	char dir[PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (statvfs(dir, &vfs) == 0)
		fs_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	size = config_default_swap_size(ram, fs_free, d->page_size);
	if (size < SWAP_MIN_SLOTS * d->page_size)
		size = SWAP_MIN_SLOTS * d->page_size;
	log_info("swap %s: a new file of %" PRIu64 " MiB (memory %" PRIu64 " MiB, %" PRIu64
		 " MiB free there; swap_size sets another size)", path, size >> 20, ram >> 20,
		 fs_free == UINT64_MAX ? 0 : fs_free >> 20);
	return size;
}

/*
 * Opens the swap store.  Without --swap, a daemon with a limit gets an
 * unnamed swap file in /var/tmp (a private daemon from PAGER_MEMORY_LIMIT
 * alone should just work): created, opened, then unlinked, so that it goes
 * with the daemon.
 */
static int open_swap(struct daemon *d)
{
	const char *path = *d->cfg.swap_path ? d->cfg.swap_path : NULL;
	uint64_t size = d->cfg.swap_size;
	char tmp[64];
	struct stat st;
	int e, fd = fdstore_take_swap(d);

	/* A predecessor's unnamed swap, from the fd store: its slots hold
	 * the pages of the clients about to be adopted. */
	if (fd >= 0) {
		e = swap_open_fd(&d->swap, d->io, fd, "(unnamed, from the fd store)",
				 d->page_size);
		if (e == 0) {
			fdstore_swap_opened(d, true, true);
			return 0;
		}
		log_err("cannot use the swap passed in the fd store: %s; its pages are lost",
			strerror(-e));
		close(fd);
	}
	if (!path) {
		if (!d->cfg.memory_limit && !d->cfg.client_memory_limit) {
			fdstore_swap_opened(d, false, false);
			return 0;
		}
		const char *dir = getenv("PAGERD_SWAP_DIR");

		snprintf(tmp, sizeof(tmp), "%s/pagerd-swap.%d",
			 dir && *dir && strlen(dir) < 32 ? dir : "/var/tmp", (int)getpid());
		path = tmp;
		unlink(tmp);
	}
	/* An RBD image (rbd:POOL/IMAGE) has no file to wait for or size. */
	if (path != tmp && !store_rbd_is_path(path))
		fdstore_swap_wait_path(d, path);
	if (!size && !store_rbd_is_path(path) && stat(path, &st) < 0 && errno == ENOENT)
		size = default_swap_size(d, path);
	size -= size % d->page_size;
	e = swap_open(&d->swap, d->io, path, size, d->page_size);
	if (e < 0 && path == tmp) {
		/* A swap nobody asked for: without it the limits still hold
		 * where pages are zero, and pagerd says it exceeds them. */
		log_warn("cannot make a swap file in %s (%s): running without swap",
			 tmp, strerror(-e));
		fdstore_swap_opened(d, false, false);
		return 0;
	}
	if (e < 0) {
		log_err("cannot use swap %s: %s", path, strerror(-e));
		return e;
	}
	if (path == tmp)
		unlink(tmp);
	fdstore_swap_opened(d, path == tmp, false);
	return 0;
}

static void on_accept(int fd, short what, void *arg)
{
	struct daemon *d = arg;

	(void)what;
	for (;;) {
		int s = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (s < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_warn_rl(0, "accept: %m");
			return;
		}
		if (client_accept(d, s) < 0)
			close(s);
	}
}

/* Messages of config.c go to the log; --check-config's to the terminal,
 * without the syslog prefixes. */
static void config_to_log(void *ctx, int level, const char *msg)
{
	const struct config *cfg = ctx;

	if (cfg->check_only)
		fprintf(stderr, "pagerd: %s\n", msg);
	else
		log_msg(level, "%s", msg);
}

/*
 * The configuration file has errors.  Exiting (status 2: systemd does not
 * retry) is right for a first start, but a pagerd that systemd restarted
 * with clients in its fd store would take them all down with it: systemd
 * empties the store of a failed service, and their faults then wait
 * forever.  Such a pagerd runs on the settings its predecessor ran with
 * (kept in the store), or the defaults if there are none, says so in the
 * log, in STATUS= and in pagerctl status, and takes the file at the next
 * reload that finds it good.  Returns 0 to run, or -EINVAL to exit.
 */
static int load_fallback(struct config *cfg, int argc, char **argv,
			 const struct config_log *log)
{
	unsigned errors = cfg->file_errors;
	char *path = strdup(cfg->config_path), from[64];
	bool clients;
	int fd = cfg->private_fd < 0 ? fdstore_peek(&clients) : -1, r = -EINVAL;

	if (cfg->private_fd >= 0 || !clients || !path) {
		free(path);
		return -EINVAL;
	}
	config_free(cfg);
	if (fd >= 0) {
		snprintf(from, sizeof(from), "/proc/self/fd/%d", fd);
		r = config_load_fallback(cfg, argc, argv, from, log);
		cfg->running_on = "the previous pagerd's settings";
	}
	if (r < 0) {
		config_free(cfg);
		r = config_load_fallback(cfg, argc, argv, NULL, log);
		cfg->running_on = "the default settings";
	}
	cfg->file_errors = errors ? errors : 1;
	if (r == 0)
		log_err("%s has %u error%s: running with %s, so as not to strand the clients handed over; fix it and reload (systemctl reload pagerd)",
			path, cfg->file_errors, cfg->file_errors == 1 ? "" : "s", cfg->running_on);
	free(path);
	return r;
}

/* The pool ended a spill: room under a limit, eviction may go on. */
static void pool_spilled(void *d)
{
	evict_kick(d);
}

static void on_signal(int sig, short what, void *arg)
{
	struct daemon *d = arg;

	(void)what;
	if (sig == SIGHUP) {
		notify_reloading(d);
		log_notice("SIGHUP: reloading %s", d->cfg.config_path);
		const struct config_log config_log = { config_to_log, &d->cfg };

		if (config_reload(&d->cfg, &config_log) >= 0) {
			log_set_level(d->cfg.log_level);
			fdstore_config_sync(d);
			tier_configure(d, pool_spilled);
			/* Limits may have dropped: evict down to them. */
			limits_changed(d);
		}
		notify_ready(d);
		return;
	}
	log_info("%s: shutting down", strsignal(sig));
	notify_stopping(d);
	event_base_loopbreak(d->base);
}

/* Every client holds a socket, a uffd and a memfd per region: take the
 * hard limit on open files, not the soft one (systemd's LimitNOFILE= sets
 * both). */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP };
	struct daemon d = { .listen_fd = -1 };
	const struct config_log config_log = { config_to_log, &d.cfg };
	struct event *sigs[3] = { NULL, NULL, NULL };
	unsigned nthreads;
	int rc = 1, r;

	r = config_load(&d.cfg, argc, argv, &config_log);
	if (r > 0 || d.cfg.check_only) {
		if (r == 0)
			config_print(&d.cfg, stdout);
		config_free(&d.cfg);
		return r < 0 ? 1 : 0;
	}
	if (r < 0 && load_fallback(&d.cfg, argc, argv, &config_log) < 0) {
		config_free(&d.cfg);
		return 2;
	}
	log_set_level(d.cfg.log_level);
	log_info("pagerd %s, settings from %s%s", PAGERD_VERSION, d.cfg.config_path,
		 access(d.cfg.config_path, F_OK) == 0 ? " and options" : " (missing: defaults) and options");
	d.page_size = (size_t)sysconf(_SC_PAGESIZE);
	/* Polling for the next fault only pays where the app has a CPU. */
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		d.cfg.fault_spin_us = 0;
	d.start_ms = now_ms();
	/* A client that dies mid-write must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();

	/* Resolved here, not in the settings: a reload compares those. */
	nthreads = d.cfg.fault_threads;
	if (nthreads == FAULT_THREADS_CPUS) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		nthreads = cpus > 0 ? (unsigned)cpus : 1;
	}
	/* Fault threads add the loop's events (eviction, a client's drop)
	 * and wake it: libevent must lock its base. */
	if (nthreads && daemon_lock_libevent() < 0) {
		log_err("libevent without threads: faults are served by the loop alone");
		nthreads = 0;
	}
	d.base = event_base_new();
	if (!d.base) {
		log_err("cannot create the event loop");
		goto out;
	}
	evict_init(&d);
	if (!d.evict_ev || !d.wb_retry_ev || fdstore_open(&d) < 0)
		goto out;
	fdstore_config_sync(&d);
	/* One I/O engine for the swap and every snapshot image. */
	if (io_engine_open(&d.io, d.base) < 0 ||
	    store_rbd_setup(d.base, &(struct store_rbd_client){
		    .conf = d.cfg.ceph_conf, .id = d.cfg.ceph_id,
		    .keyring = d.cfg.ceph_keyring, .timeout_ms = d.cfg.ceph_timeout_ms,
	    }) < 0 || open_swap(&d) < 0)
		goto out;
	tier_configure(&d, pool_spilled);
	/* From here on the loop's thread holds the daemon lock but while it
	 * waits; the threads take it, for clients from the next line on. */
	if (nthreads) {
		daemon_lock_loop(true);
		if (fault_threads_start(&d, nthreads) < 0)
			goto out;
	}

	if (d.cfg.private_fd >= 0) {
		/* A private daemon belongs to one process: keep terminal
		 * signals (Ctrl-C to the app's process group) away from it,
		 * or its client's next fault would wait forever. */
		setsid();
		fcntl(d.cfg.private_fd, F_SETFD, FD_CLOEXEC);
		if (client_accept(&d, d.cfg.private_fd) < 0) {
			log_err("fd %d is not a usable client socket", d.cfg.private_fd);
			goto out;
		}
	} else {
		if (open_listener(&d) < 0)
			goto out;
		d.listen_ev = event_new(d.base, d.listen_fd, EV_READ | EV_PERSIST,
					on_accept, &d);
		if (!d.listen_ev || event_add(d.listen_ev, NULL) < 0)
			goto out;
		/* Clients a previous pagerd handed to systemd's fd store. */
		fdstore_adopt(&d);
	}
	for (int i = 0; i < 3; i++) {
		sigs[i] = evsignal_new(d.base, signals[i], on_signal, &d);
		if (!sigs[i] || evsignal_add(sigs[i], NULL) < 0)
			goto out;
	}
	if (metrics_start(&d) < 0 || notify_start(&d) < 0)
		goto out;

	notify_ready(&d);
#ifdef PAGERD_CHECK_INVARIANTS
	/* Test builds: the page invariants are checked after every turn of
	 * the loop (every event handled), and a violation aborts. */
	log_notice("page invariants checked after every event");
	while (!event_base_got_break(d.base) && !event_base_got_exit(d.base) &&
	       event_base_loop(d.base, EVLOOP_ONCE) == 0) {
		page_check_daemon(&d);
		if (swapin_check_daemon(&d))
			abort();
	}
#else
	event_base_dispatch(d.base);
#endif
	rc = 0;
	/* Their reads complete first: what the store hands over must not
	 * change under it. */
	fault_threads_stop(&d);
	/* Under systemd with the fd store, the clients live on in it: a
	 * successor takes them over. */
	fdstore_handover(&d);
out:
	fault_threads_stop(&d);
	daemon_lock_loop(false);
	clients_destroy_all(&d);
	swap_close(d.swap);
	store_rbd_shutdown();
	io_engine_close(d.io);
	if (d.evict_ev)
		event_free(d.evict_ev);
	if (d.wb_retry_ev)
		event_free(d.wb_retry_ev);
	for (int i = 0; i < 3; i++)
		if (sigs[i])
			event_free(sigs[i]);
	if (d.listen_ev)
		event_free(d.listen_ev);
	if (d.listen_fd >= 0) {
		close(d.listen_fd);
		/* Only the socket we bound: systemd's stays for the next
		 * pagerd (its clients connect to it meanwhile). */
		if (!d.listen_activated && d.cfg.private_fd < 0)
			unlink(d.cfg.socket_path);
	}
	fdstore_close(&d);
	metrics_stop(&d);
	notify_stop(&d);
	if (d.base)
		event_base_free(d.base);
	libevent_global_shutdown();
	config_free(&d.cfg);
	return rc;
}
