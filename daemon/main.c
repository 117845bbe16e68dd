/* SPDX-License-Identifier: MIT */
/*
 * pagerd: options, the listening socket, signals and the event loop.
 *
 *   pagerd --socket PATH [options]   serve every client that connects
 *   pagerd --private-fd=N [options]  serve the one client on fd N (libpager
 *                                    starts this), exit when it goes
 *
 * Under systemd the listening socket may come from socket activation
 * (LISTEN_FDS); readiness is reported with sd_notify once pagerd serves.
 */
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pagerd.h"
#include "pager.h"
#include "size.h"
#include "swap.h"

/* Swap made for a daemon given a limit but no --swap. */
#define DEFAULT_SWAP_SIZE (4ULL << 30)

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

uint64_t now_ms(void)
{
	return now_ns() / 1000000;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: pagerd --socket PATH [OPTIONS]\n"
		"       pagerd --private-fd=N [OPTIONS]\n"
		"\n"
		"The user-space pager daemon: serves page faults on libpager regions.\n"
		"\n"
		"  -s, --socket PATH         listen on this Unix socket (default %s)\n"
		"      --private-fd N        serve the one client connected on fd N\n"
		"  -m, --memory-limit SIZE   resident memory limit (K/M/G/T suffixes)\n"
		"      --swap PATH           swap file (created if missing) or block device\n"
		"      --swap-size SIZE      swap size (default: the file's, or 4G for a new one)\n"
		"      --client-limit SIZE   resident memory limit of each client\n"
		"      --high-watermark PCT  background eviction starts here (default 95)\n"
		"      --low-watermark PCT   ... and stops here (default 90)\n"
		"      --policy clock|fifo   eviction policy (default clock)\n"
		"      --test-hooks          accept fault injection requests (tests only)\n"
		"      --max-region SIZE     largest region a client may create (default 1T)\n"
		"      --max-regions N       regions per client (default 4096)\n"
		"      --max-clients N       clients at once (default 1024)\n"
		"      --fault-around N      most pages filled for one sequential fault (default 512)\n"
		"      --fault-spin USEC     after a fault, poll for the next this long (default 0: off;\n"
		"                            no clear win measured in a VM)\n"
		"  -l, --log-level LEVEL     error, warning, notice, info, debug (default info)\n"
		"  -f, --foreground          accepted for compatibility: pagerd never forks\n"
		"  -h, --help\n",
		PAGER_SYSTEM_SOCKET);
}

static int parse_args(struct config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "private-fd", required_argument, NULL, 'P' },
		{ "memory-limit", required_argument, NULL, 'm' },
		{ "swap", required_argument, NULL, 'S' },
		{ "swap-size", required_argument, NULL, 'Z' },
		{ "client-limit", required_argument, NULL, 'L' },
		{ "high-watermark", required_argument, NULL, 'H' },
		{ "low-watermark", required_argument, NULL, 'O' },
		{ "policy", required_argument, NULL, 'p' },
		{ "test-hooks", no_argument, NULL, 'T' },
		{ "max-region", required_argument, NULL, 'R' },
		{ "max-regions", required_argument, NULL, 'N' },
		{ "max-clients", required_argument, NULL, 'C' },
		{ "fault-around", required_argument, NULL, 'A' },
		{ "fault-spin", required_argument, NULL, 'W' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	uint64_t v;
	int o, lvl;

	while ((o = getopt_long(argc, argv, "s:m:l:fh", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			cfg->socket_path = optarg;
			break;
		case 'P':
			if (parse_u64(optarg, &v) < 0 || v > 1 << 20)
				goto bad;
			cfg->private_fd = (int)v;
			break;
		case 'm':
			if (parse_size(optarg, &cfg->memory_limit) < 0)
				goto bad;
			break;
		case 'S':
			cfg->swap_path = optarg;
			break;
		case 'Z':
			if (parse_size(optarg, &cfg->swap_size) < 0)
				goto bad;
			break;
		case 'L':
			if (parse_size(optarg, &cfg->client_memory_limit) < 0)
				goto bad;
			break;
		case 'H':
		case 'O':
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 100)
				goto bad;
			if (o == 'H')
				cfg->high_watermark = (unsigned)v;
			else
				cfg->low_watermark = (unsigned)v;
			break;
		case 'p':
			if (strcmp(optarg, "clock") == 0)
				cfg->policy = POLICY_CLOCK;
			else if (strcmp(optarg, "fifo") == 0)
				cfg->policy = POLICY_FIFO;
			else
				goto bad;
			break;
		case 'T':
			cfg->test_hooks = true;
			break;
		case 'R':
			if (parse_size(optarg, &cfg->max_region_bytes) < 0 ||
			    cfg->max_region_bytes == 0)
				goto bad;
			break;
		case 'N':
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 1 << 20)
				goto bad;
			cfg->max_regions = (unsigned)v;
			break;
		case 'C':
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 1 << 20)
				goto bad;
			cfg->max_clients = (unsigned)v;
			break;
		case 'A':
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 1 << 16)
				goto bad;
			cfg->fault_around_max = (unsigned)v;
			break;
		case 'W':
			if (parse_u64(optarg, &v) < 0 || v > 10000)
				goto bad;
			cfg->fault_spin_us = (unsigned)v;
			break;
		case 'l':
			if ((lvl = log_parse_level(optarg)) < 0)
				goto bad;
			log_set_level(lvl);
			break;
		case 'f':
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pagerd: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (cfg->low_watermark >= cfg->high_watermark) {
		fprintf(stderr, "pagerd: the low watermark (%u%%) must be below the high one (%u%%)\n",
			cfg->low_watermark, cfg->high_watermark);
		return -EINVAL;
	}
	return 0;
bad:
	fprintf(stderr, "pagerd: invalid value '%s' for -%c/--%s\n", optarg,
		isalpha(o) && islower(o) ? o : '-', argv[optind - 1] + 2);
	return -EINVAL;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
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
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(s, 128) < 0) {
		int e = -errno;

		close(s);
		return e;
	}
	return s;
}

/* The listening socket: systemd's if socket-activated, else our own. */
static int open_listener(struct daemon *d)
{
	int n = sd_listen_fds(1);

	if (n > 1) {
		log_err("socket activation passed %d sockets, expected one", n);
		return -EINVAL;
	}
	if (n == 1) {
		d->listen_fd = SD_LISTEN_FDS_START;
		if (sd_is_socket_unix(d->listen_fd, SOCK_SEQPACKET, 1, NULL, 0) <= 0) {
			log_err("socket activation passed a socket that is not a listening SOCK_SEQPACKET Unix socket");
			return -EINVAL;
		}
		fcntl(d->listen_fd, F_SETFL, fcntl(d->listen_fd, F_GETFL) | O_NONBLOCK);
		log_info("listening on the socket systemd passed");
		return 0;
	}
	d->listen_fd = listen_unix(d->cfg.socket_path);
	if (d->listen_fd < 0) {
		log_err("cannot listen on %s: %s", d->cfg.socket_path,
			strerror(-d->listen_fd));
		return d->listen_fd;
	}
	log_info("listening on %s", d->cfg.socket_path);
	return 0;
}

/*
 * Opens the swap store.  Without --swap, a daemon with a limit gets an
 * unnamed swap file in /var/tmp (a private daemon from PAGER_MEMORY_LIMIT
 * alone should just work): created, opened, then unlinked, so that it goes
 * with the daemon.
 */
static int open_swap(struct daemon *d)
{
	const char *path = d->cfg.swap_path;
	uint64_t size = d->cfg.swap_size;
	char tmp[64];
	struct stat st;
	int e;

	if (!path) {
		if (!d->cfg.memory_limit && !d->cfg.client_memory_limit)
			return 0;
		const char *dir = getenv("PAGERD_SWAP_DIR");

		snprintf(tmp, sizeof(tmp), "%s/pagerd-swap.%d",
			 dir && *dir && strlen(dir) < 32 ? dir : "/var/tmp", (int)getpid());
		path = tmp;
		unlink(tmp);
	}
	if (!size && stat(path, &st) < 0 && errno == ENOENT)
		size = DEFAULT_SWAP_SIZE;
	size -= size % d->page_size;
	e = swap_open(&d->swap, d->base, path, size, d->page_size);
	if (e < 0) {
		log_err("cannot use swap %s: %s", path, strerror(-e));
		return e;
	}
	if (path == tmp)
		unlink(tmp);
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
				log_warn("accept: %m");
			return;
		}
		if (client_accept(d, s) < 0)
			close(s);
	}
}

static void on_signal(int sig, short what, void *arg)
{
	struct daemon *d = arg;

	(void)what;
	log_info("%s: shutting down", strsignal(sig));
	sd_notify(0, "STOPPING=1");
	event_base_loopbreak(d->base);
}

int main(int argc, char **argv)
{
	struct daemon d = {
		.cfg = {
			.socket_path = PAGER_SYSTEM_SOCKET,
			.private_fd = -1,
			.max_region_bytes = 1ULL << 40,
			.max_regions = 4096,
			.max_clients = 1024,
			.fault_around_max = 512,
			.fault_spin_us = 0,
			.high_watermark = 95,
			.low_watermark = 90,
			.policy = POLICY_CLOCK,
		},
		.listen_fd = -1,
	};
	struct event *sigs[2] = { NULL, NULL };
	int rc = 1;

	if (parse_args(&d.cfg, argc, argv) < 0)
		return 2;
	d.page_size = (size_t)sysconf(_SC_PAGESIZE);
	/* Polling for the next fault only pays where the app has a CPU. */
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		d.cfg.fault_spin_us = 0;
	d.start_ms = now_ms();
	/* A client that dies mid-write must not kill us. */
	signal(SIGPIPE, SIG_IGN);

	d.base = event_base_new();
	if (!d.base) {
		log_err("cannot create the event loop");
		return 1;
	}
	evict_init(&d);
	if (!d.evict_ev || open_swap(&d) < 0)
		goto out;

	if (d.cfg.private_fd >= 0) {
		/* A private daemon belongs to one process: keep terminal
		 * signals (Ctrl-C to the app's process group) away from it,
		 * or its client's next fault would wait forever. */
		setsid();
		if (log_get_level() == LOG_INFO)
			log_set_level(LOG_WARNING);
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
	}
	sigs[0] = evsignal_new(d.base, SIGTERM, on_signal, &d);
	sigs[1] = evsignal_new(d.base, SIGINT, on_signal, &d);
	if (!sigs[0] || !sigs[1] || evsignal_add(sigs[0], NULL) < 0 ||
	    evsignal_add(sigs[1], NULL) < 0)
		goto out;

	sd_notify(0, "READY=1\nSTATUS=serving");
	event_base_dispatch(d.base);
	rc = 0;
out:
	clients_destroy_all(&d);
	swap_close(d.swap);
	if (d.evict_ev)
		event_free(d.evict_ev);
	for (int i = 0; i < 2; i++)
		if (sigs[i])
			event_free(sigs[i]);
	if (d.listen_ev)
		event_free(d.listen_ev);
	if (d.listen_fd >= 0) {
		close(d.listen_fd);
		if (sd_listen_fds(0) <= 0 && d.cfg.private_fd < 0)
			unlink(d.cfg.socket_path);
	}
	event_base_free(d.base);
	libevent_global_shutdown();
	return rc;
}
