/* SPDX-License-Identifier: MIT */
/*
 * pagerd's only way to say anything.  Lines go to stderr with a syslog
 * priority prefix ("<4>...") that journald understands; on a terminal the
 * prefix is replaced by a word.  Nothing is logged per fault at the default
 * level.  errno is the caller's throughout (%m works) and unchanged after.
 *
 * Whatever a client can make happen at will (a refused request, a failed
 * write-back of its pages) is logged through the limited forms below: each
 * (call site, key) pair may log LOG_RL_BURST lines at once and then
 * LOG_RL_PER_SEC a second, and all of them together LOG_RL_ALL_BURST and
 * LOG_RL_ALL_PER_SEC, so that no client can flood the journal.  What was
 * held back is counted and said: "N similar messages suppressed", before
 * the key's next line or when its client goes (log_forget()).
 */
#ifndef PAGERD_LOG_H
#define PAGERD_LOG_H

#include <stdint.h>
#include <syslog.h>

#define LOG_RL_BURST       10
#define LOG_RL_PER_SEC     1
#define LOG_RL_ALL_BURST   200
#define LOG_RL_ALL_PER_SEC 50

void log_set_level(int level);
int log_get_level(void);
int log_parse_level(const char *name); /* -1 if unknown */
const char *log_level_name(int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Rate-limited per (site, key): key is a client id, or LOG_KEY_UID(uid),
 * or 0 for the daemon itself.  site names the call (LOG_SITE). */
void log_limited(int level, const char *site, uint64_t key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Says what was suppressed for `key` and forgets it (its client is gone). */
void log_forget(uint64_t key);

/* CLOCK_MONOTONIC, for the rate limits above and for every timeout and
 * pause of pagerd's: here, at the bottom, so that any layer may ask. */
uint64_t now_ns(void);
uint64_t now_ms(void);

#define LOG_STR_(x) #x
#define LOG_STR(x) LOG_STR_(x)
#define LOG_SITE __FILE__ ":" LOG_STR(__LINE__)
/* Keys of connections not yet (or never) clients: by user. */
#define LOG_KEY_UID(uid) ((1ULL << 63) | (uint64_t)(uint32_t)(uid))

#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* The limited forms, for lines a client can cause. */
#define log_err_rl(key, ...)  log_limited(LOG_ERR, LOG_SITE, (key), __VA_ARGS__)
#define log_warn_rl(key, ...) log_limited(LOG_WARNING, LOG_SITE, (key), __VA_ARGS__)
#define log_info_rl(key, ...) log_limited(LOG_INFO, LOG_SITE, (key), __VA_ARGS__)

#endif
