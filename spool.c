/*
 * spool.c - fixed memory blocks in a queue, then an unlinked overflow file.
 *
 * Order is kept by one rule: once bytes went to the file, later bytes go
 * there too until the consumer has read the file empty; so whatever is in
 * memory is older than whatever is in the file, and the consumer takes
 * memory first.  Where a claim goes is decided when it is made (the file
 * only fills from the producer's side, so the rule still holds at its
 * commit).  File I/O runs outside the lock; "writing" keeps the consumer
 * from rewinding the file under a producer's pwrite.
 *
 * Blocks: at most mem_max / block bytes of them, queued oldest first and
 * reused from a free list.  The producer appends to the newest while it
 * has room, the consumer reads the oldest in place; each touches only its
 * own bytes of a block (lengths change under the lock), and a block
 * leaves the queue only when read to its end and full or no longer the
 * newest, so it is never taken from under a claim.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool.h"
#include "util.h"

#include "banned.h"

#define BLOCK_MAX (1u << 20)
#define APPEND_MIN (64u << 10)	/* room the newest block must have to take
				 * the next claim */

struct block {
	struct block *next;
	size_t len, off;	/* bytes held, bytes already taken */
	uint8_t data[];
};

enum claim { CLAIM_NONE, CLAIM_APPEND, CLAIM_BLOCK, CLAIM_FILE };

struct spool {
	pthread_mutex_t mu;
	pthread_cond_t cv_data, cv_space;
	struct block *head, *tail;	/* the queue */
	struct block *free;		/* blocks to reuse */
	size_t block;			/* bytes of data a block holds */
	unsigned nblocks, maxblocks;	/* queued (claimed included), bound */
	size_t mem_bytes, mem_max;
	char *dir;
	int fd;			/* overflow file, -1 until needed */
	uint64_t r_off, w_off;	/* unread file bytes are [r_off, w_off) */
	uint64_t file_max, file_peak;
	int writing;		/* a producer pwrite is under way */
	int allow;
	int ended, aborted;
	/* producer */
	enum claim claim;
	struct block *cblock;	/* claimed: appended to or new */
	uint8_t *stage;		/* bytes bound for the file */
	/* consumer */
	int peek_file;		/* the last peek came from the file */
	uint8_t *fbuf;		/* file bytes read for a peek */
};

struct spool *
spool_new(const char *dir, size_t mem_max, uint64_t file_max)
{
	struct spool *s = xcalloc(1, sizeof(*s));

	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv_data, NULL);
	pthread_cond_init(&s->cv_space, NULL);
	s->mem_max = mem_max > 0 ? mem_max : 1;
	s->block = s->mem_max < BLOCK_MAX ? s->mem_max : BLOCK_MAX;
	s->maxblocks = (unsigned)(s->mem_max / s->block);
	s->file_max = file_max;
	s->dir = xstrdup(dir);
	s->fd = -1;
	return s;
}

void
spool_overflow(struct spool *s, int allow)
{
	pthread_mutex_lock(&s->mu);
	s->allow = allow;
	pthread_cond_broadcast(&s->cv_space);
	pthread_mutex_unlock(&s->mu);
}

/* The overflow file: O_TMPFILE, else a named one unlinked at once. */
static int
open_file(struct spool *s, struct err *e)
{
	char *path;
	int fd;

	fd = open(s->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	path = xasprintf("%s/.snapctl-spool-XXXXXX", s->dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	else
		err_sys(e, ERR_FAIL, "cannot create a spool file in '%s'",
		    s->dir);
	free(path);
	return fd;
}

/*
 * The newest block takes the next claim: it has the room.  While a claim
 * appends to it the room stays (it shrinks only at the commit), so a
 * block without the room has no claim on it and may be dropped.
 */
static int
can_append(const struct spool *s, const struct block *b)
{
	return s->block - b->len >= APPEND_MIN;
}

/* A block for the queue, reused or new (lock held). */
static struct block *
block_take(struct spool *s)
{
	struct block *b = s->free;

	if (b != NULL)
		s->free = b->next;
	else
		b = xmalloc(sizeof(*b) + s->block);
	b->next = NULL;
	b->len = b->off = 0;
	s->nblocks++;
	return b;
}

static void
block_put(struct spool *s, struct block *b)
{
	b->next = s->free;
	s->free = b;
	s->nblocks--;
}

/* Drop the oldest block, read to its end (lock held). */
static void
head_drop(struct spool *s)
{
	struct block *b = s->head;

	s->head = b->next;
	if (s->head == NULL)
		s->tail = NULL;
	block_put(s, b);
	pthread_cond_broadcast(&s->cv_space);
}

void *
spool_claim(struct spool *s, size_t *cap, struct err *e)
{
	struct block *b;
	uint64_t room;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		if (s->aborted) {
			pthread_mutex_unlock(&s->mu);
			err_set(e, ERR_FAIL, "spool: aborted");
			return NULL;
		}
		if (s->r_off == s->w_off) {
			b = s->tail;
			if (b != NULL && can_append(s, b)) {
				s->claim = CLAIM_APPEND;
				s->cblock = b;
				*cap = s->block - b->len;
				pthread_mutex_unlock(&s->mu);
				return b->data + b->len;
			}
			if (s->nblocks < s->maxblocks) {
				s->claim = CLAIM_BLOCK;
				s->cblock = block_take(s);
				*cap = s->block;
				pthread_mutex_unlock(&s->mu);
				return s->cblock->data;
			}
		}
		room = s->file_max - (s->w_off - s->r_off);
		if (s->allow && s->w_off - s->r_off < s->file_max)
			break;
		pthread_cond_wait(&s->cv_space, &s->mu);
	}
	s->claim = CLAIM_FILE;
	*cap = room < s->block ? (size_t)room : s->block;
	pthread_mutex_unlock(&s->mu);
	if (s->stage == NULL)
		s->stage = xmalloc(s->block);
	return s->stage;
}

/* The claimed staging bytes to the file, at its end. */
static int
commit_file(struct spool *s, size_t len, struct err *e)
{
	uint64_t off;
	int fd;

	pthread_mutex_lock(&s->mu);
	off = s->w_off;
	s->writing = 1;
	pthread_mutex_unlock(&s->mu);
	if (s->fd < 0)
		s->fd = open_file(s, e);	/* only producers set it */
	fd = s->fd;
	if (fd < 0 || pwrite_full(fd, s->stage, len, (off_t)off) < 0) {
		if (fd >= 0)
			err_sys(e, ERR_FAIL, "cannot write the spool file in "
			    "'%s'", s->dir);
		pthread_mutex_lock(&s->mu);
		s->writing = 0;
		pthread_cond_broadcast(&s->cv_space);
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	pthread_mutex_lock(&s->mu);
	s->writing = 0;
	s->w_off = off + len;
	if (s->w_off - s->r_off > s->file_peak)
		s->file_peak = s->w_off - s->r_off;
	pthread_cond_signal(&s->cv_data);
	pthread_cond_broadcast(&s->cv_space);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

int
spool_commit(struct spool *s, size_t len, struct err *e)
{
	enum claim c = s->claim;
	struct block *b = s->cblock;

	s->claim = CLAIM_NONE;
	s->cblock = NULL;
	if (c == CLAIM_FILE)
		return len > 0 ? commit_file(s, len, e) : 0;
	pthread_mutex_lock(&s->mu);
	if (c == CLAIM_BLOCK) {
		if (len == 0 || s->aborted) {
			block_put(s, b);
			pthread_cond_broadcast(&s->cv_space);
			goto out;
		}
		if (s->tail != NULL)
			s->tail->next = b;
		else
			s->head = b;
		s->tail = b;
	}
	b->len += len;
	s->mem_bytes += len;
	if (len > 0)
		pthread_cond_signal(&s->cv_data);
out:
	pthread_mutex_unlock(&s->mu);
	return 0;
}

int
spool_put(struct spool *s, const void *p, size_t len, struct err *e)
{
	const uint8_t *q = p;
	size_t cap, n;
	void *dst;

	do {
		if ((dst = spool_claim(s, &cap, e)) == NULL)
			return -1;
		n = len < cap ? len : cap;
		memcpy(dst, q, n);
		if (spool_commit(s, n, e) < 0)
			return -1;
		q += n;
		len -= n;
	} while (len > 0);
	return 0;
}

void
spool_end(struct spool *s)
{
	pthread_mutex_lock(&s->mu);
	s->ended = 1;
	pthread_cond_broadcast(&s->cv_data);
	pthread_mutex_unlock(&s->mu);
}

void
spool_abort(struct spool *s)
{
	pthread_mutex_lock(&s->mu);
	s->aborted = 1;
	pthread_cond_broadcast(&s->cv_data);
	pthread_cond_broadcast(&s->cv_space);
	pthread_mutex_unlock(&s->mu);
}

ssize_t
spool_peek(struct spool *s, const uint8_t **p, struct err *e)
{
	struct block *b;
	uint64_t off;
	size_t n;
	ssize_t got;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		if (s->aborted) {
			pthread_mutex_unlock(&s->mu);
			return 0;
		}
		if ((b = s->head) != NULL && b->off < b->len) {
			*p = b->data + b->off;
			n = b->len - b->off;
			s->peek_file = 0;
			pthread_mutex_unlock(&s->mu);
			return (ssize_t)n;
		}
		if (b != NULL && (b != s->tail || !can_append(s, b))) {
			head_drop(s);	/* read, and takes no more */
			continue;
		}
		if (s->r_off < s->w_off)
			break;
		if (s->ended) {
			pthread_mutex_unlock(&s->mu);
			return 0;
		}
		pthread_cond_wait(&s->cv_data, &s->mu);
	}
	off = s->r_off;
	n = s->w_off - off < s->block ? (size_t)(s->w_off - off) : s->block;
	pthread_mutex_unlock(&s->mu);
	if (s->fbuf == NULL)
		s->fbuf = xmalloc(s->block);
	got = pread_full(s->fd, s->fbuf, n, (off_t)off);
	if (got != (ssize_t)n) {
		err_sys(e, ERR_FAIL, "cannot read the spool file in '%s'",
		    s->dir);
		return -1;
	}
	s->peek_file = 1;
	*p = s->fbuf;
	return (ssize_t)n;
}

void
spool_release(struct spool *s, size_t n)
{
	struct block *b;

	pthread_mutex_lock(&s->mu);
	if (s->aborted)
		goto out;
	if (!s->peek_file) {
		b = s->head;
		b->off += n;
		s->mem_bytes -= n;
		/* Read to its end: gone, unless the producer may still
		 * append to it (then a later peek drops it). */
		if (b->off == b->len && (b != s->tail || !can_append(s, b)))
			head_drop(s);
		goto out;
	}
	s->r_off += n;
	/* Read empty: rewind, and give the space back. */
	if (s->r_off == s->w_off && !s->writing) {
		s->r_off = s->w_off = 0;
		if (ftruncate(s->fd, 0) < 0) {
			/* Only space is lost; the offsets restart anyway. */
		}
	}
	pthread_cond_broadcast(&s->cv_space);
out:
	pthread_mutex_unlock(&s->mu);
}

ssize_t
spool_get(struct spool *s, void *buf, size_t max, struct err *e)
{
	const uint8_t *p;
	ssize_t n;

	if ((n = spool_peek(s, &p, e)) <= 0)
		return n;
	if ((size_t)n > max)
		n = (ssize_t)max;
	memcpy(buf, p, (size_t)n);
	spool_release(s, (size_t)n);
	return n;
}

uint64_t
spool_pending(struct spool *s)
{
	uint64_t v;

	pthread_mutex_lock(&s->mu);
	v = s->mem_bytes + (s->w_off - s->r_off);
	pthread_mutex_unlock(&s->mu);
	return v;
}

uint64_t
spool_file_peak(struct spool *s)
{
	uint64_t v;

	pthread_mutex_lock(&s->mu);
	v = s->file_peak;
	pthread_mutex_unlock(&s->mu);
	return v;
}

static void
blocks_free(struct block *b)
{
	struct block *next;

	for (; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
}

void
spool_free(struct spool *s)
{
	if (s == NULL)
		return;
	blocks_free(s->head);
	blocks_free(s->free);
	if (s->claim == CLAIM_BLOCK)
		free(s->cblock);
	if (s->fd >= 0)
		close(s->fd);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv_data);
	pthread_cond_destroy(&s->cv_space);
	free(s->stage);
	free(s->fbuf);
	free(s->dir);
	free(s);
}
