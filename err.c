/*
 * err.c - filling in struct err; see err.h for the contract.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

static void
err_vset(struct err *e, enum err_kind kind, int errnum, const char *fmt,
    va_list ap)
{
	size_t len;

	if (e == NULL || e->kind != ERR_NONE)
		return;
	if (errnum == ENOSPC || errnum == EDQUOT)
		kind = ERR_NOSPC;
	e->kind = kind;
	e->sys_errno = errnum;
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	if (errnum != 0) {
		len = strlen(e->msg);
		snprintf(e->msg + len, sizeof(e->msg) - len, ": %s",
		    strerror(errnum));
	}
}

int
err_set(struct err *e, enum err_kind kind, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(e, kind, 0, fmt, ap);
	va_end(ap);
	return -1;
}

int
err_sys(struct err *e, enum err_kind kind, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	err_vset(e, kind, saved, fmt, ap);
	va_end(ap);
	errno = saved;
	return -1;
}

int
err_errno(struct err *e, enum err_kind kind, int errnum, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(e, kind, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

void
err_prefix(struct err *e, const char *fmt, ...)
{
	char old[ERR_MSG_MAX];
	size_t len;
	va_list ap;

	if (e == NULL || e->kind == ERR_NONE)
		return;
	memcpy(old, e->msg, sizeof(old));
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	len = strlen(e->msg);
	snprintf(e->msg + len, sizeof(e->msg) - len, "%s", old);
}

int
err_propagate(struct err *dst, const struct err *src, const char *ctx)
{
	if (!err_isset(src))
		return 0;
	if (dst == NULL || err_isset(dst))
		return -1;
	*dst = *src;
	if (ctx != NULL)
		err_prefix(dst, "%s: ", ctx);
	return -1;
}

void
err_clear(struct err *e)
{
	if (e == NULL)
		return;
	e->kind = ERR_NONE;
	e->sys_errno = 0;
	e->qmp_class[0] = '\0';
	e->msg[0] = '\0';
}

int
err_isset(const struct err *e)
{
	return e != NULL && e->kind != ERR_NONE;
}

int
err_exit_code(enum err_kind kind)
{
	return (int)kind;
}

const char *
err_kind_name(enum err_kind kind)
{
	static const char *const names[] = {
		"none", "failed", "usage", "qemu", "mismatch", "locked",
		"nospc", "timeout", "interrupted", "attention",
	};

	if ((unsigned)kind < sizeof(names) / sizeof(names[0]))
		return names[kind];
	return "failed";
}
