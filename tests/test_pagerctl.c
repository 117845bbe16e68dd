/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for pagerctl's JSON strings (pagerctl/pagerctl.c): UTF-8 goes
 * out as it is, quotes, backslashes and control characters are escaped,
 * and bytes that are not well-formed UTF-8 become U+FFFD, so that the
 * output always parses.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* pagerctl itself, its main renamed. */
int pagerctl_main(int argc, char **argv);
#define main pagerctl_main
#include "../pagerctl/pagerctl.c"
#undef main

/* pagerctl's image calls are not under test here (and common/image.c is
 * not linked into unit tests). */
int image_meta_remove(const char *image)
{
	(void)image;
	return -ENOSYS;
}

int image_meta_commit(const char *image, int image_fd, const struct image_meta *m)
{
	(void)image;
	(void)image_fd;
	(void)m;
	return -ENOSYS;
}

/* What json_string(in) prints (to be freed). */
static char *json_of(const char *in)
{
	FILE *f = tmpfile();
	int saved = dup(STDOUT_FILENO);
	char *out;
	long n;

	assert_non_null(f);
	fflush(stdout);
	assert_true(dup2(fileno(f), STDOUT_FILENO) >= 0);
	json_string(in);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	n = ftell(f);
	out = calloc(1, (size_t)n + 1);
	assert_non_null(out);
	rewind(f);
	assert_int_equal(fread(out, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return out;
}

#define assert_json(in, want)                      \
	do {                                       \
		char *o_ = json_of(in);            \
		assert_string_equal(o_, want);     \
		free(o_);                          \
	} while (0)

static void test_utf8_as_is(void **state)
{
	(void)state;
	assert_json("/var/tmp/snäp.img", "\"/var/tmp/snäp.img\"");
	assert_json("日本語/€/😀", "\"日本語/€/😀\"");
	assert_json("plain", "\"plain\"");
}

static void test_escapes(void **state)
{
	(void)state;
	assert_json("a\"b\\c", "\"a\\\"b\\\\c\"");
	assert_json("tab\there\nnl\x7f", "\"tab\\u0009here\\u000anl\\u007f\"");
}

static void test_invalid_utf8(void **state)
{
	(void)state;
	/* Latin-1 ä, a stray continuation byte, an overlong '/', a
	 * surrogate, past U+10FFFF, and a sequence cut short at the end. */
	assert_json("sn\xe4p", "\"sn\\ufffdp\"");
	assert_json("a\x80z", "\"a\\ufffdz\"");
	assert_json("\xc0\xaf", "\"\\ufffd\\ufffd\"");
	assert_json("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");
	assert_json("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
	assert_json("x\xe2\x82", "\"x\\ufffd\\ufffd\"");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8_as_is),
		cmocka_unit_test(test_escapes),
		cmocka_unit_test(test_invalid_utf8),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
