/*
 * sig.c - the caught-signal flag (sig.h).  The flag is the one piece of
 * process-wide state besides the options: a signal handler can reach
 * nothing else.
 */
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "sig.h"
#include "util.h"

static volatile sig_atomic_t caught;

static void
on_signal(int signo)
{
	if (caught == 0)
		caught = signo;
}

static void
set_handler(void (*fn)(int))
{
	static const int signos[] = { SIGINT, SIGTERM, SIGHUP };
	struct sigaction sa;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;	/* no SA_RESTART: blocking calls see EINTR */
	for (i = 0; i < sizeof(signos) / sizeof(signos[0]); i++)
		sigaction(signos[i], &sa, NULL);
}

void
sig_catch(void)
{
	caught = 0;
	set_handler(on_signal);
}

int
sig_caught(void)
{
	return caught;
}

void
sig_release(void)
{
	set_handler(SIG_DFL);
}

const char *
sig_name(int sig)
{
	switch (sig) {
	case SIGINT:
		return "SIGINT";
	case SIGTERM:
		return "SIGTERM";
	case SIGHUP:
		return "SIGHUP";
	default:
		return "a signal";
	}
}

int
sig_interrupted(struct err *e)
{
	int sig = sig_caught();

	if (sig == 0)
		return 0;
	err_set(e, ERR_INTR, "interrupted by %s", sig_name(sig));
	return 1;
}

void
sig_test_hold(const char *env, const char *step)
{
	const char *v = getenv(env), *colon;
	uint64_t ms, end;

	if (v == NULL || (colon = strchr(v, ':')) == NULL ||
	    strlen(step) != (size_t)(colon - v) ||
	    strncmp(v, step, (size_t)(colon - v)) != 0 ||
	    parse_u64(colon + 1, 0, 600000, &ms, NULL) < 0)
		return;
	end = now_mono_ms() + ms;
	while (now_mono_ms() < end && sig_caught() == 0)
		poll(NULL, 0, 20);
}
