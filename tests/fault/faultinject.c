/*
 * tests/fault/faultinject.c - an LD_PRELOAD shim that makes the Nth call of
 * a file-system function fail with a chosen errno (after jq's
 * src/inject_errors.c), so tests can hit every write, fsync and rename of a
 * command without a full disk or a bad drive.  Built as build/faultinject.so.
 *
 * Environment:
 *   SNAPCTL_FAULT=FN:N:ERRNO[,FN:N:ERRNO...]
 *	fail the Nth counted call of FN (once) with ERRNO, a name (ENOSPC,
 *	EIO, EDQUOT, EROFS, EACCES, EEXIST, ENOENT, EPERM, EINTR) or a number.
 *	FN is one of write pwrite fsync fdatasync rename renameat renameat2
 *	open openat; pwrite64, open64 and openat64 count as their plain names.
 *   SNAPCTL_FAULT_PATH=DIR
 *	count only calls on DIR itself or on paths under it (for fd calls, the
 *	fd's /proc/self/fd link; for renames, either path).  Unset: every call.
 *   SNAPCTL_FAULT_LOG=FILE
 *	append "FN N PATH" for every counted call, and "FN N PATH FAILED
 *	ERRNO" for the one made to fail: how a test learns how many calls of
 *	each kind a command makes along its path.
 *   SNAPCTL_FAULT_SLOW_CREATE=MS
 *	every open or openat with O_CREAT (under SNAPCTL_FAULT_PATH when
 *	set) first sleeps MS milliseconds, signals or not, then is made: a
 *	process (QEMU making an image) still about to create a file when
 *	another gives up on it.  Logged as "slow PATH MS".
 * Never fails a call it does not count; the shim itself calls only the real
 * functions (through dlsym(RTLD_NEXT)) and raw system calls.  The
 * environment is read once, before main() (or at the first call).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum fn { F_WRITE, F_PWRITE, F_FSYNC, F_FDATASYNC, F_RENAME, F_RENAMEAT,
	F_RENAMEAT2, F_OPEN, F_OPENAT, F_N };

static const char *const fn_names[F_N] = {
	"write", "pwrite", "fsync", "fdatasync", "rename", "renameat",
	"renameat2", "open", "openat",
};

#define MAX_RULES 16

static struct rule {
	enum fn fn;
	unsigned long nth;
	int err;
} rules[MAX_RULES];
static int nrules = -1;		/* -1: environment not read yet */
static unsigned long counts[F_N];
static const char *only;	/* SNAPCTL_FAULT_PATH, or NULL */
static size_t only_len;
static int logfd = -1;
static long slow_ms;		/* SNAPCTL_FAULT_SLOW_CREATE */

static const struct { const char *name; int err; } errnos[] = {
	{ "ENOSPC", ENOSPC }, { "EIO", EIO }, { "EDQUOT", EDQUOT },
	{ "EROFS", EROFS }, { "EACCES", EACCES }, { "EEXIST", EEXIST },
	{ "ENOENT", ENOENT }, { "EPERM", EPERM }, { "EINTR", EINTR },
};

static void
say(const char *fmt, ...)
{
	char line[PATH_MAX + 128];
	va_list ap;
	int n;

	if (logfd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!syscall(SYS_write, logfd, line, (size_t)n);
}

/* Also run lazily: a library's constructor may open files before ours. */
static void __attribute__((constructor))
setup(void)
{
	const char *spec = getenv("SNAPCTL_FAULT"), *lf, *sl;
	char buf[512], *tok, *save = NULL, *a, *b;
	int i, k;

	if (__atomic_load_n(&nrules, __ATOMIC_ACQUIRE) >= 0)
		return;
	only = getenv("SNAPCTL_FAULT_PATH");
	if (only != NULL && only[0] == '\0')
		only = NULL;
	only_len = only != NULL ? strlen(only) : 0;
	while (only_len > 1 && only[only_len - 1] == '/')
		only_len--;
	sl = getenv("SNAPCTL_FAULT_SLOW_CREATE");
	slow_ms = sl != NULL ? strtol(sl, NULL, 10) : 0;
	lf = getenv("SNAPCTL_FAULT_LOG");
	if (lf != NULL && lf[0] != '\0')
		logfd = (int)syscall(SYS_openat, AT_FDCWD, lf,
		    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	k = 0;
	if (spec != NULL && strlen(spec) < sizeof(buf)) {
		memcpy(buf, spec, strlen(spec) + 1);
		for (tok = strtok_r(buf, ",", &save); tok != NULL &&
		    k < MAX_RULES; tok = strtok_r(NULL, ",", &save)) {
			a = strchr(tok, ':');
			b = a != NULL ? strchr(a + 1, ':') : NULL;
			if (b == NULL)
				continue;
			*a++ = '\0';
			*b++ = '\0';
			for (i = 0; i < F_N && strcmp(fn_names[i], tok); i++)
				;
			if (i == F_N)
				continue;
			rules[k].fn = (enum fn)i;
			rules[k].nth = strtoul(a, NULL, 10);
			rules[k].err = (int)strtol(b, NULL, 10);
			for (i = 0; i < (int)(sizeof(errnos) /
			    sizeof(errnos[0])); i++)
				if (strcmp(errnos[i].name, b) == 0)
					rules[k].err = errnos[i].err;
			if (rules[k].nth > 0 && rules[k].err > 0)
				k++;
		}
	}
	__atomic_store_n(&nrules, k, __ATOMIC_RELEASE);
}

static int
under(const char *path)
{
	if (only == NULL)
		return 1;
	if (path == NULL || strncmp(path, only, only_len) != 0)
		return 0;
	return path[only_len] == '\0' || path[only_len] == '/' ||
	    only[only_len - 1] == '/';
}

/* The absolute path of dirfd + path (best effort; "?" if unknown). */
static void
resolve(int dirfd, const char *path, char *out, size_t size)
{
	char link[64], dir[PATH_MAX];
	ssize_t n;

	if (path != NULL && path[0] == '/') {
		snprintf(out, size, "%s", path);
		return;
	}
	if (dirfd == AT_FDCWD) {
		if (getcwd(dir, sizeof(dir)) == NULL)
			snprintf(dir, sizeof(dir), "?");
	} else {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
		n = readlink(link, dir, sizeof(dir) - 1);
		dir[n > 0 ? n : 0] = '\0';
	}
	if (path == NULL || path[0] == '\0' || strcmp(path, ".") == 0) {
		snprintf(out, size, "%s", dir);
	} else {
		size_t d = strlen(dir), l = strlen(path);

		if (d + 1 + l >= size) {
			snprintf(out, size, "?");
			return;
		}
		memcpy(out, dir, d);
		out[d] = '/';
		memcpy(out + d + 1, path, l + 1);
	}
}

/*
 * Count a call of fn on path (and path2, for renames) if it is one we
 * watch; 0 to let it through, or the errno to fail it with.
 */
static int
fault(enum fn fn, const char *path, const char *path2)
{
	unsigned long n;
	int i;

	if (!under(path) && !under(path2))
		return 0;
	n = __atomic_add_fetch(&counts[fn], 1, __ATOMIC_RELAXED);
	for (i = 0; i < nrules; i++) {
		if (rules[i].fn == fn && rules[i].nth == n) {
			say("%s %lu %s FAILED %d", fn_names[fn], n,
			    path != NULL ? path : "?", rules[i].err);
			return rules[i].err;
		}
	}
	say("%s %lu %s", fn_names[fn], n, path != NULL ? path : "?");
	return 0;
}

static int
fault_fd(enum fn fn, int fd)
{
	char p[PATH_MAX];
	int saved = errno, err;

	setup();
	if (nrules == 0 && logfd < 0)
		return 0;
	resolve(fd, NULL, p, sizeof(p));
	err = fault(fn, p, NULL);
	errno = saved;
	return err;
}

static int
fault_at(enum fn fn, int dirfd, const char *path, int dirfd2,
    const char *path2)
{
	char p[PATH_MAX], p2[PATH_MAX];
	int saved = errno, err;

	setup();
	if (nrules == 0 && logfd < 0)
		return 0;
	resolve(dirfd, path, p, sizeof(p));
	if (path2 != NULL)
		resolve(dirfd2, path2, p2, sizeof(p2));
	err = fault(fn, p, path2 != NULL ? p2 : NULL);
	errno = saved;
	return err;
}

/* SNAPCTL_FAULT_SLOW_CREATE: the whole delay, whatever interrupts it. */
static void
slow_create(int dirfd, const char *path, int flags)
{
	struct timespec ts, rem;
	char p[PATH_MAX];
	int saved = errno;

	setup();
	if (slow_ms <= 0 || !(flags & O_CREAT))
		return;
	resolve(dirfd, path, p, sizeof(p));
	if (!under(p))
		return;
	say("slow %s %ld", p, slow_ms);
	ts.tv_sec = slow_ms / 1000;
	ts.tv_nsec = (slow_ms % 1000) * 1000000L;
	while (nanosleep(&ts, &rem) < 0 && errno == EINTR)
		ts = rem;
	errno = saved;
}

#define REAL(name) \
	static __typeof__(&name) real_; \
	if (real_ == NULL) \
		real_ = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

#define FAIL_WITH(err, rv) do { errno = (err); return (rv); } while (0)

ssize_t
write(int fd, const void *buf, size_t len)
{
	int err;
	REAL(write);

	if ((err = fault_fd(F_WRITE, fd)) != 0)
		FAIL_WITH(err, -1);
	return real_(fd, buf, len);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	int err;
	REAL(pwrite);

	if ((err = fault_fd(F_PWRITE, fd)) != 0)
		FAIL_WITH(err, -1);
	return real_(fd, buf, len, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off64_t off)
{
	int err;
	REAL(pwrite64);

	if ((err = fault_fd(F_PWRITE, fd)) != 0)
		FAIL_WITH(err, -1);
	return real_(fd, buf, len, off);
}

int
fsync(int fd)
{
	int err;
	REAL(fsync);

	if ((err = fault_fd(F_FSYNC, fd)) != 0)
		FAIL_WITH(err, -1);
	return real_(fd);
}

int
fdatasync(int fd)
{
	int err;
	REAL(fdatasync);

	if ((err = fault_fd(F_FDATASYNC, fd)) != 0)
		FAIL_WITH(err, -1);
	return real_(fd);
}

int
rename(const char *from, const char *to)
{
	int err;
	REAL(rename);

	if ((err = fault_at(F_RENAME, AT_FDCWD, from, AT_FDCWD, to)) != 0)
		FAIL_WITH(err, -1);
	return real_(from, to);
}

int
renameat(int fd1, const char *from, int fd2, const char *to)
{
	int err;
	REAL(renameat);

	if ((err = fault_at(F_RENAMEAT, fd1, from, fd2, to)) != 0)
		FAIL_WITH(err, -1);
	return real_(fd1, from, fd2, to);
}

int
renameat2(int fd1, const char *from, int fd2, const char *to,
    unsigned flags)
{
	int err;
	REAL(renameat2);

	if ((err = fault_at(F_RENAMEAT2, fd1, from, fd2, to)) != 0)
		FAIL_WITH(err, -1);
	return real_(fd1, from, fd2, to, flags);
}

/* O_CREAT and O_TMPFILE carry a mode; anything else ignores it. */
#define MODE_ARG(flags, mode) do { \
	va_list ap_; \
	(mode) = 0; \
	if (((flags) & O_CREAT) || ((flags) & O_TMPFILE) == O_TMPFILE) { \
		va_start(ap_, flags); \
		(mode) = (mode_t)va_arg(ap_, int); \
		va_end(ap_); \
	} \
} while (0)

int
open(const char *path, int flags, ...)
{
	mode_t mode;
	int err;
	REAL(open);

	MODE_ARG(flags, mode);
	slow_create(AT_FDCWD, path, flags);
	if ((err = fault_at(F_OPEN, AT_FDCWD, path, AT_FDCWD, NULL)) != 0)
		FAIL_WITH(err, -1);
	return real_(path, flags, mode);
}

int
open64(const char *path, int flags, ...)
{
	mode_t mode;
	int err;
	REAL(open64);

	MODE_ARG(flags, mode);
	slow_create(AT_FDCWD, path, flags);
	if ((err = fault_at(F_OPEN, AT_FDCWD, path, AT_FDCWD, NULL)) != 0)
		FAIL_WITH(err, -1);
	return real_(path, flags, mode);
}

int
openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode;
	int err;
	REAL(openat);

	MODE_ARG(flags, mode);
	slow_create(dirfd, path, flags);
	if ((err = fault_at(F_OPENAT, dirfd, path, AT_FDCWD, NULL)) != 0)
		FAIL_WITH(err, -1);
	return real_(dirfd, path, flags, mode);
}

int
openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode;
	int err;
	REAL(openat64);

	MODE_ARG(flags, mode);
	slow_create(dirfd, path, flags);
	if ((err = fault_at(F_OPENAT, dirfd, path, AT_FDCWD, NULL)) != 0)
		FAIL_WITH(err, -1);
	return real_(dirfd, path, flags, mode);
}
