/*
 * util.c - allocation, byte buffers, parsing, clocks, full I/O, CRC-32C, CPUs.
 * See util.h for the contracts.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static void __attribute__((noreturn))
die_oom(size_t size)
{
	fprintf(stderr, "snapctl: out of memory allocating %zu bytes\n", size);
	exit(1);
}

void *
xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (p == NULL)
		die_oom(size);
	return p;
}

void *
xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

	if (p == NULL)
		die_oom(nmemb * size);
	return p;
}

void *
xrealloc(void *ptr, size_t size)
{
	void *p = realloc(ptr, size ? size : 1);

	if (p == NULL)
		die_oom(size);
	return p;
}

void *
xreallocarray(void *ptr, size_t nmemb, size_t size)
{
	if (size != 0 && nmemb > SIZE_MAX / size)
		die_oom(SIZE_MAX);
	return xrealloc(ptr, nmemb * size);
}

char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		die_oom(strlen(s));
	return p;
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);

	if (p == NULL)
		die_oom(n);
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (n < 0)
		die_oom(0);
	return p;
}

void
buf_grow(struct buf *b, size_t extra)
{
	size_t want;

	if (b->len + extra + 1 <= b->cap)
		return;
	if (b->len + extra + 1 < b->len)
		die_oom(SIZE_MAX);
	want = b->cap ? b->cap : 64;
	while (want < b->len + extra + 1)
		want *= 2;
	b->data = xrealloc(b->data, want);
	b->cap = want;
}

void
buf_add(struct buf *b, const void *data, size_t len)
{
	buf_grow(b, len);
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void
buf_addc(struct buf *b, uint8_t c)
{
	buf_add(b, &c, 1);
}

void
buf_addstr(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void
buf_addf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_grow(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
buf_add_be16(struct buf *b, uint16_t v)
{
	uint8_t p[2];

	put_be16(p, v);
	buf_add(b, p, 2);
}

void
buf_add_be32(struct buf *b, uint32_t v)
{
	uint8_t p[4];

	put_be32(p, v);
	buf_add(b, p, 4);
}

void
buf_add_be64(struct buf *b, uint64_t v)
{
	uint8_t p[8];

	put_be64(p, v);
	buf_add(b, p, 8);
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->data, b->data + n, b->len - n);
		b->len -= n;
	}
	if (b->data != NULL)
		b->data[b->len] = '\0';
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void
buf_release(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

uint16_t
get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

uint64_t
get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

uint32_t
get_le32(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[1] << 8 | p[0];
}

uint64_t
get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p + 4) << 32 | get_le32(p);
}

void
put_be16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = (v >> 16) & 0xff;
	p[2] = (v >> 8) & 0xff;
	p[3] = v & 0xff;
}

void
put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

void
put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = v >> 24;
}

void
put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

int
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out,
    const char **why)
{
	unsigned long long v;
	char *end;

	if (s == NULL || *s < '0' || *s > '9') {
		*why = "invalid";
		return -1;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end != '\0') {
		*why = "invalid";
		return -1;
	}
	if (errno == ERANGE || v > max) {
		*why = "too large";
		return -1;
	}
	if (v < min) {
		*why = "too small";
		return -1;
	}
	*out = v;
	return 0;
}

int
parse_size(const char *s, uint64_t *out, const char **why)
{
	static const struct {
		const char *suffix;
		unsigned shift;
	} units[] = {
		{ "", 0 }, { "B", 0 },
		{ "K", 10 }, { "KiB", 10 }, { "k", 10 },
		{ "M", 20 }, { "MiB", 20 },
		{ "G", 30 }, { "GiB", 30 },
		{ "T", 40 }, { "TiB", 40 },
	};
	unsigned long long v;
	char *end;
	size_t i;

	if (s == NULL || *s < '0' || *s > '9') {
		*why = "invalid";
		return -1;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE) {
		*why = "too large";
		return -1;
	}
	for (i = 0; i < ARRAY_SIZE(units); i++) {
		if (strcmp(end, units[i].suffix) != 0)
			continue;
		if (units[i].shift && v > (UINT64_MAX >> units[i].shift)) {
			*why = "too large";
			return -1;
		}
		*out = (uint64_t)v << units[i].shift;
		return 0;
	}
	*why = "invalid";
	return -1;
}

int
cpus_usable(void)
{
	cpu_set_t set;
	long n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)(n < 4096 ? n : 4096) : 1;
}

uint64_t
now_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
now_mono_ms(void)
{
	return now_mono_ns() / 1000000u;
}

double
now_real(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
format_utc(double t, char out[32])
{
	time_t secs = (time_t)t;
	struct tm tm;

	gmtime_r(&secs, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * The one retry loop behind read_full() and friends: EINTR and short counts
 * go round again; a read stops at end of file.  off < 0 means the file
 * position (read/write), else pread/pwrite from off.
 */
static ssize_t
io_full(int fd, void *buf, size_t len, off_t off, int writing)
{
	size_t done = 0;
	char *p = buf;
	ssize_t n;

	while (done < len) {
		if (writing)
			n = off < 0 ? write(fd, p + done, len - done) :
			    pwrite(fd, p + done, len - done, off + (off_t)done);
		else
			n = off < 0 ? read(fd, p + done, len - done) :
			    pread(fd, p + done, len - done, off + (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			if (!writing)
				break;
			errno = EIO;	/* write(2) never returns 0 for len > 0 */
			return -1;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

ssize_t
read_full(int fd, void *buf, size_t len)
{
	return io_full(fd, buf, len, -1, 0);
}

int
write_full(int fd, const void *buf, size_t len)
{
	return io_full(fd, (void *)buf, len, -1, 1) < 0 ? -1 : 0;
}

ssize_t
pread_full(int fd, void *buf, size_t len, off_t off)
{
	return io_full(fd, buf, len, off, 0);
}

int
pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	return io_full(fd, (void *)buf, len, off, 1) < 0 ? -1 : 0;
}

int
fsync_dir(const char *dir, struct err *e)
{
	int fd, rc = -1;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return err_sys(e, ERR_FAIL, "cannot open directory '%s'", dir);
	if (fsync(fd) < 0) {
		err_sys(e, ERR_FAIL, "cannot fsync directory '%s'", dir);
		goto out;
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

int
fsync_parent_dir(const char *path, struct err *e)
{
	char *dir = path_dirname(path);
	int rc = fsync_dir(dir, e);

	free(dir);
	return rc;
}

/*
 * CRC-32C.  The register here is the raw one; crc32c() inverts it on entry
 * and exit.  With SSE4.2 the crc32 instruction runs on three interleaved
 * streams of CRC_LONG (then CRC_SHORT) bytes, whose CRCs are joined by
 * advancing a stream's register over the bytes of the next one: a linear
 * map, tabled per byte of the register.  Otherwise a byte table.
 */
#define CRC_POLY	0x82f63b78u	/* 0x1EDC6F41, reflected */
#define CRC_SHORT	256u
#define CRC_LONG	(32u * CRC_SHORT)

static uint32_t crc_table[256];
static uint32_t crc_short[4][256];	/* the register over CRC_SHORT zeros */
static uint32_t crc_long[4][256];	/* ... and over CRC_LONG zeros */
static int crc_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static uint32_t
crc_shift(uint32_t z[4][256], uint32_t crc)
{
	return z[0][crc & 0xff] ^ z[1][crc >> 8 & 0xff] ^
	    z[2][crc >> 16 & 0xff] ^ z[3][crc >> 24];
}

/* z from the images of the 32 one-bit registers. */
static void
crc_zeros(uint32_t z[4][256], const uint32_t col[32])
{
	uint32_t v;
	int i, k, b;

	for (k = 0; k < 4; k++) {
		for (b = 0; b < 256; b++) {
			v = 0;
			for (i = 0; i < 8; i++)
				if (b >> i & 1)
					v ^= col[8 * k + i];
			z[k][b] = v;
		}
	}
}

static void
crc_init(void)
{
	uint32_t c, col[32];
	unsigned i, k;

	for (i = 0; i < 256; i++) {
		c = i;
		for (k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ CRC_POLY : c >> 1;
		crc_table[i] = c;
	}
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("sse4.2"))
		return;
	for (i = 0; i < 32; i++) {
		c = 1u << i;
		for (k = 0; k < CRC_SHORT; k++)
			c = crc_table[c & 0xff] ^ (c >> 8);
		col[i] = c;
	}
	crc_zeros(crc_short, col);
	for (i = 0; i < 32; i++)
		for (col[i] = 1u << i, k = 0; k < CRC_LONG / CRC_SHORT; k++)
			col[i] = crc_shift(crc_short, col[i]);
	crc_zeros(crc_long, col);
	crc_hw = 1;
#else
	(void)col;
#endif
}

static uint32_t
crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
/* Whole runs of three blocks of blk bytes; p is 8-byte aligned. */
__attribute__((target("sse4.2")))
static uint64_t
crc_hw_three(uint64_t c0, const uint8_t **pp, size_t *len, size_t blk,
    uint32_t z[4][256])
{
	const uint8_t *p = *pp, *end;
	uint64_t c1, c2, a, b, c;

	while (*len >= 3 * blk) {
		c1 = c2 = 0;
		for (end = p + blk; p < end; p += 8) {
			memcpy(&a, p, 8);
			memcpy(&b, p + blk, 8);
			memcpy(&c, p + 2 * blk, 8);
			c0 = __builtin_ia32_crc32di(c0, a);
			c1 = __builtin_ia32_crc32di(c1, b);
			c2 = __builtin_ia32_crc32di(c2, c);
		}
		c0 = crc_shift(z, (uint32_t)c0) ^ c1;
		c0 = crc_shift(z, (uint32_t)c0) ^ c2;
		p += 2 * blk;
		*len -= 3 * blk;
	}
	*pp = p;
	return c0;
}

__attribute__((target("sse4.2")))
static uint32_t
crc_hw_run(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc, v;

	while (len > 0 && ((uintptr_t)p & 7) != 0) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		len--;
	}
	c = crc_hw_three(c, &p, &len, CRC_LONG, crc_long);
	c = crc_hw_three(c, &p, &len, CRC_SHORT, crc_short);
	for (; len >= 8; p += 8, len -= 8) {
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
	}
	while (len-- > 0)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return (uint32_t)c;
}
#endif

uint32_t
crc32c(uint32_t crc, const void *data, size_t len)
{
	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
	if (crc_hw)
		return ~crc_hw_run(~crc, data, len);
#endif
	return ~crc_sw(~crc, data, len);
}

uint32_t
crc32c_table(uint32_t crc, const void *data, size_t len)
{
	pthread_once(&crc_once, crc_init);
	return ~crc_sw(~crc, data, len);
}

void
format_bytes(uint64_t n, char out[32])
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	size_t i = 0;

	while (v >= 1024 && i + 1 < ARRAY_SIZE(units)) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(out, 32, "%llu B", (unsigned long long)n);
	else
		snprintf(out, 32, "%.1f %s", v, units[i]);
}

int
is_zero(const void *p, size_t len)
{
	const uint8_t *b = p;

	/* memcmp against itself shifted by one: fast and simple. */
	if (len == 0)
		return 1;
	return b[0] == 0 && memcmp(b, b + 1, len - 1) == 0;
}

const char *
path_base(const char *path)
{
	const char *b = strrchr(path, '/');

	return b != NULL ? b + 1 : path;
}

char *
path_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

int
atomic_file_open(struct atomic_file *f, const char *path, mode_t mode,
    struct err *e)
{
	static unsigned counter;
	unsigned n;
	int tries;

	f->fd = -1;
	f->path = xstrdup(path);
	f->tmp = NULL;
	for (tries = 0; tries < 100; tries++) {
		n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
		free(f->tmp);
		f->tmp = xasprintf("%s.tmp-%ld-%u", path, (long)getpid(), n);
		f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, mode & 0777);
		if (f->fd >= 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	err_sys(e, ERR_FAIL, "cannot create '%s'", f->tmp);
	free(f->tmp);
	f->tmp = NULL;
	return -1;
}

int
atomic_file_commit(struct atomic_file *f, int noreplace, struct err *e)
{
	char *dir = NULL;
	int rc = -1;

	if (fsync(f->fd) < 0) {
		err_sys(e, ERR_FAIL, "cannot fsync '%s'", f->tmp);
		goto out;
	}
	if (close(f->fd) < 0) {
		f->fd = -1;
		err_sys(e, ERR_FAIL, "cannot close '%s'", f->tmp);
		goto out;
	}
	f->fd = -1;
	if (noreplace) {
		if (renameat2(AT_FDCWD, f->tmp, AT_FDCWD, f->path,
		    RENAME_NOREPLACE) < 0) {
			if (errno == EEXIST)
				err_set(e, ERR_FAIL, "'%s' already exists",
				    f->path);
			else
				err_sys(e, ERR_FAIL, "cannot rename '%s'",
				    f->tmp);
			goto out;
		}
	} else if (rename(f->tmp, f->path) < 0) {
		err_sys(e, ERR_FAIL, "cannot rename '%s'", f->tmp);
		goto out;
	}
	free(f->tmp);
	f->tmp = NULL;
	dir = path_dirname(f->path);
	if (fsync_dir(dir, e) < 0) {
		/* A file whose name may not survive a crash is not done: take
		 * back what we created (with noreplace, nothing was replaced). */
		if (noreplace)
			unlink(f->path);
		goto out;
	}
	rc = 0;
out:
	free(dir);
	return rc;
}

void
atomic_file_release(struct atomic_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->tmp != NULL)
		unlink(f->tmp);
	free(f->tmp);
	free(f->path);
	f->tmp = NULL;
	f->path = NULL;
}

int
thread_start(pthread_t *t, void *(*fn)(void *), void *arg, const char *what,
    struct err *e)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return err_errno(e, ERR_FAIL, rc, "cannot start a thread for %s",
		    what);
	return 0;
}

static double
clock_s(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) < 0)
		return 0;
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double
thread_cpu_s(pthread_t t)
{
	clockid_t id;

	return pthread_getcpuclockid(t, &id) == 0 ? clock_s(id) : 0;
}

double
self_cpu_s(void)
{
	return clock_s(CLOCK_THREAD_CPUTIME_ID);
}

const char *
json_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

int
proc_start_ticks(pid_t pid, uint64_t *ticks)
{
	char path[64], buf[1024], *p;
	const char *why;
	ssize_t n;
	int fd, field;

	snprintf(path, sizeof(path), "/proc/%lld/stat", (long long)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read_full(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: count fields
	 * from the last ')', which ends it (field 2). */
	p = strrchr(buf, ')');
	if (p == NULL)
		return -1;
	for (field = 2; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (p == NULL)
			return -1;
	}
	p++;
	p[strcspn(p, " ")] = '\0';
	return parse_u64(p, 0, UINT64_MAX, ticks, &why);
}

int
str_in_set(const char *s, const char *const *set)
{
	for (; *set != NULL; set++)
		if (strcmp(s, *set) == 0)
			return 1;
	return 0;
}

char *
qemu_opt_escape(const char *s)
{
	struct buf b = BUF_INIT;
	char *out;

	for (; *s != '\0'; s++) {
		if (*s == ',')
			buf_addc(&b, ',');
		buf_addc(&b, (uint8_t)*s);
	}
	out = xstrndup(b.data != NULL ? (const char *)b.data : "", b.len);
	buf_release(&b);
	return out;
}
