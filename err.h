/*
 * err.h - the error value every fallible function fills in.
 *
 * Core functions return 0 / -1 (or a pointer / NULL) and, when given a
 * non-NULL struct err, describe the failure there.  Only the CLI prints it,
 * once, and maps its kind to the process exit code (see err_exit_code()).
 */
#ifndef SNAPCTL_ERR_H
#define SNAPCTL_ERR_H

#include <stdarg.h>

/* The kinds are ordered by exit code; keep man/snapctl.1 EXIT STATUS in step. */
enum err_kind {
	ERR_NONE = 0,
	ERR_FAIL,	/* 1: the operation failed; the guest was left as it was */
	ERR_USAGE,	/* 2: bad command line */
	ERR_QEMU,	/* 3: cannot reach or talk to QEMU, or QEMU went away */
	ERR_MISMATCH,	/* 4: refused: checkpoint and VM/disks do not match */
	ERR_LOCKED,	/* 5: the store is locked by another snapctl */
	ERR_NOSPC,	/* 6: no space left for the image */
	ERR_TIMEOUT,	/* 7: a deadline passed */
	ERR_INTR,	/* 8: interrupted by SIGINT/SIGTERM */
	ERR_ATTENTION,	/* 9: the guest could not be put back as it was */
};

#define ERR_MSG_MAX 1024

struct err {
	enum err_kind kind;
	int sys_errno;		/* errno behind the failure, or 0 */
	char qmp_class[64];	/* QMP error class ("GenericError"), or "" */
	char msg[ERR_MSG_MAX];	/* one line, no "snapctl: " prefix */
};

#define ERR_INIT { ERR_NONE, 0, "", "" }

/*
 * Record a failure of the given kind.  e may be NULL.  The first error set
 * wins unless err_clear() is called: later, vaguer failures on the way out
 * do not overwrite the cause.  Always returns -1 so callers can write
 * "return err_set(e, ...)".
 */
int err_set(struct err *e, enum err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Like err_set(), with ": strerror(errno)" appended and errno kept in
 * sys_errno.  ENOSPC and EDQUOT turn the kind into ERR_NOSPC.
 */
int err_sys(struct err *e, enum err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same as err_sys() with an explicit errno value. */
int err_errno(struct err *e, enum err_kind kind, int errnum, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

/* Prefix the message with context: "reading 'x': " + old message. */
void err_prefix(struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Carry a failure recorded in src (a local struct err of a callee or a
 * thread) into dst, prefixed with "ctx: " when ctx is not NULL.  Like
 * err_set(), the first error wins: nothing happens when dst is NULL,
 * already holds an error, or src holds none.  Returns -1 when src holds an
 * error, 0 otherwise, so "return err_propagate(e, &le, NULL)" works.
 */
int err_propagate(struct err *dst, const struct err *src, const char *ctx);

/* Forget a recorded error (to retry, or to report a later one instead). */
void err_clear(struct err *e);

/* True when e holds an error. */
int err_isset(const struct err *e);

/* Process exit code for an error kind (0 for ERR_NONE). */
int err_exit_code(enum err_kind kind);

/* Short name of a kind, for JSON output ("qemu", "nospc", ...). */
const char *err_kind_name(enum err_kind kind);

#endif
