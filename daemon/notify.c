/* SPDX-License-Identifier: MIT */
#include "notify.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "pagerd.h"
#include "stats.h"

/* How often STATUS= is refreshed when no watchdog asks for more. */
#define STATUS_PERIOD_USEC (10 * 1000000ull)

struct notify {
	struct daemon *d;
	struct event *timer;
	uint64_t watchdog_usec; /* 0: no watchdog */
	bool failed;            /* said so once already */
};

static void notify_send(struct notify *n, const char *what, const char *msg)
{
	int r = sd_notify(0, msg);

	/* Once: a manager that went away would otherwise fill the log. */
	if (r < 0 && !n->failed)
		log_warn("sd_notify %s: %s", what, strerror(-r));
	n->failed = r < 0;
}

/* "2 clients, 3 regions, 64.0 MiB resident", and what is wrong with the
 * configuration file, if anything: systemctl status shows it. */
static void status_line(struct daemon *d, char *buf, size_t n)
{
	struct stats_snapshot s;
	int len;

	stats_snapshot(d, false, &s);
	len = snprintf(buf, n, "STATUS=%" PRIu64 " client%s, %" PRIu64 " region%s, %.1f MiB resident",
		       s.clients, s.clients == 1 ? "" : "s", s.regions, s.regions == 1 ? "" : "s",
		       (double)s.resident_bytes / (1 << 20));
	if (d->cfg.file_errors && len > 0 && (size_t)len < n)
		snprintf(buf + len, n - (size_t)len,
			 "; %u error%s in %s, running with %s (see the log)", d->cfg.file_errors,
			 d->cfg.file_errors == 1 ? "" : "s", d->cfg.config_path,
			 d->cfg.running_on ? d->cfg.running_on : "other settings");
}

static void on_tick(int fd, short what, void *arg)
{
	struct notify *n = arg;
	char msg[512];
	size_t len;

	(void)fd;
	(void)what;
	/* Sent from the loop itself: a loop that stops turning stops the
	 * watchdog, and systemd restarts pagerd. */
	len = (size_t)snprintf(msg, sizeof(msg), "%s", n->watchdog_usec ? "WATCHDOG=1\n" : "");
	status_line(n->d, msg + len, sizeof(msg) - len);
	notify_send(n, "watchdog", msg);
}

int notify_start(struct daemon *d)
{
	struct notify *n;
	uint64_t period = STATUS_PERIOD_USEC, usec = 0;
	struct timeval tv;

	if (d->cfg.private_fd >= 0 || !getenv("NOTIFY_SOCKET"))
		return 0;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->d = d;
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		n->watchdog_usec = usec;
		if (usec / 2 < period)
			period = usec / 2;
		log_info("systemd watchdog: every %" PRIu64 " ms", usec / 1000);
	}
	n->timer = event_new(d->base, -1, EV_PERSIST, on_tick, n);
	tv.tv_sec = (time_t)(period / 1000000);
	tv.tv_usec = (suseconds_t)(period % 1000000);
	if (!n->timer || event_add(n->timer, &tv) < 0) {
		if (n->timer)
			event_free(n->timer);
		free(n);
		return -ENOMEM;
	}
	d->notify = n;
	return 0;
}

void notify_ready(struct daemon *d)
{
	char msg[512] = "READY=1\n";

	if (!d->notify)
		return;
	status_line(d, msg + strlen(msg), sizeof(msg) - strlen(msg));
	notify_send(d->notify, "ready", msg);
}

void notify_reloading(struct daemon *d)
{
	if (d->notify)
		notify_send(d->notify, "reloading", "RELOADING=1\nSTATUS=reloading the configuration");
}

void notify_stopping(struct daemon *d)
{
	if (d->notify)
		notify_send(d->notify, "stopping", "STOPPING=1\nSTATUS=shutting down");
}

void notify_stop(struct daemon *d)
{
	if (!d->notify)
		return;
	event_free(d->notify->timer);
	free(d->notify);
	d->notify = NULL;
}
