/* SPDX-License-Identifier: MIT */
/*
 * Talking to systemd (sd_notify): READY=1 once pagerd serves, STATUS=
 * lines, WATCHDOG=1 from the event loop at half the watchdog interval,
 * RELOADING=1 around a SIGHUP, STOPPING=1 on the way out.  Every call is a
 * no-op without $NOTIFY_SOCKET, and for a private daemon (which belongs to
 * its application, not to the service manager).
 */
#ifndef PAGERD_NOTIFY_H
#define PAGERD_NOTIFY_H

struct daemon;

/* Arms the status and watchdog timer.  Returns 0 or -errno. */
int notify_start(struct daemon *d);
void notify_ready(struct daemon *d);
void notify_reloading(struct daemon *d);
void notify_stopping(struct daemon *d);
/* Frees what notify_start() made; NULL-safe on d->notify. */
void notify_stop(struct daemon *d);

#endif
