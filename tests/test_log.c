/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for pagerd's log (daemon/log.c): %m prints the caller's errno
 * when stderr is no terminal (journald's socket, a file), and the rate
 * limits: a key floods no more than its burst, every line held back is
 * counted and said, keys do not share buckets, and all keys together stay
 * under the overall limit.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../daemon/log.c"

/* stderr goes to a file while a test logs; its text is read back. */
static FILE *captured;
static int saved_stderr = -1;

static void capture_start(void)
{
	captured = tmpfile();
	assert_non_null(captured);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_true(dup2(fileno(captured), STDERR_FILENO) >= 0);
}

/* Returns what was logged since capture_start() (to be freed). */
static char *capture_end(void)
{
	long n;
	char *s;

	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	n = ftell(captured);
	assert_true(n >= 0);
	s = calloc(1, (size_t)n + 1);
	assert_non_null(s);
	rewind(captured);
	assert_int_equal(fread(s, 1, (size_t)n, captured), (size_t)n);
	fclose(captured);
	return s;
}

static size_t count(const char *s, const char *what)
{
	size_t n = 0;

	for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

static uint64_t ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The sum of "N similar messages suppressed" over the lines of s. */
static uint64_t suppressed(const char *s)
{
	uint64_t sum = 0;

	for (const char *p = s; (p = strstr(p, " similar messages suppressed"));) {
		const char *q = p;

		while (q > s && q[-1] >= '0' && q[-1] <= '9')
			q--;
		sum += strtoull(q, NULL, 10);
		p += 10;
	}
	return sum;
}

/* %m is the caller's errno, not isatty()'s ENOTTY, and errno survives. */
static void test_errno_kept(void **state)
{
	char *out;

	(void)state;
	log_set_level(LOG_INFO);
	capture_start();
	assert_false(isatty(STDERR_FILENO));
	errno = ENOSPC;
	log_warn("writing: %m");
	assert_int_equal(errno, ENOSPC);
	errno = EACCES;
	log_warn_rl(3, "opening: %m");
	assert_int_equal(errno, EACCES);
	out = capture_end();
	assert_non_null(strstr(out, "<4>writing: No space left on device\n"));
	assert_non_null(strstr(out, "<4>opening: Permission denied\n"));
	assert_null(strstr(out, "Inappropriate ioctl"));
	free(out);
	log_forget(3);
}

/* One key floods: at most its burst (plus what the time taken refilled)
 * gets through, and every line held back is counted when it goes. */
static void test_flood_bounded(void **state)
{
	const int n = 5000;
	uint64_t t0 = ms(), shown, allowed;
	char *out;

	(void)state;
	capture_start();
	for (int i = 0; i < n; i++)
		log_warn_rl(7, "client 7: request %d refused: Bad file descriptor", i);
	allowed = LOG_RL_BURST + (ms() - t0) * LOG_RL_PER_SEC / 1000 + 1;
	log_forget(7);
	out = capture_end();
	shown = count(out, "request ");
	assert_true(shown >= LOG_RL_BURST);
	assert_true(shown <= allowed);
	assert_int_equal(count(out, "client 7: "), shown + 1);
	assert_non_null(strstr(out, "similar messages suppressed (tests/test_log.c:"));
	assert_int_equal(suppressed(out) + shown, (uint64_t)n);
	free(out);
}

/* A flooding key does not silence another: each has its own bucket. */
static void test_keys_separate(void **state)
{
	char *out;

	(void)state;
	capture_start();
	for (int i = 0; i < 1000; i++)
		log_warn_rl(11, "eleven %d", i);
	for (int i = 0; i < LOG_RL_BURST; i++)
		log_warn_rl(12, "twelve %d", i);
	log_forget(11);
	log_forget(12);
	out = capture_end();
	assert_int_equal(count(out, "twelve "), LOG_RL_BURST);
	assert_null(strstr(out, "client 12: "));
	free(out);
}

/* Many keys at once (a user with many connections): all together stay
 * under the overall bucket, and nothing is lost from the count. */
static void test_all_keys_bounded(void **state)
{
	const int keys = 2000;
	uint64_t t0, allowed, shown;
	char *out;

	(void)state;
	/* A full overall bucket to start from. */
	while (ms() - rl_all.last_ms < 1000 * LOG_RL_ALL_BURST / LOG_RL_ALL_PER_SEC)
		rl_all.last_ms -= 1000;
	t0 = ms();
	capture_start();
	for (int k = 1; k <= keys; k++)
		for (int i = 0; i < 3; i++)
			log_warn_rl((uint64_t)(1000 + k), "many %d", i);
	allowed = LOG_RL_ALL_BURST + (ms() - t0) * LOG_RL_ALL_PER_SEC / 1000 + 1;
	for (int k = 1; k <= keys; k++)
		log_forget((uint64_t)(1000 + k));
	out = capture_end();
	shown = count(out, "many ");
	assert_true(shown <= allowed);
	assert_int_equal(suppressed(out) + shown, (uint64_t)keys * 3);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_errno_kept),
		cmocka_unit_test(test_flood_bounded),
		cmocka_unit_test(test_keys_separate),
		cmocka_unit_test(test_all_keys_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
