/*
 * spool.h - a first-in first-out byte queue between a producer that should
 * not wait (the thread draining QEMU's migration socket while the guest is
 * stopped) and a consumer that may be slower (the parser and compressor).
 * Bytes are kept in memory up to one bound; while overflow is allowed they
 * go on, in order, to an unlinked file in a directory, up to a second
 * bound; past the bounds the producer waits, as on a pipe.  One producer
 * thread and one consumer thread.  Memory is a few fixed blocks, reused:
 * the producer reads into them and the consumer parses them in place, so a
 * byte in memory is never copied.  Never prints.
 */
#ifndef SNAPCTL_SPOOL_H
#define SNAPCTL_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

struct spool;

/*
 * A spool keeping up to mem_max bytes in memory and up to file_max more in
 * an unlinked file (0600) created in dir when first needed.  Overflow
 * starts forbidden.  Never fails (allocation aborts).
 */
struct spool *spool_new(const char *dir, size_t mem_max, uint64_t file_max);

/* Allow (1) or forbid (0) overflow into the file from now on. */
void spool_overflow(struct spool *s, int allow);

/*
 * Append len bytes (a copy; the reader thread uses spool_claim()).  Waits
 * only while the bounds are reached.  0, or -1 with e filled: the overflow
 * file cannot be created or written (ERR_NOSPC when the disk is full), or
 * spool_abort() was called (ERR_FAIL).
 */
int spool_put(struct spool *s, const void *p, size_t len, struct err *e);

/*
 * Append without a copy: a buffer of *cap bytes (at least 1) to fill, in
 * memory or, when memory is full and overflow allowed, a staging buffer
 * for the file; waits while the bounds are reached.  Then
 * spool_commit() of how many bytes were filled (0 gives it back).  One
 * claim at a time.  NULL with e filled as spool_put() says.
 */
void *spool_claim(struct spool *s, size_t *cap, struct err *e);
int spool_commit(struct spool *s, size_t len, struct err *e);

/* The producer is done: spool_get() returns 0 once all is read. */
void spool_end(struct spool *s);

/*
 * Take up to max bytes, oldest first, waiting for some (a copy; the
 * parser's thread uses spool_peek()).  Returns how many, 0 at the end
 * (after spool_end() or spool_abort()), or -1 with e filled when the
 * overflow file cannot be read.
 */
ssize_t spool_get(struct spool *s, void *buf, size_t max, struct err *e);

/*
 * The oldest bytes in place: *p and how many (0 at the end, -1 as
 * spool_get()), valid until spool_release() of how many were used (at
 * most that many; the rest comes again).  One peek at a time.
 */
ssize_t spool_peek(struct spool *s, const uint8_t **p, struct err *e);
void spool_release(struct spool *s, size_t n);

/* Stop both sides: waiting calls return (put -1, get 0). */
void spool_abort(struct spool *s);

/* Bytes put and not yet taken (memory and file). */
uint64_t spool_pending(struct spool *s);

/* The most bytes that were ever in the file at once (for tests). */
uint64_t spool_file_peak(struct spool *s);

void spool_free(struct spool *s);

#endif
