/* SPDX-License-Identifier: MIT */
/*
 * pagerd's only way to say anything.  Lines go to stderr with a syslog
 * priority prefix ("<4>...") that journald understands; on a terminal the
 * prefix is replaced by a word.  Nothing is logged per fault at the default
 * level.
 */
#ifndef PAGERD_LOG_H
#define PAGERD_LOG_H

#include <syslog.h>

void log_set_level(int level);
int log_get_level(void);
int log_parse_level(const char *name); /* -1 if unknown */
const char *log_level_name(int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
