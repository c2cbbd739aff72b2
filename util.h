/*
 * util.h - small helpers every room of the house uses: allocation that dies
 * on out-of-memory (the one exit allowed in the core), a growable byte
 * buffer, checked number parsing, clocks, full reads and writes, fsync of a
 * directory, CRC-32C, the CPUs we may use.
 */
#ifndef SNAPCTL_UTIL_H
#define SNAPCTL_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "err.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation: these never return NULL; they print and exit(1) on OOM. */
void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
void *xreallocarray(void *ptr, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A growable byte buffer (git's strbuf).  Always NUL-terminated after len
 * bytes so it can be used as a C string.  BUF_INIT is a valid empty buffer.
 */
struct buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};
#define BUF_INIT { NULL, 0, 0 }

void buf_grow(struct buf *b, size_t extra);
void buf_add(struct buf *b, const void *data, size_t len);
void buf_addc(struct buf *b, uint8_t c);
void buf_addstr(struct buf *b, const char *s);
void buf_addf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void buf_add_be16(struct buf *b, uint16_t v);
void buf_add_be32(struct buf *b, uint32_t v);
void buf_add_be64(struct buf *b, uint64_t v);
/* Drop the first n bytes, moving the rest to the front. */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);
void buf_release(struct buf *b);

/* Big- and little-endian loads and stores. */
uint16_t get_be16(const uint8_t *p);
uint32_t get_be32(const uint8_t *p);
uint64_t get_be64(const uint8_t *p);
uint32_t get_le32(const uint8_t *p);
uint64_t get_le64(const uint8_t *p);
void put_be16(uint8_t *p, uint16_t v);
void put_be32(uint8_t *p, uint32_t v);
void put_be64(uint8_t *p, uint64_t v);
void put_le32(uint8_t *p, uint32_t v);
void put_le64(uint8_t *p, uint64_t v);

/*
 * Parse a whole decimal number in [min, max] (strtonum).  On failure returns
 * -1 and sets *why to "invalid", "too small" or "too large".
 */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out,
    const char **why);

/*
 * Parse a size with an optional binary suffix: K, M, G, T (also KiB, MiB...).
 * "0" is allowed.  Same failure contract as parse_u64().
 */
int parse_size(const char *s, uint64_t *out, const char **why);

/* The CPUs this process may run on (its affinity mask), at least 1. */
int cpus_usable(void);

/* Clocks. */
uint64_t now_mono_ns(void);
uint64_t now_mono_ms(void);
double now_real(void);	/* seconds since the epoch, with fractions */
/* "2026-11-23T07:38:32Z" for t (seconds since the epoch) into out[32]. */
void format_utc(double t, char out[32]);

/*
 * Read or write exactly len bytes, retrying on EINTR and short counts.
 * read_full() returns the number of bytes read (less than len only at EOF)
 * or -1 with errno set; write_full() returns 0 or -1 with errno set.
 */
ssize_t read_full(int fd, void *buf, size_t len);
int write_full(int fd, const void *buf, size_t len);
ssize_t pread_full(int fd, void *buf, size_t len, off_t off);
int pwrite_full(int fd, const void *buf, size_t len, off_t off);

/* fsync() the directory that holds path (or path itself if a directory). */
int fsync_dir(const char *dir, struct err *e);
/* fsync() the directory that holds the file path. */
int fsync_parent_dir(const char *path, struct err *e);

/*
 * A file that appears under its name only when complete: written to a
 * temporary name beside it (created 0600, O_EXCL|O_NOFOLLOW), then fsync,
 * rename and fsync of the directory.  ATOMIC_FILE_INIT is an unopened one.
 */
struct atomic_file {
	int fd;
	char *path;	/* final name */
	char *tmp;	/* temporary name, NULL once renamed */
};
#define ATOMIC_FILE_INIT { -1, NULL, NULL }

/* Create the temporary file for path; mode is for the final file. */
int atomic_file_open(struct atomic_file *f, const char *path, mode_t mode,
    struct err *e);
/*
 * fsync, rename into place and fsync the directory.  With noreplace an
 * existing path is an error (ERR_FAIL, "'x' already exists"), and a failed
 * fsync of the directory after the rename removes the new file again, so a
 * failure leaves no output behind.
 */
int atomic_file_commit(struct atomic_file *f, int noreplace, struct err *e);
/* Close and unlink the temporary file if not committed; free names. */
void atomic_file_release(struct atomic_file *f);

/* The directory part of path ("." if none), newly allocated. */
char *path_dirname(const char *path);
/* The last component of path: a pointer into path. */
const char *path_base(const char *path);

/*
 * CRC-32C (Castagnoli), as used by the image format; crc starts at 0, and
 * crc32c(crc32c(0, a, n), b, m) is the CRC of a and b back to back.  Uses
 * the SSE4.2 crc32 instruction when the CPU has it (several GB/s), else
 * crc32c_table(), the portable byte-table loop (same results; for tests).
 * Thread-safe.
 */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);
uint32_t crc32c_table(uint32_t crc, const void *data, size_t len);

/*
 * CPU seconds a thread has used: a running one (thread_cpu_s) or the
 * caller (self_cpu_s).  0 when the clock cannot be read.
 */
double thread_cpu_s(pthread_t t);
double self_cpu_s(void);

/*
 * Start a thread with every signal blocked in it, so SIGINT/SIGTERM/SIGHUP
 * reach only the thread that polls sig_caught().  -1 with e filled
 * (ERR_FAIL, "cannot start a thread for WHAT: ...") on failure.
 */
int thread_start(pthread_t *t, void *(*fn)(void *), void *arg,
    const char *what, struct err *e);

/*
 * When process pid started, in clock ticks since boot (field 22 of
 * /proc/PID/stat): with the pid it names one process for good, a pid
 * reused later has another.  0, or -1 when there is no such process.
 */
int proc_start_ticks(pid_t pid, uint64_t *ticks);

/* The string value of obj[key] (borrowed), or NULL if absent or not one. */
const char *json_str(const json_t *obj, const char *key);

/* Human-readable byte count: "1.5 GiB" into out[32]. */
void format_bytes(uint64_t n, char out[32]);

/* 1 if len bytes at p are all zero. */
int is_zero(const void *p, size_t len);

/* 1 if s equals one of set[], a NULL-terminated array, else 0. */
int str_in_set(const char *s, const char *const *set);

/* s with each ',' doubled, as QEMU's option syntax wants inside a value.
 * Allocated. */
char *qemu_opt_escape(const char *s);

/* Last, so system headers see the real names (include us after them). */
#include "banned.h"

#endif
