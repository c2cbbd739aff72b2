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

/* Put the default handlers back. */
void sig_release(void);

#endif
