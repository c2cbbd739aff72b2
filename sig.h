/*
 * sig.h - SIGINT/SIGTERM/SIGHUP turned into a flag that long-running work
 * polls, so every exit path can clean up (remove temporary files, resume
 * the guest) instead of dying inside a write.
 */
#ifndef SNAPCTL_SIG_H
#define SNAPCTL_SIG_H

/*
 * Catch SIGINT, SIGTERM and SIGHUP without SA_RESTART, so blocking calls
 * return EINTR.  A second signal of the same kind while the first is being
 * handled is only recorded; cleanup code is never cut short.
 */
void sig_catch(void);

/* The signal caught since sig_catch(), or 0. Async-signal-safe. */
int sig_caught(void);

/* "SIGINT", "SIGTERM", "SIGHUP", or "a signal": how messages name one. */
const char *sig_name(int sig);

/*
 * When a signal was caught, record "interrupted by SIGINT" (ERR_INTR) in e
 * (which may be NULL) and return 1; else 0.  Every command says an
 * interruption this one way.
 */
struct err;
int sig_interrupted(struct err *e);

/*
 * Test hook: when the environment variable env is "STEP:MS" and STEP is
 * step, wait MS milliseconds (at most 600000) or until a signal is caught,
 * so a test can kill snapctl at that step.  Otherwise return at once.
 */
void sig_test_hold(const char *env, const char *step);

/* Put the default handlers back. */
void sig_release(void);

#endif
