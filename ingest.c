/*
 * ingest.c - a migration stream from an fd into a memory image (ingest.h):
 * the reader thread (fd to spool), the feeder thread (spool to parser to
 * image writer), the first failure of either, and the eventfd that wakes
 * the owner.
 */
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ingest.h"
#include "spool.h"
#include "stream.h"
#include "util.h"

#define READ_CHUNK (1u << 20)
#define DIRECT_CHUNK (4u << 20)	/* direct: one read() parsed in place */
#define DIRECT_PIPE (1u << 20)	/* direct: pipe size asked for */
#define SPOOL_MEM (4u << 20) 	/* stream bytes buffered in memory */

struct ingest {
	int fd;			/* borrowed: the stream */
	int wake;		/* eventfd the owner polls */
	int stopfd;		/* eventfd: ingest_stop() to the reader */
	int can_overflow;	/* a spool directory was given */
	int direct;		/* no reader thread: the feeder reads fd */
	char *name;		/* the fd, in messages */
	struct stream_parser *parser;
	struct img_writer *writer;
	struct spool *spool;	/* reader -> feeder */
	pthread_t reader;	/* fd to spool */
	pthread_t feeder;	/* spool to parser and image */
	int started;
	pthread_mutex_t err_mu;	/* both threads may fail */
	/* Written by a thread; read by the owner once the flag that guards
	 * it is seen (release/acquire) or after the join. */
	struct err err;		/* the first failure */
	struct err finish_err;	/* why the parser found the stream short */
	int failed;		/* err is set: abort */
	int finished;		/* EOF seen, parser finished, threads end */
	int complete;		/* the whole stream arrived and was parsed */
	uint64_t bytes;		/* stream bytes read */
	uint64_t pages;		/* page records */
	double read_cpu, feed_cpu;	/* each thread's CPU seconds, set as
					 * it ends */
	char machine[128];	/* from the configuration section */
};

static void
wake_owner(struct ingest *g)
{
	uint64_t one = 1;

	if (write(g->wake, &one, sizeof(one)) < 0) {
		/* The counter cannot overflow here; nothing to do. */
	}
}

/* The image writer's sink, wrapped to learn the machine type and count. */
static int
is_config(void *opaque, const uint8_t *raw, size_t len, const char *machine,
    struct err *e)
{
	struct ingest *g = opaque;

	snprintf(g->machine, sizeof(g->machine), "%s", machine);
	if (img_writer_sink()->config == NULL)
		return 0;
	return img_writer_sink()->config(g->writer, raw, len, machine, e);
}

static int
is_blocks(void *opaque, const struct stream_block *blocks, size_t nblocks,
    uint32_t sid, struct err *e)
{
	struct ingest *g = opaque;

	if (img_writer_sink()->blocks == NULL)
		return 0;
	return img_writer_sink()->blocks(g->writer, blocks, nblocks, sid, e);
}

static int
is_page(void *opaque, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct ingest *g = opaque;
	uint64_t n;

	/* The first page ends a background checkpoint's setup.  Only this
	 * thread writes the count: no locked add per page. */
	n = __atomic_load_n(&g->pages, __ATOMIC_RELAXED) + 1;
	__atomic_store_n(&g->pages, n, __ATOMIC_RELAXED);
	if (n == 1)
		wake_owner(g);
	if (img_writer_sink()->page == NULL)
		return 0;
	return img_writer_sink()->page(g->writer, block, offset, data, e);
}

static int
is_section(void *opaque, int type, struct err *e)
{
	struct ingest *g = opaque;

	if (img_writer_sink()->section == NULL)
		return 0;
	return img_writer_sink()->section(g->writer, type, e);
}

static int
is_switchover(void *opaque, struct err *e)
{
	struct ingest *g = opaque;

	if (img_writer_sink()->switchover == NULL)
		return 0;
	return img_writer_sink()->switchover(g->writer, e);
}

static int
is_tail(void *opaque, const uint8_t *data, size_t len, struct err *e)
{
	struct ingest *g = opaque;

	if (img_writer_sink()->tail == NULL)
		return 0;
	return img_writer_sink()->tail(g->writer, data, len, e);
}

static const struct stream_sink ingest_sink = {
	is_config, is_blocks, is_page, is_section, is_switchover, is_tail,
};

/* Record the first failure of either thread, and tell the owner. */
static void
ingest_fail(struct ingest *g, const struct err *x)
{
	pthread_mutex_lock(&g->err_mu);
	if (!err_isset(&g->err))
		g->err = *x;
	pthread_mutex_unlock(&g->err_mu);
	__atomic_store_n(&g->failed, 1, __ATOMIC_RELEASE);
	wake_owner(g);
}

/* Wait until the fd has bytes (or EOF); 0 when told to stop. */
static int
wait_readable(struct ingest *g)
{
	struct pollfd pfd[2];

	pfd[0].fd = g->fd;
	pfd[0].events = POLLIN;
	pfd[1].fd = g->stopfd;
	pfd[1].events = POLLIN;
	while (poll(pfd, 2, -1) < 0) {
		if (errno != EINTR)
			return 1;	/* read() will say */
	}
	return (pfd[1].revents & POLLIN) == 0;
}

/*
 * The reader: drain the fd into the spool, so that the sender sends as
 * fast as it can (for QEMU above all while the guest waits at switchover:
 * the owner then lets the spool overflow to a file).  After a failure keep
 * reading and discarding, so QEMU never blocks on a full socket while the
 * owner cancels the migration.
 */
static void *
reader_main(void *arg)
{
	struct ingest *g = arg;
	struct err le = ERR_INIT;
	uint8_t *junk = NULL, *buf;
	size_t cap;
	int failed = 0;
	ssize_t n;

	for (;;) {
		if (!wait_readable(g))
			break;
		if (failed || __atomic_load_n(&g->failed, __ATOMIC_ACQUIRE)) {
			failed = 1;
			if (junk == NULL)
				junk = xmalloc(READ_CHUNK);
			buf = junk;
			cap = READ_CHUNK;
		} else if ((buf = spool_claim(g->spool, &cap, &le)) == NULL) {
			goto spool_failed;
		}
		/* Straight into the spool's memory: no copy. */
		n = read(g->fd, buf, cap);
		if (!failed && spool_commit(g->spool, n > 0 ? (size_t)n : 0,
		    &le) < 0)
			goto spool_failed;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			if (!failed) {
				err_sys(&le, ERR_FAIL, "cannot read %s",
				    g->name);
				ingest_fail(g, &le);
			}
			break;
		}
		if (n == 0)
			break;
		__atomic_add_fetch(&g->bytes, (uint64_t)n, __ATOMIC_RELAXED);
		continue;
spool_failed:
		failed = 1;
		if (!__atomic_load_n(&g->failed, __ATOMIC_ACQUIRE))
			ingest_fail(g, &le);
		spool_abort(g->spool);
	}
	spool_end(g->spool);
	free(junk);
	g->read_cpu = self_cpu_s();
	return NULL;
}

/*
 * Direct: up to max bytes of the fd into buf, as spool_get() would give
 * them: how many, 0 at EOF or when told to stop, -1 with e filled.
 */
static ssize_t
direct_get(struct ingest *g, uint8_t *buf, size_t max, struct err *e)
{
	ssize_t n;

	for (;;) {
		if (!wait_readable(g))
			return 0;
		n = read(g->fd, buf, max);
		if (n >= 0)
			break;
		if (errno != EINTR && errno != EAGAIN)
			return err_sys(e, ERR_FAIL, "cannot read %s", g->name);
	}
	__atomic_add_fetch(&g->bytes, (uint64_t)n, __ATOMIC_RELAXED);
	return n;
}

/* The feeder: the spool (or the fd) into the parser, which fills the
 * image. */
static void *
feeder_main(void *arg)
{
	struct ingest *g = arg;
	struct err le = ERR_INIT;
	uint8_t *buf = g->direct ? xmalloc(DIRECT_CHUNK) : NULL;
	const uint8_t *p = buf;
	int failed = 0;
	ssize_t n;

	/* The spool's bytes are parsed where the reader put them. */
	while ((n = g->direct ? direct_get(g, buf, DIRECT_CHUNK, &le) :
	    spool_peek(g->spool, &p, &le)) > 0) {
		if (stream_parser_feed(g->parser, p, (size_t)n, &le) < 0) {
			n = -1;
			break;
		}
		if (!g->direct)
			spool_release(g->spool, (size_t)n);
	}
	if (n < 0) {
		failed = 1;
		ingest_fail(g, &le);
		spool_abort(g->spool);
	}
	/* A truncated stream is not a failure by itself: a checkpoint
	 * learns from QEMU why it stopped sending (cancelled, failed). */
	if (!failed && !__atomic_load_n(&g->failed, __ATOMIC_ACQUIRE)) {
		if (stream_parser_finish(g->parser, &g->finish_err) == 0)
			g->complete = 1;
	}
	free(buf);
	g->feed_cpu = self_cpu_s();
	__atomic_store_n(&g->finished, 1, __ATOMIC_RELEASE);
	wake_owner(g);
	return NULL;
}

struct ingest *
ingest_new(const char *path, const struct ingest_opts *o, struct err *e)
{
	struct ingest *g = xcalloc(1, sizeof(*g));

	g->fd = -1;
	g->wake = g->stopfd = -1;
	g->name = xstrdup(o->name != NULL ? o->name : "the migration stream");
	pthread_mutex_init(&g->err_mu, NULL);
	g->writer = img_writer_new(path, &o->img, e);
	if (g->writer == NULL)
		goto fail;
	g->parser = stream_parser_new(&ingest_sink, g);
	g->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g->wake < 0) {
		err_sys(e, ERR_FAIL, "eventfd");
		goto fail;
	}
	g->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g->stopfd < 0) {
		err_sys(e, ERR_FAIL, "eventfd");
		goto fail;
	}
	g->direct = o->direct;
	g->can_overflow = o->spool_dir != NULL && !o->direct;
	g->spool = spool_new(o->spool_dir != NULL ? o->spool_dir : "",
	    SPOOL_MEM, o->spool_file_max);
	return g;
fail:
	ingest_free(g);
	return NULL;
}

int
ingest_start(struct ingest *g, int fd, struct err *e)
{
	struct stat st;

	g->fd = fd;
	/* Direct from a pipe: a larger pipe means fewer, larger reads and
	 * wakeups on both sides (best effort: the limit is the kernel's). */
	if (g->direct && fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) &&
	    fcntl(fd, F_GETPIPE_SZ) < (int)DIRECT_PIPE)
		(void)fcntl(fd, F_SETPIPE_SZ, (int)DIRECT_PIPE);
	if (thread_start(&g->feeder, feeder_main, g, "the stream parser",
	    e) < 0)
		return -1;
	if (g->direct) {
		g->started = 1;
		return 0;
	}
	if (thread_start(&g->reader, reader_main, g, "reading the stream",
	    e) < 0) {
		spool_abort(g->spool);
		pthread_join(g->feeder, NULL);
		return -1;
	}
	g->started = 1;
	return 0;
}

void
ingest_overflow(struct ingest *g, int allow)
{
	if (g != NULL && g->can_overflow)
		spool_overflow(g->spool, allow);
}

int
ingest_wake_fd(const struct ingest *g)
{
	return g != NULL ? g->wake : -1;
}

void
ingest_wake_clear(struct ingest *g)
{
	uint64_t junk;

	if (g != NULL && read(g->wake, &junk, sizeof(junk)) < 0) {
		/* EAGAIN: nothing to consume */
	}
}

uint64_t
ingest_bytes(const struct ingest *g)
{
	return g != NULL ? __atomic_load_n(&g->bytes, __ATOMIC_RELAXED) : 0;
}

uint64_t
ingest_pages(const struct ingest *g)
{
	return g != NULL ? __atomic_load_n(&g->pages, __ATOMIC_RELAXED) : 0;
}

uint64_t
ingest_pending(const struct ingest *g)
{
	return g != NULL ? spool_pending(g->spool) : 0;
}

int
ingest_check(struct ingest *g, struct err *e)
{
	if (g == NULL || !__atomic_load_n(&g->failed, __ATOMIC_ACQUIRE))
		return 0;
	err_propagate(e, &g->err, NULL);
	return -1;
}

int
ingest_finished(const struct ingest *g)
{
	return g != NULL && __atomic_load_n(&g->finished, __ATOMIC_ACQUIRE);
}

void
ingest_stop(struct ingest *g)
{
	uint64_t one = 1;

	if (g == NULL || !g->started)
		return;
	/* Given up: the feeder need not parse what is left, and a sender
	 * still connected sees the stream closed. */
	if (!__atomic_load_n(&g->finished, __ATOMIC_ACQUIRE)) {
		spool_abort(g->spool);
		shutdown(g->fd, SHUT_RDWR);
	}
	if (write(g->stopfd, &one, sizeof(one)) < 0) {
		/* cannot overflow */
	}
	if (!g->direct)
		pthread_join(g->reader, NULL);
	pthread_join(g->feeder, NULL);
	g->started = 0;
}

int
ingest_result(struct ingest *g, struct err *e)
{
	if (g->complete)
		return 0;
	if (ingest_check(g, e) < 0)
		return -1;
	if (err_propagate(e, &g->finish_err, NULL) < 0)
		return -1;
	return err_set(e, ERR_FAIL, "the stream ended early");
}

const char *
ingest_machine(const struct ingest *g)
{
	return g->machine;
}

int
ingest_commit(struct ingest *g, struct img_stats *st, struct err *e)
{
	if (img_writer_commit(g->writer, st, e) < 0)
		return -1;
	/* The threads were joined (ingest_result() came first). */
	if (st != NULL) {
		st->cpu_s += g->feed_cpu;
		st->receive_cpu_s = g->read_cpu;
	}
	return 0;
}

void
ingest_free(struct ingest *g)
{
	if (g == NULL)
		return;
	ingest_stop(g);
	stream_parser_free(g->parser);
	img_writer_free(g->writer);
	spool_free(g->spool);
	pthread_mutex_destroy(&g->err_mu);
	if (g->wake >= 0)
		close(g->wake);
	if (g->stopfd >= 0)
		close(g->stopfd);
	free(g->name);
	free(g);
}
