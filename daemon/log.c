/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int log_level = LOG_INFO;

static const char *const level_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void log_set_level(int level)
{
	log_level = level;
}

int log_get_level(void)
{
	return log_level;
}

const char *log_level_name(int level)
{
	return level >= 0 && level <= LOG_DEBUG ? level_names[level] : "?";
}

int log_parse_level(const char *name)
{
	for (int i = 0; i <= LOG_DEBUG; i++)
		if (strcasecmp(name, level_names[i]) == 0)
			return i;
	if (strcasecmp(name, "warn") == 0)
		return LOG_WARNING;
	if (strcasecmp(name, "err") == 0)
		return LOG_ERR;
	return -1;
}

/*
 * Writes one line.  `err` is the caller's errno, saved before anything here
 * could change it: isatty() sets ENOTTY on a pipe or journald's socket, and
 * %m would then print "Inappropriate ioctl for device".
 */
static void log_vline(int level, int err, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	if (isatty(STDERR_FILENO))
		n = snprintf(line, sizeof(line), "pagerd: %s: ", level_names[level]);
	else
		n = snprintf(line, sizeof(line), "<%d>", level);
	errno = err;
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	strcat(line, "\n");
	/* One write per line so lines from several processes don't mix. */
	if (write(STDERR_FILENO, line, strlen(line)) < 0)
		return;
}

static void log_line(int level, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void log_line(int level, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vline(level, err, fmt, ap);
	va_end(ap);
}

void log_msg(int level, const char *fmt, ...)
{
	int err = errno;
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	log_vline(level, err, fmt, ap);
	va_end(ap);
	errno = err;
}

/* ---- rate limits --------------------------------------------------------- */

/*
 * Token buckets, in thousandths of a line so that refills are exact in
 * milliseconds.  Keys live in a small direct-mapped table: a key pushed out
 * by another says what it had suppressed first, and comes back with a
 * full bucket, which the bucket over all keys still bounds.
 */
#define RL_KEYS 512
#define RL_ONE  1000

struct rl_bucket {
	uint64_t tokens; /* RL_ONE a line */
	uint64_t last_ms;
};

struct rl_key {
	const char *site; /* NULL: unused */
	uint64_t key;
	int level;
	uint64_t suppressed;
	struct rl_bucket b;
};

static struct rl_key rl_keys[RL_KEYS];
static struct rl_bucket rl_all = { LOG_RL_ALL_BURST * RL_ONE, 0 };

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

/* Refills b for the time since it was last looked at, then takes a line
 * if there is one. */
static bool rl_take(struct rl_bucket *b, uint64_t now, uint64_t burst,
		    uint64_t per_sec)
{
	uint64_t t = b->tokens + (now - b->last_ms) * per_sec;

	b->last_ms = now;
	b->tokens = t > burst * RL_ONE ? burst * RL_ONE : t;
	if (b->tokens < RL_ONE)
		return false;
	b->tokens -= RL_ONE;
	return true;
}

static void rl_report(struct rl_key *k)
{
	if (!k->suppressed)
		return;
	if (k->key && !(k->key >> 63))
		log_line(k->level, 0, "client %" PRIu64 ": %" PRIu64 " similar messages suppressed (%s)",
			 k->key, k->suppressed, k->site);
	else
		log_line(k->level, 0, "%" PRIu64 " similar messages suppressed (%s)",
			 k->suppressed, k->site);
	k->suppressed = 0;
}

static size_t rl_slot(const char *site, uint64_t key)
{
	uint64_t h = (uint64_t)(uintptr_t)site * 0x9e3779b97f4a7c15ULL ^ key * 0xff51afd7ed558ccdULL;

	return (size_t)((h ^ (h >> 29)) % RL_KEYS);
}

void log_limited(int level, const char *site, uint64_t key, const char *fmt, ...)
{
	int err = errno;
	struct rl_key *k;
	uint64_t now;
	va_list ap;
	bool ok;

	if (level > log_level)
		return;
	now = now_ms();
	k = &rl_keys[rl_slot(site, key)];
	if (k->site != site || k->key != key) {
		if (k->site)
			rl_report(k);
		*k = (struct rl_key){ .site = site, .key = key,
				      .b = { LOG_RL_BURST * RL_ONE, now } };
	}
	k->level = level;
	/* The key's own bucket first: a key over its limit must not use
	 * up the lines every key shares. */
	ok = rl_take(&k->b, now, LOG_RL_BURST, LOG_RL_PER_SEC) &&
	     rl_take(&rl_all, now, LOG_RL_ALL_BURST, LOG_RL_ALL_PER_SEC);
	if (!ok) {
		k->suppressed++;
		errno = err;
		return;
	}
	rl_report(k);
	va_start(ap, fmt);
	log_vline(level, err, fmt, ap);
	va_end(ap);
	errno = err;
}

void log_forget(uint64_t key)
{
	int err = errno;

	for (size_t i = 0; i < RL_KEYS; i++) {
		struct rl_key *k = &rl_keys[i];

		if (k->site && k->key == key) {
			rl_report(k);
			k->site = NULL;
		}
	}
	errno = err;
}
