/*
 * tests/unit/tap.h - TAP output for the unit tests: check() prints
 * "ok N - ..." or "not ok N - ..." and returns the condition, note() a
 * "# ..." line, tap_done() the plan and the exit status.  Included by the
 * one .c file of each test program.
 */
#ifndef SNAPCTL_TESTS_TAP_H
#define SNAPCTL_TESTS_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int tap_n, tap_failed;

static int __attribute__((format(printf, 2, 3), unused))
check(int cond, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return cond;
}

static void __attribute__((format(printf, 1, 2), unused))
note(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* The plan line; the exit status for main(). */
static int __attribute__((unused))
tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#endif
