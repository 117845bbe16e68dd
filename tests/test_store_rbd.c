/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the RBD store's names (daemon/store_rbd.c): what
 * swap_path = rbd:... accepts, and that nothing a name holds can step
 * outside its pool, namespace and image.  The store's I/O runs against a
 * real cluster in itest_rbd and itest_rbd_swap.sh.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "../daemon/log.c"
#include "../daemon/store_rbd.c"

static void parse_good(void **state)
{
	struct store_rbd_name n;

	(void)state;
	assert_int_equal(store_rbd_parse("rbd:pool/image", &n), 0);
	assert_string_equal(n.pool, "pool");
	assert_string_equal(n.ns, "");
	assert_string_equal(n.image, "image");
	assert_int_equal(store_rbd_parse("rbd:p-1/uid-1000/swap.img_2", &n), 0);
	assert_string_equal(n.pool, "p-1");
	assert_string_equal(n.ns, "uid-1000");
	assert_string_equal(n.image, "swap.img_2");
	assert_true(store_rbd_is_path("rbd:x/y"));
	assert_false(store_rbd_is_path("/var/lib/pagerd/swap"));
	assert_false(store_rbd_is_path(NULL));
}

static void parse_bad(void **state)
{
	static const char *const bad[] = {
		"rbd:", "rbd:pool", "rbd:pool/", "rbd:/image", "rbd:pool//image",
		"rbd:a/b/c/d", "rbd:pool/../image", "rbd:pool/.hidden", "rbd:.p/i",
		"rbd:pool/im age", "rbd:pool/im\nage", "rbd:pool/ns/", "rbd:pool/ns/im@1",
		"file:pool/image", "pool/image",
	};
	struct store_rbd_name n = { .pool = "untouched" };
	char longname[160];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(store_rbd_parse(bad[i], &n), -EINVAL);
		assert_string_equal(n.pool, "untouched");
	}
	memset(longname, 'a', sizeof(longname));
	memcpy(longname, "rbd:p/", 6);
	longname[6 + STORE_RBD_NAME_MAX + 1] = 0;
	assert_int_equal(store_rbd_parse(longname, &n), -EINVAL);
	longname[6 + STORE_RBD_NAME_MAX] = 0;
	assert_int_equal(store_rbd_parse(longname, &n), 0);
}

/* Opening needs store_rbd_setup() first; a bad name fails before any
 * connection is tried. */
static void open_checks(void **state)
{
	struct store *st = NULL;

	(void)state;
	assert_int_equal(store_rbd_open(&st, "rbd:nope", &(struct store_rbd_opts){ 0 }, NULL),
			 -EINVAL);
	assert_int_equal(store_rbd_open(&st, "rbd:p/i", &(struct store_rbd_opts){ 0 }, NULL),
			 -ENOTCONN);
	assert_null(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_good),
		cmocka_unit_test(parse_bad),
		cmocka_unit_test(open_checks),
	};

	log_set_level(LOG_CRIT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
