/*
 * proc.h - a child process that snapctl starts and watches: spawned (no
 * fork() in a threaded process) in a session of its own, with stdin from
 * /dev/null and stdout and stderr to a log file; then asked whether it
 * still runs, stopped, and its log's last line quoted when it ended.
 * Never prints.
 */
#ifndef SNAPCTL_PROC_H
#define SNAPCTL_PROC_H

#include <sys/types.h>

#include "err.h"

struct proc;

/*
 * Start argv[0] (searched in PATH) with argv, in a new session, an empty
 * signal mask and SIGINT, SIGTERM, SIGHUP and SIGPIPE at their defaults;
 * stdin from /dev/null; stdout and stderr to log, created 0600 (or
 * truncated; not through a symlink).  what names the program in messages
 * ("QEMU").  Returns the handle (free with proc_free), or NULL with e
 * filled: ERR_FAIL "cannot create WHAT's log 'LOG': ...", "cannot open
 * /dev/null: ...", "cannot fork: ...".
 *
 * A program that cannot be run is reported as a shell would: the log gets
 * "snapctl: cannot run 'ARGV0': REASON" and the handle is one of a process
 * that exited with status 127, which proc_alive() then says.
 */
struct proc *proc_spawn(char *const argv[], const char *log,
    const char *what, struct err *e);

/* Its process id while it runs (not yet reaped), else 0. */
pid_t proc_pid(const struct proc *p);

/*
 * Wait up to timeout_ms (0: just look, -1: no limit) for it to end, and
 * reap it.  Returns 1 if it has ended, 0 if it still runs.
 */
int proc_wait(struct proc *p, int timeout_ms);

/*
 * 0 if it still runs.  Once it has ended, -1 with e filled (ERR_QEMU, as
 * the one program snapctl starts is QEMU): "WHAT exited with status N:
 * LAST LOG LINE (log: 'LOG')" or "WHAT was killed by signal N: ...".
 */
int proc_alive(struct proc *p, struct err *e);

/* 1 if it ended with exit status 0, else 0 (still running, failed). */
int proc_succeeded(const struct proc *p);

/* Stop it if it runs: SIGTERM, then SIGKILL after 3 s; reaped either way. */
void proc_kill(struct proc *p);

/* Release the handle; a process still running is left running.  NULL ok. */
void proc_free(struct proc *p);

#endif
