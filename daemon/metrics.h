/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus endpoint: GET /metrics over HTTP (libevent's evhttp, in
 * pagerd's one loop), off unless metrics_address is set.
 */
#ifndef PAGERD_METRICS_H
#define PAGERD_METRICS_H

struct daemon;

/* Binds d->cfg.metrics_address and serves it; 0 when off or serving,
 * -errno (logged) when the address cannot be bound. */
int metrics_start(struct daemon *d);
/* NULL-safe on d->metrics. */
void metrics_stop(struct daemon *d);

#endif
