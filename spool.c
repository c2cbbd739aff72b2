/*
 * spool.c - memory blocks in a list, then an unlinked overflow file.
 *
 * Order is kept by one rule: once bytes went to the file, later bytes go
 * there too until the consumer has read the file empty; so whatever is in
 * memory is older than whatever is in the file, and the consumer takes
 * memory first.  File I/O runs outside the lock; "writing" keeps the
 * consumer from rewinding the file under a producer's pwrite.
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

struct block {
	struct block *next;
	size_t len, off;	/* bytes held, bytes already taken */
	uint8_t data[];
};

struct spool {
	pthread_mutex_t mu;
	pthread_cond_t cv_data, cv_space;
	struct block *head, *tail;
	size_t mem_bytes, mem_max;
	char *dir;
	int fd;			/* overflow file, -1 until needed */
	uint64_t r_off, w_off;	/* unread file bytes are [r_off, w_off) */
	uint64_t file_max, file_peak;
	int writing;		/* a producer pwrite is under way */
	int allow;
	int ended, aborted;
};

struct spool *
spool_new(const char *dir, size_t mem_max, uint64_t file_max)
{
	struct spool *s = xcalloc(1, sizeof(*s));

	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv_data, NULL);
	pthread_cond_init(&s->cv_space, NULL);
	s->mem_max = mem_max;
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

int
spool_put(struct spool *s, const void *p, size_t len, struct err *e)
{
	struct block *b;
	uint64_t off;
	int fd;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		if (s->aborted) {
			pthread_mutex_unlock(&s->mu);
			return err_set(e, ERR_FAIL, "spool: aborted");
		}
		if (s->r_off == s->w_off && s->mem_bytes + len <= s->mem_max)
			break;	/* memory */
		if (s->allow && s->w_off - s->r_off + len <= s->file_max)
			goto file;
		if (s->mem_bytes == 0 && s->r_off == s->w_off)
			break;	/* larger than the bound: let it through */
		pthread_cond_wait(&s->cv_space, &s->mu);
	}
	b = xmalloc(sizeof(*b) + len);
	b->next = NULL;
	b->len = len;
	b->off = 0;
	memcpy(b->data, p, len);
	if (s->tail != NULL)
		s->tail->next = b;
	else
		s->head = b;
	s->tail = b;
	s->mem_bytes += len;
	pthread_cond_signal(&s->cv_data);
	pthread_mutex_unlock(&s->mu);
	return 0;

file:
	off = s->w_off;
	s->writing = 1;
	pthread_mutex_unlock(&s->mu);
	if (s->fd < 0)
		s->fd = open_file(s, e);	/* only producers set it */
	fd = s->fd;
	if (fd < 0 || pwrite_full(fd, p, len, (off_t)off) < 0) {
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
spool_get(struct spool *s, void *buf, size_t max, struct err *e)
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
		if ((b = s->head) != NULL) {
			n = b->len - b->off < max ? b->len - b->off : max;
			memcpy(buf, b->data + b->off, n);
			b->off += n;
			s->mem_bytes -= n;
			if (b->off == b->len) {
				s->head = b->next;
				if (s->head == NULL)
					s->tail = NULL;
				free(b);
			}
			pthread_cond_broadcast(&s->cv_space);
			pthread_mutex_unlock(&s->mu);
			return (ssize_t)n;
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
	n = s->w_off - off < max ? (size_t)(s->w_off - off) : max;
	pthread_mutex_unlock(&s->mu);
	got = pread_full(s->fd, buf, n, (off_t)off);
	if (got != (ssize_t)n) {
		err_sys(e, ERR_FAIL, "cannot read the spool file in '%s'",
		    s->dir);
		return -1;
	}
	pthread_mutex_lock(&s->mu);
	s->r_off += n;
	/* Read empty: rewind, and give the space back. */
	if (s->r_off == s->w_off && !s->writing) {
		s->r_off = s->w_off = 0;
		if (ftruncate(s->fd, 0) < 0) {
			/* Only space is lost; the offsets restart anyway. */
		}
	}
	pthread_cond_broadcast(&s->cv_space);
	pthread_mutex_unlock(&s->mu);
	return (ssize_t)n;
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

void
spool_free(struct spool *s)
{
	struct block *b, *next;

	if (s == NULL)
		return;
	for (b = s->head; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	if (s->fd >= 0)
		close(s->fd);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv_data);
	pthread_cond_destroy(&s->cv_space);
	free(s->dir);
	free(s);
}
