/* SPDX-License-Identifier: MIT */
/*
 * Prometheus text exposition (format 0.0.4) of what pagerctl's status
 * shows, from one table: every counter of common/counters.h (generated:
 * a new counter needs nothing here), then the gauges, one line each.
 *
 * The endpoint is off unless configured and, given only a port, listens on
 * loopback.  A scraper is a peer too: requests are GET or HEAD only, with
 * small header and body limits and a timeout.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "pagerd.h"
#include "stats.h"

struct metrics {
	struct evhttp *http;
};

struct metric {
	const char *name;   /* family */
	const char *kind;   /* NULL, or the value of its kind="" label */
	const char *type;   /* "counter" or "gauge" */
	const char *help;   /* the row's; a row with a kind has its family's */
	size_t offset;      /* of a uint64_t in struct stats_snapshot */
	unsigned divisor;   /* 0 or 1: as is; else printed as value / divisor */
};

#define SNAP(f) offsetof(struct stats_snapshot, f)
#define CTR(f)  offsetof(struct stats_snapshot, counters.f)

static const struct metric metrics[] = {
#define X(name, scope, unit, family, kind, help) \
	{ family, kind, "counter", help, CTR(name), 0 },
	PAGER_COUNTERS(X)
#undef X
	{ "pagerd_clients", NULL, "gauge",
	  "Applications connected (control connections not counted).", SNAP(clients), 0 },
	{ "pagerd_regions", NULL, "gauge", "Regions of all clients.", SNAP(regions), 0 },
	{ "pagerd_mapped_bytes", NULL, "gauge", "Bytes of all regions.", SNAP(mapped_bytes), 0 },
	{ "pagerd_resident_pages", NULL, "gauge",
	  "Pages of all regions in memory.", SNAP(resident_pages), 0 },
	{ "pagerd_resident_bytes", NULL, "gauge",
	  "Bytes of all regions in memory.", SNAP(resident_bytes), 0 },
	{ "pagerd_memory_limit_bytes", NULL, "gauge",
	  "Resident limit for all clients (memory_limit), 0 = none.", SNAP(memory_limit), 0 },
	{ "pagerd_swap_pages", NULL, "gauge",
	  "Pages of swap, in all.", SNAP(swap_total), 0 },
	{ "pagerd_swap_used_pages", NULL, "gauge",
	  "Pages of swap holding data or being written.", SNAP(swap_used), 0 },
	{ "pagerd_swap_io_errors_total", NULL, "counter",
	  "Failed swap reads and writes and bad CRC32Cs.", SNAP(swap_io_errors), 0 },
	{ "pagerd_pool_pages", NULL, "gauge",
	  "Pages kept compressed in the pool now.", SNAP(pool_pages), 0 },
	{ "pagerd_pool_bytes", NULL, "gauge",
	  "Memory the compressed pool takes now (counted in the limits).", SNAP(pool_bytes), 0 },
	{ "pagerd_writeback_pages", NULL, "gauge",
	  "Pages being written to swap now.", SNAP(writeback_pages), 0 },
	{ "pagerd_swap_bad_pages", NULL, "gauge",
	  "Pages of swap retired after a write to them failed.", SNAP(swap_bad), 0 },
	{ "pagerd_swap_failing", NULL, "gauge",
	  "1 while swap writes fail and write-back is paused.", SNAP(swap_failing), 0 },
	{ "pagerd_over_limit", NULL, "gauge",
	  "1 while nothing can be evicted and resident memory may exceed the limits.",
	  SNAP(over_limit), 0 },
	{ "pagerd_lock_waits_total", NULL, "counter",
	  "Times a thread of pagerd found the daemon lock taken and waited.",
	  SNAP(lock_waits), 0 },
	{ "pagerd_lock_wait_seconds_total", NULL, "counter",
	  "Seconds threads of pagerd waited for the daemon lock, in all.",
	  SNAP(lock_wait_ns), 1000000000 },
	{ "pagerd_uptime_seconds", NULL, "gauge",
	  "Seconds since pagerd started.", SNAP(uptime_ms), 1000 },
};
#define NMETRICS (sizeof(metrics) / sizeof(metrics[0]))

static const struct {
	const char *name, *help;
} families[] = {
#define F(name, help) { name, help },
	PAGER_COUNTER_FAMILIES(F)
#undef F
};

/* The HELP line of a row: its family's when it has a kind. */
static const char *help_of(const struct metric *m)
{
	if (!m->kind)
		return m->help;
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		if (strcmp(families[i].name, m->name) == 0)
			return families[i].help;
	return m->help;
}

static void add_row(struct evbuffer *out, const struct metric *m,
		    const struct stats_snapshot *s)
{
	uint64_t v;

	memcpy(&v, (const char *)s + m->offset, sizeof(v));
	evbuffer_add_printf(out, "%s", m->name);
	if (m->kind)
		evbuffer_add_printf(out, "{kind=\"%s\"}", m->kind);
	if (m->divisor > 1)
		evbuffer_add_printf(out, " %.3f\n", (double)v / m->divisor);
	else
		evbuffer_add_printf(out, " %" PRIu64 "\n", v);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
	struct daemon *d = arg;
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	struct stats_snapshot s;

	stats_snapshot(d, false, &s);
	/* A family's rows must be adjacent: each family is written whole
	 * where its first row is, wherever the table has the others. */
	for (size_t i = 0; i < NMETRICS; i++) {
		const struct metric *m = &metrics[i];
		bool seen = false;

		for (size_t j = 0; j < i && !seen; j++)
			seen = strcmp(metrics[j].name, m->name) == 0;
		if (seen)
			continue;
		evbuffer_add_printf(out, "# HELP %s %s\n", m->name, help_of(m));
		evbuffer_add_printf(out, "# TYPE %s %s\n", m->name, m->type);
		for (size_t j = i; j < NMETRICS; j++)
			if (strcmp(metrics[j].name, m->name) == 0)
				add_row(out, &metrics[j], &s);
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", out);
}

static void on_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	evhttp_send_error(req, HTTP_NOTFOUND, "pagerd serves /metrics only");
}

/* The address actually bound (the port may have been 0). */
static void log_bound(struct evhttp_bound_socket *bs)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
			port = ntohs(s6->sin6_port);
			log_info("metrics on http://[%s]:%u/metrics", host, port);
			return;
		}
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	log_info("metrics on http://%s:%u/metrics", host, port);
}

int metrics_start(struct daemon *d)
{
	struct evhttp_bound_socket *bs;
	struct metrics *m;
	char host[256];
	unsigned port;

	if (!*d->cfg.metrics_address)
		return 0;
	if (config_parse_address(d->cfg.metrics_address, host, sizeof(host), &port) < 0)
		return -EINVAL; /* config.c checked it already */
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->http = evhttp_new(d->base);
	if (!m->http) {
		free(m);
		return -ENOMEM;
	}
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_max_headers_size(m->http, 8192);
	evhttp_set_max_body_size(m->http, 1024);
	evhttp_set_timeout(m->http, 10);
	evhttp_set_cb(m->http, "/metrics", on_metrics, d);
	evhttp_set_gencb(m->http, on_other, d);
	bs = evhttp_bind_socket_with_handle(m->http, host, (ev_uint16_t)port);
	if (!bs) {
		int e = errno ? -errno : -EADDRNOTAVAIL;

		log_err("cannot serve metrics on %s: %s", d->cfg.metrics_address, strerror(-e));
		evhttp_free(m->http);
		free(m);
		return e;
	}
	log_bound(bs);
	d->metrics = m;
	return 0;
}

void metrics_stop(struct daemon *d)
{
	if (!d->metrics)
		return;
	evhttp_free(d->metrics->http);
	free(d->metrics);
	d->metrics = NULL;
}
