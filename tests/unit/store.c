/*
 * tests/unit/store.c - the store's default checkpoint name: UTC to the
 * millisecond, so two checkpoints in one second differ; valid names; later
 * times sort after.
 */
#include <stdio.h>
#include <string.h>

#include "store.h"
#include "tap.h"

int
main(void)
{
	char a[32], b[32], c[32];

	/* 2026-11-23 08:15:00 UTC. */
	store_default_name(1795421700.0, a);
	check(strcmp(a, "20261123T081500.000Z") == 0, "whole second: %s", a);
	store_default_name(1795421700.123, b);
	check(strcmp(b, "20261123T081500.123Z") == 0, "milliseconds: %s", b);
	store_default_name(1795421700.9996, c);
	check(strcmp(c, "20261123T081500.999Z") == 0,
	    "never rounds into the next second: %s", c);
	check(strcmp(a, b) != 0, "two names in one second differ");
	check(strcmp(a, b) < 0 && strcmp(b, c) < 0, "later sorts after");
	store_default_name(1795421701.001, c);
	check(strcmp(b, c) < 0, "the next second sorts after: %s", c);
	check(store_name_check(a, NULL) == 0 && store_name_check(b, NULL) == 0,
	    "valid checkpoint names");
	return tap_done();
}
