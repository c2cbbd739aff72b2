/*
 * save.c - the compact memory image's writer (man/snapctl-image.5): fed by
 * the stream parser, it keeps only the newest copy of every page in a
 * fixed chunk cache, compresses evicted chunks on a thread pool into a
 * scratch log, and assembles the image at commit.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "imgfmt.h"
#include "save.h"
#include "util.h"

_Static_assert(IMG_PAGE_SIZE == STREAM_PAGE_SIZE, "the image's pages are "
    "the stream's");

#define MAX_RAM		(1ull << 44)	/* index < 4 GiB */
#define SCRATCH_ALIGN	4096u	/* frames start on blocks: holes free them */
#define IO_BUF		(1u << 20)
#define DEFAULT_CACHE	(192u << 20)
#define MAX_THREADS	64
#define HUGE_ALIGN	(2u << 20)	/* a transparent huge page */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23	/* Linux 5.14; older kernels say EINVAL */
#endif
#define PF_AHEAD	(16u << 20)	/* prefault this far past the buffers */
#define PF_STEP_BUFS	8u		/* ... told every 2 MiB of buffers */

/*
 * The writer.
 *
 * Every chunk has, besides its present and zero bitmaps, a newest
 * "version": the data pages last handed to compression (vmask).  That
 * version lives in a job's buffer while it is in flight and in the scratch
 * log once done; generations order versions, so a job that finishes after
 * a newer one was installed is simply dead.  A cache slot holds only the
 * pages written during its residency (written); on eviction the other data
 * pages are merged from the newest version, which a whole new pass over
 * memory never needs.
 */

struct wchunk {
	uint64_t present;
	uint64_t zero;
	uint64_t vmask;		/* data pages of the newest version */
	uint64_t foff;		/* newest finished frame in the scratch log */
	uint32_t fsize;
	uint32_t fcrc;		/* its CRC-32C */
	uint32_t fgen;		/* its generation (0: no frame) */
	uint32_t gen;		/* generation of the newest version */
	int32_t slot;		/* cache slot, or -1 */
	struct job *job;	/* newest version's job while in flight */
};

struct slot {
	uint8_t *buf;		/* a chunk, page i at i * IMG_PAGE_SIZE */
	uint64_t chunk;
	uint64_t written;	/* data pages written in this residency */
	int32_t prev, next;	/* LRU list, most recent first */
};

struct job {
	struct job *next;
	uint64_t chunk;
	uint32_t gen;
	uint64_t mask;		/* data pages of buf to compress */
	uint8_t *buf;
	uint64_t off;		/* result: where in the scratch log */
	uint64_t alloc;		/* bytes reserved there */
	size_t size;		/* compressed size */
	uint32_t crc;		/* of the compressed bytes */
	struct err err;
	/* At commit (direct): the frame stays in out for the committer to
	 * write in index order; finished is set under mu when it is done. */
	int direct, finished;
	uint8_t *out;		/* IMG_FRAME_MAX, allocated at commit */
};

struct worker {
	struct img_writer *w;
	pthread_t thread;
	ZSTD_CCtx *cctx;
	uint8_t *pack;		/* the data pages, packed */
	uint8_t *out;		/* IMG_FRAME_MAX */
};

struct img_writer {
	struct img_opts opts;
	struct atomic_file out;
	int scratch;			/* unlinked log of frames */
	uint64_t log_end;		/* atomic: next free scratch offset */
	int no_punch;
	int no_copy_range;
	int committed;
	int failed;
	struct err err;			/* the first failure, sticky */

	/* what the stream said */
	uint8_t *config;
	size_t config_len;
	char machine[IMG_MAX_MACHINE + 1];
	int have_config, have_blocks, have_tail;
	struct stream_block *blocks;
	size_t nblocks;
	uint32_t ram_section_id;
	uint64_t *bfirst;		/* first chunk of each block */
	uint64_t ram_bytes;
	int switchover, saw_end;
	uint32_t sections;
	uint64_t tail_off, tail_size, tail_len;
	uint32_t tail_crc;

	/* per chunk */
	struct wchunk *chunks;
	uint64_t nchunks;
	uint64_t pages, zero_pages, live_bytes, recompressions;

	/* cache */
	struct slot *slots;
	uint32_t nslots, nused;
	int32_t lru_head, lru_tail;
	uint8_t *arena;			/* every buffer, maxbufs chunks */
	size_t arena_len;		/* mapped bytes (arena is aligned in) */
	uint8_t *arena_map;
	uint32_t nbufs, maxbufs;	/* handed out, room for */
	/* The prefaulter: a thread that maps the arena's pages a little
	 * ahead of the buffers handed out, so that the parser's thread
	 * does not spend its time in page faults zeroing them. */
	pthread_t pf_thread;
	int pf_started, pf_stop;
	pthread_mutex_t pf_mu;
	pthread_cond_t pf_cv;
	size_t pf_done, pf_want;	/* arena bytes mapped, wanted */
	uint8_t **freebufs;
	uint32_t nfree;

	/* merge */
	ZSTD_DCtx *dctx;
	uint8_t *zbuf;			/* IMG_FRAME_MAX */
	uint8_t *dbuf;			/* IMG_CHUNK_BYTES */

	/* pool */
	struct worker *workers;
	int nworkers, started;
	struct job *jobs;
	struct job *freejobs;
	uint32_t maxjobs;
	uint32_t inflight;		/* jobs not yet reaped */
	pthread_mutex_t mu;
	pthread_cond_t cv_work, cv_done;
	struct job *qhead, *qtail;	/* queued */
	struct job *done;		/* finished, not reaped */
	int stop;
	int sync_ok;			/* mu and the conds were set up */
};

static int
writer_fail(struct img_writer *w, struct err *e)
{
	w->failed = 1;
	if (e != NULL && !err_isset(e))
		*e = w->err;
	return -1;
}

static void
punch(struct img_writer *w, uint64_t off, uint64_t len)
{
	if (w->no_punch || len == 0)
		return;
	/* Best effort: a file system without holes just keeps the bytes. */
	if (fallocate(w->scratch, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	    (off_t)off, (off_t)len) < 0 && errno == EOPNOTSUPP)
		w->no_punch = 1;
}

static uint64_t
aligned(uint64_t n)
{
	return (n + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
}

static int
scratch_append(struct img_writer *w, const void *buf, size_t len,
    uint64_t *off, uint64_t *alloc, struct err *e)
{
	*alloc = aligned(len);
	*off = __atomic_fetch_add(&w->log_end, *alloc, __ATOMIC_RELAXED);
	if (pwrite_full(w->scratch, buf, len, (off_t)*off) < 0)
		return err_sys(e, ERR_FAIL, "cannot write scratch file beside "
		    "'%s'", w->out.path);
	return 0;
}

/* Compress one job's pages into the scratch log (worker thread). */
static void
job_run(struct worker *wk, struct job *j)
{
	const uint8_t *src = j->buf;
	uint8_t *out;
	size_t len, n = 0;
	uint64_t m;
	unsigned i;

	if (j->mask != 0 && (j->mask & (j->mask + 1)) == 0) {
		len = img_mask_count(j->mask) * (size_t)IMG_PAGE_SIZE;
	} else {
		for (m = j->mask; m != 0; m &= m - 1) {
			i = (unsigned)__builtin_ctzll(m);
			memcpy(wk->pack + n, j->buf + (size_t)i *
			    IMG_PAGE_SIZE, IMG_PAGE_SIZE);
			n += IMG_PAGE_SIZE;
		}
		src = wk->pack;
		len = n;
	}
	out = j->direct ? j->out : wk->out;
	j->size = ZSTD_compress2(wk->cctx, out, IMG_FRAME_MAX, src, len);
	if (ZSTD_isError(j->size)) {
		err_set(&j->err, ERR_FAIL, "chunk %llu: zstd: %s",
		    (unsigned long long)j->chunk, ZSTD_getErrorName(j->size));
		return;
	}
	j->crc = crc32c(0, out, j->size);
	if (!j->direct)
		scratch_append(wk->w, out, j->size, &j->off, &j->alloc,
		    &j->err);
}

static void *
worker_main(void *arg)
{
	struct worker *wk = arg;
	struct img_writer *w = wk->w;
	struct job *j;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->qhead == NULL && !w->stop)
			pthread_cond_wait(&w->cv_work, &w->mu);
		if (w->stop)
			break;
		j = w->qhead;
		w->qhead = j->next;
		if (w->qhead == NULL)
			w->qtail = NULL;
		pthread_mutex_unlock(&w->mu);
		job_run(wk, j);
		pthread_mutex_lock(&w->mu);
		if (j->direct) {
			j->finished = 1;
		} else {
			j->next = w->done;
			w->done = j;
		}
		pthread_cond_signal(&w->cv_done);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Tell the prefaulter how far the buffers handed out have come. */
static void
prefault_ahead(struct img_writer *w)
{
	size_t want = (size_t)w->nbufs * IMG_CHUNK_BYTES + PF_AHEAD;

	pthread_mutex_lock(&w->pf_mu);
	if (want > w->pf_want) {
		w->pf_want = want;
		pthread_cond_signal(&w->pf_cv);
	}
	pthread_mutex_unlock(&w->pf_mu);
}

static void *
prefault_main(void *arg)
{
	struct img_writer *w = arg;
	size_t from, to, end = (size_t)w->maxbufs * IMG_CHUNK_BYTES;

	pthread_mutex_lock(&w->pf_mu);
	while (!w->pf_stop) {
		if (w->pf_done >= w->pf_want || w->pf_done >= end) {
			pthread_cond_wait(&w->pf_cv, &w->pf_mu);
			continue;
		}
		from = w->pf_done;
		to = w->pf_want < end ? w->pf_want : end;
		pthread_mutex_unlock(&w->pf_mu);
		/* Pages the parser faulted in meanwhile are left alone.  A
		 * kernel without it (before 5.14): the parser faults. */
		if (madvise(w->arena + from, to - from,
		    MADV_POPULATE_WRITE) < 0 && errno == EINVAL)
			to = end;
		pthread_mutex_lock(&w->pf_mu);
		w->pf_done = to;
	}
	pthread_mutex_unlock(&w->pf_mu);
	return NULL;
}

static void
buf_put(struct img_writer *w, uint8_t *b)
{
	w->freebufs[w->nfree++] = b;
}

static uint8_t *
buf_take(struct img_writer *w)
{
	uint8_t *b;

	if (w->nfree > 0)
		return w->freebufs[--w->nfree];
	/* Buffers = slots + jobs, and a job was taken first: never short. */
	if (w->nbufs >= w->maxbufs)
		abort();
	b = w->arena + (size_t)w->nbufs++ * IMG_CHUNK_BYTES;
	if (w->pf_started && w->nbufs % PF_STEP_BUFS == 1)
		prefault_ahead(w);
	return b;
}

/* Install what finished jobs produced (ingest thread only). */
static void
reap_list(struct img_writer *w, struct job *j)
{
	struct job *next;
	struct wchunk *c;

	for (; j != NULL; j = next) {
		next = j->next;
		c = &w->chunks[j->chunk];
		if (err_isset(&j->err)) {
			if (!w->failed) {
				w->err = j->err;
				w->failed = 1;
			}
		} else if (j->gen > c->fgen) {
			if (c->fsize != 0) {
				punch(w, c->foff, aligned(c->fsize));
				w->live_bytes -= c->fsize;
			}
			c->foff = j->off;
			c->fsize = (uint32_t)j->size;
			c->fcrc = j->crc;
			c->fgen = j->gen;
			w->live_bytes += j->size;
		} else {
			punch(w, j->off, j->alloc);
		}
		if (c->job == j)
			c->job = NULL;
		buf_put(w, j->buf);
		j->buf = NULL;
		err_clear(&j->err);
		j->next = w->freejobs;
		w->freejobs = j;
		w->inflight--;
	}
}

/* Reap finished jobs; with wait, block until at least one finished. */
static void
reap(struct img_writer *w, int wait)
{
	struct job *j;

	pthread_mutex_lock(&w->mu);
	while (wait && w->done == NULL && w->inflight > 0)
		pthread_cond_wait(&w->cv_done, &w->mu);
	j = w->done;
	w->done = NULL;
	pthread_mutex_unlock(&w->mu);
	reap_list(w, j);
}

static struct job *
job_take(struct img_writer *w)
{
	struct job *j;

	if (w->freejobs == NULL)
		reap(w, 0);
	while (w->freejobs == NULL)
		reap(w, 1);
	j = w->freejobs;
	w->freejobs = j->next;
	j->next = NULL;
	return j;
}

static void
job_submit(struct img_writer *w, struct job *j)
{
	w->inflight++;
	pthread_mutex_lock(&w->mu);
	if (w->qtail != NULL)
		w->qtail->next = j;
	else
		w->qhead = j;
	w->qtail = j;
	pthread_cond_signal(&w->cv_work);
	pthread_mutex_unlock(&w->mu);
}

/*
 * Decode a frame of npages packed pages from the scratch log into out
 * (the writer's own frames, but a disk can still lie).
 */
static int
scratch_decode(struct img_writer *w, uint64_t ci, uint64_t off,
    uint32_t size, uint32_t crc, unsigned npages, uint8_t *out,
    struct err *e)
{
	size_t want = (size_t)npages * IMG_PAGE_SIZE, n;
	ssize_t got;

	got = pread_full(w->scratch, w->zbuf, size, (off_t)off);
	if (got < 0)
		return err_sys(e, ERR_FAIL, "cannot read scratch file beside "
		    "'%s'", w->out.path);
	if ((size_t)got != size)
		return err_set(e, ERR_FAIL, "scratch file beside '%s' is "
		    "truncated", w->out.path);
	if (crc32c(0, w->zbuf, size) != crc)
		return err_set(e, ERR_FAIL, "chunk %llu in the scratch file: "
		    "CRC-32C mismatch", (unsigned long long)ci);
	n = ZSTD_decompressDCtx(w->dctx, out, want, w->zbuf, size);
	if (ZSTD_isError(n))
		return err_set(e, ERR_FAIL, "chunk %llu in the scratch file: "
		    "zstd: %s", (unsigned long long)ci, ZSTD_getErrorName(n));
	if (n != want)
		return err_set(e, ERR_FAIL, "chunk %llu in the scratch file: "
		    "short frame", (unsigned long long)ci);
	return 0;
}

/* Copy the pages of mask from the chunk's newest version into buf. */
static int
merge(struct img_writer *w, uint64_t ci, uint8_t *buf, uint64_t mask,
    struct err *e)
{
	struct wchunk *c = &w->chunks[ci];
	unsigned i, rank;
	uint64_t m;

	if (c->job != NULL) {
		/* In flight: its buffer is complete and only read. */
		for (m = mask; m != 0; m &= m - 1) {
			i = (unsigned)__builtin_ctzll(m);
			memcpy(buf + (size_t)i * IMG_PAGE_SIZE,
			    c->job->buf + (size_t)i * IMG_PAGE_SIZE,
			    IMG_PAGE_SIZE);
		}
		return 0;
	}
	if (c->fgen != c->gen || c->fsize == 0 || (mask & ~c->vmask) != 0)
		return err_set(e, ERR_FAIL, "chunk %llu: internal error: "
		    "pages to merge are in no version",
		    (unsigned long long)ci);
	if (scratch_decode(w, ci, c->foff, c->fsize, c->fcrc,
	    img_mask_count(c->vmask), w->dbuf, e) < 0)
		return -1;
	for (m = mask; m != 0; m &= m - 1) {
		i = (unsigned)__builtin_ctzll(m);
		rank = img_mask_count(c->vmask & ((1ull << i) - 1));
		memcpy(buf + (size_t)i * IMG_PAGE_SIZE,
		    w->dbuf + (size_t)rank * IMG_PAGE_SIZE, IMG_PAGE_SIZE);
	}
	return 0;
}

static void
lru_unlink(struct img_writer *w, int32_t s)
{
	struct slot *sl = &w->slots[s];

	if (sl->prev >= 0)
		w->slots[sl->prev].next = sl->next;
	else
		w->lru_head = sl->next;
	if (sl->next >= 0)
		w->slots[sl->next].prev = sl->prev;
	else
		w->lru_tail = sl->prev;
	sl->prev = sl->next = -1;
}

static void
lru_push(struct img_writer *w, int32_t s)
{
	struct slot *sl = &w->slots[s];

	sl->prev = -1;
	sl->next = w->lru_head;
	if (w->lru_head >= 0)
		w->slots[w->lru_head].prev = s;
	w->lru_head = s;
	if (w->lru_tail < 0)
		w->lru_tail = s;
}

/* A chunk with no data page left: every older version is dead. */
static void
drop_versions(struct img_writer *w, struct wchunk *c)
{
	c->gen++;
	if (c->fsize != 0) {
		punch(w, c->foff, aligned(c->fsize));
		w->live_bytes -= c->fsize;
	}
	c->foff = 0;
	c->fsize = 0;
	c->fcrc = 0;
	c->fgen = c->gen;
	c->vmask = 0;
	c->job = NULL;
}

/*
 * Hand slot s's chunk to compression as its newest version; the slot
 * keeps a fresh buffer and is left unlinked and empty.
 */
static int
evict(struct img_writer *w, int32_t s, struct err *e)
{
	struct slot *sl = &w->slots[s];
	struct wchunk *c = &w->chunks[sl->chunk];
	uint64_t data = c->present & ~c->zero;
	struct job *j;

	if ((data & ~sl->written) != 0 &&
	    merge(w, sl->chunk, sl->buf, data & ~sl->written, &w->err) < 0)
		return writer_fail(w, e);
	lru_unlink(w, s);
	c->slot = -1;
	if (data == 0) {
		drop_versions(w, c);
		return 0;
	}
	j = job_take(w);
	if (c->gen > 0)
		w->recompressions++;
	j->chunk = sl->chunk;
	j->gen = ++c->gen;
	j->mask = data;
	j->buf = sl->buf;
	c->job = j;
	c->vmask = data;
	sl->buf = buf_take(w);
	job_submit(w, j);
	return 0;
}

/* A cache slot for chunk ci, evicting the least recently used one. */
static int
slot_get(struct img_writer *w, uint64_t ci, struct err *e)
{
	int32_t s;

	if (w->nused < w->nslots) {
		s = (int32_t)w->nused++;
		w->slots[s].buf = buf_take(w);
	} else {
		s = w->lru_tail;
		if (evict(w, s, e) < 0)
			return -1;
	}
	w->slots[s].chunk = ci;
	w->slots[s].written = 0;
	w->chunks[ci].slot = s;
	lru_push(w, s);
	return s;
}

static int
sink_config(void *opaque, const uint8_t *raw, size_t len,
    const char *machine, struct err *e)
{
	struct img_writer *w = opaque;
	size_t mlen = machine != NULL ? strlen(machine) : 0;

	if (w->failed)
		return writer_fail(w, e);
	if (w->have_config)
		return err_set(e, ERR_FAIL, "second configuration section");
	if (len > IMG_MAX_CONFIG)
		return err_set(e, ERR_FAIL, "configuration section too large "
		    "(%zu bytes)", len);
	if (mlen > IMG_MAX_MACHINE)
		return err_set(e, ERR_FAIL, "machine type too long");
	w->config = xmalloc(len);
	if (len)
		memcpy(w->config, raw, len);
	w->config_len = len;
	if (mlen)
		memcpy(w->machine, machine, mlen);
	w->machine[mlen] = '\0';
	w->have_config = 1;
	return 0;
}

static int
sink_blocks(void *opaque, const struct stream_block *blocks, size_t nblocks,
    uint32_t ram_section_id, struct err *e)
{
	struct img_writer *w = opaque;
	uint64_t ram = 0, n = 0;
	size_t i, k, len;

	if (w->failed)
		return writer_fail(w, e);
	if (w->have_blocks)
		return err_set(e, ERR_FAIL, "second RAM block list");
	if (nblocks > IMG_MAX_BLOCKS)
		return err_set(e, ERR_FAIL, "too many RAM blocks (%zu)",
		    nblocks);
	for (i = 0; i < nblocks; i++) {
		len = strnlen(blocks[i].name, sizeof(blocks[i].name));
		if (len == 0 || len > STREAM_BLOCK_NAME_MAX)
			return err_set(e, ERR_FAIL, "RAM block %zu: bad name",
			    i);
		if (blocks[i].used_length % IMG_PAGE_SIZE != 0 ||
		    blocks[i].used_length >= IMG_MAX_USED_LEN)
			return err_set(e, ERR_FAIL, "RAM block '%s': bad "
			    "length 0x%llx", blocks[i].name,
			    (unsigned long long)blocks[i].used_length);
		for (k = 0; k < i; k++)
			if (strcmp(blocks[k].name, blocks[i].name) == 0)
				return err_set(e, ERR_FAIL, "RAM block '%s' "
				    "listed twice", blocks[i].name);
		ram += blocks[i].used_length;
		if (ram > MAX_RAM)
			return err_set(e, ERR_FAIL, "RAM blocks too large");
	}
	w->blocks = xcalloc(nblocks, sizeof(*w->blocks));
	w->bfirst = xcalloc(nblocks + 1, sizeof(*w->bfirst));
	for (i = 0; i < nblocks; i++) {
		w->blocks[i] = blocks[i];
		if (!w->blocks[i].has_mr_addr)
			w->blocks[i].mr_addr = 0;
		w->bfirst[i] = n;
		n += img_chunks_of(blocks[i].used_length);
	}
	w->bfirst[nblocks] = n;
	w->nblocks = nblocks;
	w->nchunks = n;
	w->ram_bytes = ram;
	w->ram_section_id = ram_section_id;
	w->chunks = xcalloc(n ? n : 1, sizeof(*w->chunks));
	for (k = 0; k < n; k++)
		w->chunks[k].slot = -1;
	w->have_blocks = 1;
	return 0;
}

static int
sink_page(void *opaque, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct img_writer *w = opaque;
	struct wchunk *c;
	struct slot *sl;
	uint64_t ci, bit;
	unsigned pi;
	int32_t s;

	if (w->failed)
		return writer_fail(w, e);
	if (block >= w->nblocks)
		return err_set(e, ERR_FAIL, "page for unknown RAM block %u",
		    block);
	if (offset % IMG_PAGE_SIZE != 0 ||
	    offset >= w->blocks[block].used_length)
		return err_set(e, ERR_FAIL, "page at offset 0x%llx outside "
		    "RAM block '%s'", (unsigned long long)offset,
		    w->blocks[block].name);
	ci = w->bfirst[block] + offset / IMG_CHUNK_BYTES;
	pi = (unsigned)(offset % IMG_CHUNK_BYTES / IMG_PAGE_SIZE);
	bit = 1ull << pi;
	c = &w->chunks[ci];
	if (data != NULL && is_zero(data, IMG_PAGE_SIZE))
		data = NULL;
	if (!(c->present & bit)) {
		w->pages++;
		c->present |= bit;
	} else if (c->zero & bit) {
		w->zero_pages--;
	}
	if (data == NULL) {
		w->zero_pages++;
		c->zero |= bit;
		if (c->slot >= 0)
			w->slots[c->slot].written &= ~bit;
		else if ((c->vmask & bit) && slot_get(w, ci, e) < 0)
			return -1;
		return 0;
	}
	c->zero &= ~bit;
	s = c->slot;
	if (s < 0) {
		if ((s = slot_get(w, ci, e)) < 0)
			return -1;
	} else if (s != w->lru_head) {
		lru_unlink(w, s);
		lru_push(w, s);
	}
	sl = &w->slots[s];
	memcpy(sl->buf + (size_t)pi * IMG_PAGE_SIZE, data, IMG_PAGE_SIZE);
	sl->written |= bit;
	return 0;
}

static int
sink_section(void *opaque, int type, struct err *e)
{
	struct img_writer *w = opaque;

	if (w->failed)
		return writer_fail(w, e);
	w->sections++;
	if (type == 3)
		w->saw_end = 1;
	return 0;
}

static int
sink_switchover(void *opaque, struct err *e)
{
	struct img_writer *w = opaque;

	if (w->failed)
		return writer_fail(w, e);
	w->switchover = 1;
	return 0;
}

static int
sink_tail(void *opaque, const uint8_t *data, size_t len, struct err *e)
{
	struct img_writer *w = opaque;
	ZSTD_CCtx *cctx = NULL;
	uint8_t *out = NULL;
	size_t cap, n;
	uint64_t alloc;
	int rc = -1;

	if (w->failed)
		return writer_fail(w, e);
	if (w->have_tail)
		return err_set(e, ERR_FAIL, "second device state tail");
	if (len > STREAM_TAIL_MAX)
		return err_set(e, ERR_FAIL, "device state too large (%zu "
		    "bytes)", len);
	cap = ZSTD_compressBound(len);
	out = xmalloc(cap);
	if ((cctx = ZSTD_createCCtx()) == NULL) {
		err_set(e, ERR_FAIL, "zstd: cannot create a context");
		goto out;
	}
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, w->opts.level);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
	n = ZSTD_compress2(cctx, out, cap, data, len);
	if (ZSTD_isError(n)) {
		err_set(e, ERR_FAIL, "device state: zstd: %s",
		    ZSTD_getErrorName(n));
		goto out;
	}
	if (scratch_append(w, out, n, &w->tail_off, &alloc, &w->err) < 0) {
		writer_fail(w, e);
		goto out;
	}
	w->tail_size = n;
	w->tail_len = len;
	w->tail_crc = crc32c(0, out, n);
	w->have_tail = 1;
	rc = 0;
out:
	ZSTD_freeCCtx(cctx);
	free(out);
	return rc;
}

const struct stream_sink *
img_writer_sink(void)
{
	static const struct stream_sink sink = {
		sink_config, sink_blocks, sink_page, sink_section,
		sink_switchover, sink_tail,
	};

	return &sink;
}

static int
scratch_open(struct img_writer *w, struct err *e)
{
	char *dir = path_dirname(w->out.path), *name = NULL;
	int rc = -1;

	w->scratch = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (w->scratch < 0) {
		name = xasprintf("%s/.snapctl-scratch-XXXXXX", dir);
		w->scratch = mkostemp(name, O_CLOEXEC);
		if (w->scratch < 0) {
			err_sys(e, ERR_FAIL, "cannot create a scratch file in "
			    "'%s'", dir);
			goto out;
		}
		unlink(name);
	}
	rc = 0;
out:
	free(name);
	free(dir);
	return rc;
}

static void
pool_stop(struct img_writer *w)
{
	int i;

	if (!w->sync_ok)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	pthread_cond_broadcast(&w->cv_work);
	pthread_mutex_unlock(&w->mu);
	for (i = 0; i < w->started; i++)
		pthread_join(w->workers[i].thread, NULL);
	w->started = 0;
	if (w->pf_started) {
		pthread_mutex_lock(&w->pf_mu);
		w->pf_stop = 1;
		pthread_cond_signal(&w->pf_cv);
		pthread_mutex_unlock(&w->pf_mu);
		pthread_join(w->pf_thread, NULL);
		w->pf_started = 0;
	}
}

/*
 * The chunk buffers, one mapping touched only as buffers are handed out:
 * on transparent huge pages where the kernel allows (a fault per 2 MiB
 * instead of per 4 KiB: on a 256 MiB guest, the page faults of filling
 * the cache were a fifth of compact's CPU).
 */
static int
arena_map(struct img_writer *w, struct err *e)
{
	size_t want = (size_t)w->maxbufs * IMG_CHUNK_BYTES;
	uintptr_t a;
	void *p;

	w->arena_len = want + HUGE_ALIGN;
	p = mmap(NULL, w->arena_len, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		w->arena_len = 0;
		return err_sys(e, ERR_FAIL, "cannot map %zu bytes for the "
		    "chunk cache", want);
	}
	w->arena_map = p;
	a = ((uintptr_t)p + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1);
	w->arena = (uint8_t *)a;
	/* Best effort: without THP the buffers are ordinary pages. */
	(void)madvise(w->arena, want, MADV_HUGEPAGE);
	return 0;
}

struct img_writer *
img_writer_new(const char *path, const struct img_opts *o, struct err *e)
{
	struct img_writer *w = xcalloc(1, sizeof(*w));
	struct img_opts def = IMG_OPTS_INIT;
	struct stat st;
	long ncpu;
	uint32_t i;
	int k;

	w->scratch = -1;
	w->lru_head = w->lru_tail = -1;
	w->out.fd = -1;
	w->opts = o != NULL ? *o : def;
	if (w->opts.level == 0)
		w->opts.level = 1;
	if (w->opts.level < ZSTD_minCLevel() ||
	    w->opts.level > ZSTD_maxCLevel()) {
		err_set(e, ERR_USAGE, "invalid zstd level %d", w->opts.level);
		goto fail;
	}
	if (w->opts.threads <= 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		w->opts.threads = ncpu > 0 ? (int)(ncpu < MAX_THREADS ? ncpu :
		    MAX_THREADS) : 1;
	}
	if (w->opts.threads > MAX_THREADS)
		w->opts.threads = MAX_THREADS;
	if (w->opts.cache_bytes == 0)
		w->opts.cache_bytes = DEFAULT_CACHE;
	if (lstat(path, &st) == 0) {
		err_set(e, ERR_FAIL, "'%s' already exists", path);
		goto fail;
	}
	if (errno != ENOENT) {
		err_sys(e, ERR_FAIL, "cannot create '%s'", path);
		goto fail;
	}
	if (atomic_file_open(&w->out, path, 0600, e) < 0)
		goto fail;
	if (scratch_open(w, e) < 0)
		goto fail;

	w->nslots = (uint32_t)(w->opts.cache_bytes / IMG_CHUNK_BYTES <
	    (1u << 20) ? w->opts.cache_bytes / IMG_CHUNK_BYTES : (1u << 20));
	if (w->nslots == 0)
		w->nslots = 1;
	w->slots = xcalloc(w->nslots, sizeof(*w->slots));
	w->nworkers = w->opts.threads;
	w->maxjobs = 2 * (uint32_t)w->nworkers + 2;
	w->maxbufs = w->nslots + w->maxjobs;
	if (arena_map(w, e) < 0)
		goto fail;
	w->freebufs = xcalloc(w->maxbufs, sizeof(*w->freebufs));
	w->jobs = xcalloc(w->maxjobs, sizeof(*w->jobs));
	for (i = 0; i < w->maxjobs; i++) {
		w->jobs[i].next = w->freejobs;
		w->freejobs = &w->jobs[i];
	}
	w->zbuf = xmalloc(IMG_FRAME_MAX);
	w->dbuf = xmalloc(IMG_CHUNK_BYTES);
	if ((w->dctx = ZSTD_createDCtx()) == NULL) {
		err_set(e, ERR_FAIL, "zstd: cannot create a context");
		goto fail;
	}
	w->workers = xcalloc((size_t)w->nworkers, sizeof(*w->workers));
	for (k = 0; k < w->nworkers; k++) {
		struct worker *wk = &w->workers[k];

		wk->w = w;
		wk->pack = xmalloc(IMG_CHUNK_BYTES);
		wk->out = xmalloc(IMG_FRAME_MAX);
		if ((wk->cctx = ZSTD_createCCtx()) == NULL) {
			err_set(e, ERR_FAIL, "zstd: cannot create a context");
			goto fail;
		}
		ZSTD_CCtx_setParameter(wk->cctx, ZSTD_c_compressionLevel,
		    w->opts.level);
		ZSTD_CCtx_setParameter(wk->cctx, ZSTD_c_checksumFlag, 1);
		ZSTD_CCtx_setParameter(wk->cctx, ZSTD_c_contentSizeFlag, 1);
	}
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv_work, NULL);
	pthread_cond_init(&w->cv_done, NULL);
	pthread_mutex_init(&w->pf_mu, NULL);
	pthread_cond_init(&w->pf_cv, NULL);
	w->sync_ok = 1;
	if (thread_start(&w->pf_thread, prefault_main, w, "prefaulting",
	    e) < 0)
		goto fail;
	w->pf_started = 1;
	/* Workers block every signal, so SIGINT interrupts the caller's
	 * read() rather than a worker's write. */
	for (k = 0; k < w->nworkers; k++) {
		if (thread_start(&w->workers[k].thread, worker_main,
		    &w->workers[k], "compression", e) < 0)
			goto fail;
		w->started++;
	}
	return w;
fail:
	img_writer_free(w);
	return NULL;
}

/* Copy len bytes from the scratch log to the image file. */
static int
copy_out(struct img_writer *w, uint64_t src, uint64_t dst, uint64_t len,
    uint8_t *iobuf, struct err *e)
{
	loff_t in, out;
	ssize_t n;
	size_t step;

	while (len > 0) {
		if (!w->no_copy_range) {
			in = (loff_t)src;
			out = (loff_t)dst;
			n = copy_file_range(w->scratch, &in, w->out.fd, &out,
			    (size_t)len, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EXDEV || errno == ENOSYS ||
			    errno == EINVAL || errno == EOPNOTSUPP ||
			    errno == EBADF)) {
				w->no_copy_range = 1;
				continue;
			}
			if (n < 0)
				return err_sys(e, ERR_FAIL, "cannot write '%s'",
				    w->out.tmp);
		} else {
			step = len < IO_BUF ? (size_t)len : IO_BUF;
			n = pread_full(w->scratch, iobuf, step, (off_t)src);
			if (n < 0)
				return err_sys(e, ERR_FAIL, "cannot read "
				    "scratch file beside '%s'", w->out.path);
			if (n > 0 && pwrite_full(w->out.fd, iobuf, (size_t)n,
			    (off_t)dst) < 0)
				return err_sys(e, ERR_FAIL, "cannot write '%s'",
				    w->out.tmp);
		}
		if (n == 0)
			return err_set(e, ERR_FAIL, "scratch file beside '%s' "
			    "is truncated", w->out.path);
		src += (uint64_t)n;
		dst += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

static void
put_skippable(uint8_t *p, uint32_t magic, uint64_t region_size)
{
	put_le32(p, magic);
	put_le32(p + 4, (uint32_t)(region_size - IMG_SKIP_SIZE));
}

static void
put_le16(uint8_t *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

/* The metadata region, complete (frame header included). */
static void
meta_build(struct img_writer *w, struct buf *m, uint64_t frames)
{
	uint8_t fixed[IMG_META_FIXED], be[IMG_BLOCK_FIXED];
	size_t mlen = strlen(w->machine), i, nlen;

	memset(fixed, 0, sizeof(fixed));
	buf_add(m, fixed, IMG_SKIP_SIZE);
	put_le32(fixed + IMG_META_RAM_SECTION, w->ram_section_id);
	put_le32(fixed + IMG_META_NBLOCKS, (uint32_t)w->nblocks);
	put_le32(fixed + IMG_META_MACHINE_LEN, (uint32_t)mlen);
	put_le32(fixed + IMG_META_CONFIG_LEN, (uint32_t)w->config_len);
	put_le64(fixed + IMG_META_RAM_BYTES, w->ram_bytes);
	put_le64(fixed + IMG_META_CHUNKS, w->nchunks);
	put_le64(fixed + IMG_META_FRAMES, frames);
	put_le64(fixed + IMG_META_PAGES, w->pages);
	put_le64(fixed + IMG_META_ZERO_PAGES, w->zero_pages);
	put_le64(fixed + IMG_META_TAIL_LEN, w->tail_len);
	buf_add(m, fixed, sizeof(fixed));
	buf_add(m, w->machine, mlen);
	buf_add(m, w->config, w->config_len);
	for (i = 0; i < w->nblocks; i++) {
		nlen = strlen(w->blocks[i].name);
		memset(be, 0, sizeof(be));
		put_le64(be + IMG_BLOCK_USED_LEN, w->blocks[i].used_length);
		put_le64(be + IMG_BLOCK_MR_ADDR, w->blocks[i].mr_addr);
		put_le32(be + IMG_BLOCK_FLAGS, w->blocks[i].has_mr_addr ?
		    IMG_BLK_F_MR_ADDR : 0);
		put_le16(be + IMG_BLOCK_NAME_LEN, (uint16_t)nlen);
		buf_add(m, be, sizeof(be));
		buf_add(m, w->blocks[i].name, nlen);
	}
	put_skippable(m->data, IMG_SKIP_META, m->len);
}

/*
 * The data region at commit, frame after frame in index order from *pos.
 * A chunk still in the cache is compressed now by the pool straight for
 * the image (its frame never goes through the scratch log and back); the
 * frame of any other chunk is copied from the log.  A window of entries
 * lets the pool compress ahead while the main thread writes.  Fills each
 * chunk's fsize and fcrc as written, counts frames.
 */
struct pending {
	uint64_t ci;
	struct job *job;	/* NULL: the frame is in the scratch log */
};

#define COMMIT_WINDOW	256u

/* Write the oldest pending entry, waiting for its job if it must. */
static int
pending_write(struct img_writer *w, const struct pending *p, uint64_t *pos,
    uint8_t *iobuf, struct err *e)
{
	struct wchunk *c = &w->chunks[p->ci];
	struct job *j = p->job;
	int rc = 0;

	if (j == NULL) {
		if (copy_out(w, c->foff, *pos, c->fsize, iobuf, e) < 0)
			return -1;
		*pos += c->fsize;
		return 0;
	}
	pthread_mutex_lock(&w->mu);
	while (!j->finished)
		pthread_cond_wait(&w->cv_done, &w->mu);
	pthread_mutex_unlock(&w->mu);
	if (err_isset(&j->err)) {
		err_propagate(e, &j->err, NULL);
		rc = -1;
	} else if (pwrite_full(w->out.fd, j->out, j->size, (off_t)*pos) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", w->out.tmp);
		rc = -1;
	} else {
		c->foff = 0;	/* in the image now, not the log */
		c->fsize = (uint32_t)j->size;
		c->fcrc = j->crc;
		c->fgen = j->gen;
		*pos += j->size;
	}
	buf_put(w, j->buf);
	j->buf = NULL;
	j->direct = j->finished = 0;
	err_clear(&j->err);
	j->next = w->freejobs;
	w->freejobs = j;
	return rc;
}

static int
pending_ready(const struct pending *p)
{
	return p->job == NULL || __atomic_load_n(&p->job->finished,
	    __ATOMIC_ACQUIRE);
}

/* Slot s's chunk as a direct job, or NULL if it has no data left. */
static int
commit_job(struct img_writer *w, int32_t s, struct job **jp, struct err *e)
{
	struct slot *sl = &w->slots[s];
	struct wchunk *c = &w->chunks[sl->chunk];
	uint64_t data = c->present & ~c->zero;
	struct job *j;

	*jp = NULL;
	if ((data & ~sl->written) != 0 &&
	    merge(w, sl->chunk, sl->buf, data & ~sl->written, e) < 0)
		return -1;
	lru_unlink(w, s);
	c->slot = -1;
	if (data == 0) {
		drop_versions(w, c);
		buf_put(w, sl->buf);
		sl->buf = NULL;
		return 0;
	}
	j = w->freejobs;
	w->freejobs = j->next;
	if (c->gen > 0)
		w->recompressions++;
	j->next = NULL;
	j->chunk = sl->chunk;
	j->gen = ++c->gen;
	j->mask = data;
	j->buf = sl->buf;
	j->direct = 1;
	j->finished = 0;
	sl->buf = NULL;
	c->vmask = data;
	c->job = NULL;
	pthread_mutex_lock(&w->mu);
	if (w->qtail != NULL)
		w->qtail->next = j;
	else
		w->qhead = j;
	w->qtail = j;
	pthread_cond_signal(&w->cv_work);
	pthread_mutex_unlock(&w->mu);
	*jp = j;
	return 0;
}

static int
write_data(struct img_writer *w, uint64_t *pos, uint64_t *frames,
    uint8_t *iobuf, struct err *e)
{
	struct pending ring[COMMIT_WINDOW], *p;
	uint32_t head = 0, n = 0, i;
	struct wchunk *c;
	struct job *j;
	uint64_t ci;

	/* Every eviction's frame into the log first: merges read it there,
	 * and every job is free for the commit. */
	while (w->inflight > 0)
		reap(w, 1);
	if (w->failed)
		return writer_fail(w, e);
	for (i = 0; i < w->maxjobs; i++)
		if (w->jobs[i].out == NULL)
			w->jobs[i].out = xmalloc(IMG_FRAME_MAX);
	*frames = 0;
	for (ci = 0; ci <= w->nchunks; ci++) {
		/* Room: a free job and a free entry (at the end: none left). */
		while (n > 0 && (ci == w->nchunks || n == COMMIT_WINDOW ||
		    w->freejobs == NULL || pending_ready(&ring[head]))) {
			if (pending_write(w, &ring[head], pos, iobuf, e) < 0)
				return -1;
			head = (head + 1) % COMMIT_WINDOW;
			n--;
		}
		if (ci == w->nchunks)
			break;
		c = &w->chunks[ci];
		j = NULL;
		if (c->slot >= 0) {
			if (commit_job(w, c->slot, &j, e) < 0)
				return -1;
			if (j == NULL)
				continue;
		} else if (c->fsize == 0) {
			continue;
		}
		p = &ring[(head + n) % COMMIT_WINDOW];
		p->ci = ci;
		p->job = j;
		n++;
		++*frames;
	}
	return 0;
}

int
img_writer_commit(struct img_writer *w, struct img_stats *st, struct err *e)
{
	struct buf meta = BUF_INIT;
	uint8_t hdr[IMG_HDR_SIZE], *iobuf = NULL, *ib = NULL;
	uint64_t pos, frames = 0, ci, data_off, tail_off, index_off, end;
	size_t ilen = 0;
	uint32_t icrc;
	struct wchunk *c;
	int rc = -1;

	if (w->failed)
		return writer_fail(w, e);
	if (w->committed)
		return err_set(e, ERR_FAIL, "image '%s' already committed",
		    w->out.path);
	if (!w->have_config || !w->have_blocks || !w->have_tail) {
		err_set(e, ERR_FAIL, "stream ended before its %s",
		    !w->have_config ? "configuration section" :
		    !w->have_blocks ? "RAM block list" : "device state");
		goto out;
	}
	/* The metadata's length does not depend on the frame count: build
	 * it once for the data offset, again once the frames are known. */
	meta_build(w, &meta, 0);
	if (meta.len > IMG_MAX_META) {
		err_set(e, ERR_FAIL, "image metadata too large");
		goto out;
	}
	iobuf = xmalloc(IO_BUF);
	ib = xmalloc(IO_BUF);
	data_off = pos = IMG_HDR_SIZE + meta.len;
	if (write_data(w, &pos, &frames, iobuf, e) < 0)
		goto out;
	buf_reset(&meta);
	meta_build(w, &meta, frames);
	if (pwrite_full(w->out.fd, meta.data, meta.len, IMG_HDR_SIZE) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", w->out.tmp);
		goto out;
	}
	tail_off = pos;
	if (copy_out(w, w->tail_off, pos, w->tail_size, iobuf, e) < 0)
		goto out;
	pos += w->tail_size;

	/* The index, streamed: its CRC runs over the whole region. */
	index_off = pos;
	put_skippable(ib, IMG_SKIP_INDEX, IMG_SKIP_SIZE +
	    w->nchunks * IMG_ENTRY_SIZE);
	ilen = IMG_SKIP_SIZE;
	icrc = 0;
	pos = data_off;
	for (ci = 0; ci <= w->nchunks; ci++) {
		if (ilen + IMG_ENTRY_SIZE > IO_BUF || ci == w->nchunks) {
			icrc = crc32c(icrc, ib, ilen);
			end = index_off + (uint64_t)(ci * IMG_ENTRY_SIZE +
			    IMG_SKIP_SIZE) - ilen;
			if (pwrite_full(w->out.fd, ib, ilen, (off_t)end) < 0) {
				err_sys(e, ERR_FAIL, "cannot write '%s'",
				    w->out.tmp);
				goto out;
			}
			ilen = 0;
		}
		if (ci == w->nchunks)
			break;
		c = &w->chunks[ci];
		memset(ib + ilen, 0, IMG_ENTRY_SIZE);
		if (c->fsize != 0) {
			put_le64(ib + ilen + IMG_ENTRY_FRAME_OFF, pos);
			put_le32(ib + ilen + IMG_ENTRY_FRAME_SIZE, c->fsize);
			put_le32(ib + ilen + IMG_ENTRY_FRAME_CRC, c->fcrc);
			pos += c->fsize;
		}
		put_le64(ib + ilen + IMG_ENTRY_PRESENT, c->present);
		put_le64(ib + ilen + IMG_ENTRY_ZERO, c->zero);
		ilen += IMG_ENTRY_SIZE;
	}
	end = index_off + IMG_SKIP_SIZE + w->nchunks * IMG_ENTRY_SIZE;

	memset(hdr, 0, sizeof(hdr));
	put_skippable(hdr, IMG_SKIP_HDR, IMG_HDR_SIZE);
	memcpy(hdr + IMG_HDR_MAGIC, IMG_MAGIC, IMG_MAGIC_LEN);
	put_le32(hdr + IMG_HDR_VERSION, IMG_VERSION);
	put_le32(hdr + IMG_HDR_FLAGS, IMG_F_FRAME_CRCS |
	    (w->switchover ? IMG_F_SWITCHOVER_START : 0) |
	    (w->saw_end ? 0 : IMG_F_NO_END));
	put_le32(hdr + IMG_HDR_PAGE_SIZE, IMG_PAGE_SIZE);
	put_le32(hdr + IMG_HDR_CHUNK_PAGES, IMG_CHUNK_PAGES);
	put_le64(hdr + IMG_HDR_FILE_SIZE, end);
	put_le64(hdr + IMG_HDR_META_OFF, IMG_HDR_SIZE);
	put_le64(hdr + IMG_HDR_META_SIZE, meta.len);
	put_le64(hdr + IMG_HDR_DATA_OFF, data_off);
	put_le64(hdr + IMG_HDR_DATA_SIZE, tail_off - data_off);
	put_le64(hdr + IMG_HDR_TAIL_OFF, tail_off);
	put_le64(hdr + IMG_HDR_TAIL_SIZE, w->tail_size);
	put_le64(hdr + IMG_HDR_INDEX_OFF, index_off);
	put_le64(hdr + IMG_HDR_INDEX_SIZE, end - index_off);
	put_le32(hdr + IMG_HDR_META_CRC, crc32c(0, meta.data, meta.len));
	put_le32(hdr + IMG_HDR_INDEX_CRC, icrc);
	put_le32(hdr + IMG_HDR_TAIL_CRC, w->tail_crc);
	put_le32(hdr + IMG_HDR_CRC, crc32c(0, hdr, IMG_HDR_CRC));
	if (pwrite_full(w->out.fd, hdr, sizeof(hdr), 0) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", w->out.tmp);
		goto out;
	}
	if (atomic_file_commit(&w->out, 1, e) < 0)
		goto out;
	w->committed = 1;
	w->live_bytes = tail_off - data_off;
	if (st != NULL) {
		img_writer_stats(w, st);
		st->file_bytes = end;
	}
	rc = 0;
out:
	if (rc < 0)
		w->failed = 1;
	if (rc < 0 && !err_isset(&w->err) && e != NULL)
		w->err = *e;
	buf_release(&meta);
	free(iobuf);
	free(ib);
	return rc;
}

void
img_writer_stats(const struct img_writer *w, struct img_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->ram_bytes = w->ram_bytes;
	st->pages = w->pages;
	st->zero_pages = w->zero_pages;
	st->data_bytes = w->live_bytes;
	st->tail_bytes = w->tail_len;
	st->recompressions = w->recompressions;
}

void
img_writer_free(struct img_writer *w)
{
	uint32_t i;
	int k;

	if (w == NULL)
		return;
	pool_stop(w);
	if (w->sync_ok) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv_work);
		pthread_cond_destroy(&w->cv_done);
		pthread_mutex_destroy(&w->pf_mu);
		pthread_cond_destroy(&w->pf_cv);
	}
	atomic_file_release(&w->out);
	if (w->scratch >= 0)
		close(w->scratch);
	for (i = 0; w->jobs != NULL && i < w->maxjobs; i++)
		free(w->jobs[i].out);
	for (k = 0; w->workers != NULL && k < w->nworkers; k++) {
		ZSTD_freeCCtx(w->workers[k].cctx);
		free(w->workers[k].pack);
		free(w->workers[k].out);
	}
	free(w->workers);
	if (w->arena_map != NULL)
		munmap(w->arena_map, w->arena_len);
	free(w->freebufs);
	free(w->jobs);
	free(w->slots);
	free(w->chunks);
	free(w->blocks);
	free(w->bfirst);
	free(w->config);
	ZSTD_freeDCtx(w->dctx);
	free(w->zbuf);
	free(w->dbuf);
	free(w);
}
