/*
 * save.c - the compact memory image (man/snapctl-image.5): a writer fed by
 * the stream parser that keeps only the newest copy of every page in a
 * fixed chunk cache, compresses evicted chunks on a thread pool into a
 * scratch log, and assembles the image at commit; and a reader that
 * decodes any page by decoding only its chunk.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "save.h"
#include "util.h"

#define PAGE		STREAM_PAGE_SIZE
#define CHUNK_PAGES	IMG_CHUNK_PAGES
#define CHUNK_BYTES	(PAGE * CHUNK_PAGES)

#define HDR_SIZE	128u
#define SKIP_HDR	0x184D2A53u
#define SKIP_META	0x184D2A54u
#define SKIP_INDEX	0x184D2A55u
#define ZSTD_MAGIC	0xFD2FB528u
#define IMG_MAGIC	"SNAPIMG"	/* 8 bytes with its NUL */
#define IMG_VERSION	1u
#define IMG_F_ALL	(IMG_F_SWITCHOVER_START | IMG_F_NO_END | \
			    IMG_F_FRAME_CRCS)

#define META_FIXED	64u
#define BLOCK_FIXED	24u
#define ENTRY_SIZE	32u
#define MAX_NBLOCKS	65535u
#define MAX_MACHINE	255u
#define MAX_CONFIG	(1u << 20)
#define MAX_META	(32u << 20)
#define MAX_USED_LEN	(1ull << 50)
#define MAX_RAM		(1ull << 44)	/* the writer's: index < 4 GiB */
#define BLK_F_MR_ADDR	0x1u

#define FRAME_MAX	ZSTD_COMPRESSBOUND(CHUNK_BYTES)
#define TAIL_FRAME_MAX	ZSTD_COMPRESSBOUND(STREAM_TAIL_MAX)
#define SCRATCH_ALIGN	4096u	/* frames start on blocks: holes free them */
#define IO_BUF		(1u << 20)
#define CHECK_BUF	(1u << 19)	/* img_check_frames()'s reads: 2 frames */
#define CHECK_SHARE	(4u << 20)	/* data bytes worth a thread there */
#define AHEAD_THREADS	4	/* img_foreach_page_parallel()'s default max */
#define AHEAD_SLOTS	4u	/* ... and its decoded chunks per thread */
#define AHEAD_MAX	16	/* ... and its most threads */
_Static_assert(CHECK_BUF >= FRAME_MAX, "a frame fits img_check_frames()'s "
    "buffer");

#define DEFAULT_CACHE	(192u << 20)
#define MAX_THREADS	64

static uint64_t
chunks_of(uint64_t used_length)
{
	return (used_length + CHUNK_BYTES - 1) / CHUNK_BYTES;
}

/* The pages chunk k of a block of used_length bytes has, as a mask. */
static uint64_t
valid_mask(uint64_t used_length, uint64_t k)
{
	uint64_t n = (used_length - k * CHUNK_BYTES) / PAGE;

	return n >= 64 ? ~0ull : (1ull << n) - 1;
}

static unsigned
popcount64(uint64_t v)
{
	return (unsigned)__builtin_popcountll(v);
}

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
	uint8_t *buf;		/* CHUNK_BYTES, page i at i * PAGE */
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
};

struct worker {
	struct img_writer *w;
	pthread_t thread;
	ZSTD_CCtx *cctx;
	uint8_t *pack;		/* the data pages, packed */
	uint8_t *out;		/* FRAME_MAX */
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
	char machine[MAX_MACHINE + 1];
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
	uint8_t **bufs;			/* every buffer, for free */
	uint32_t nbufs, maxbufs;
	uint8_t **freebufs;
	uint32_t nfree;

	/* merge */
	ZSTD_DCtx *dctx;
	uint8_t *zbuf;			/* FRAME_MAX */
	uint8_t *dbuf;			/* CHUNK_BYTES */

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
	size_t len, n = 0;
	uint64_t m;
	unsigned i;

	if (j->mask != 0 && (j->mask & (j->mask + 1)) == 0) {
		len = popcount64(j->mask) * (size_t)PAGE;
	} else {
		for (m = j->mask; m != 0; m &= m - 1) {
			i = (unsigned)__builtin_ctzll(m);
			memcpy(wk->pack + n, j->buf + (size_t)i * PAGE, PAGE);
			n += PAGE;
		}
		src = wk->pack;
		len = n;
	}
	j->size = ZSTD_compress2(wk->cctx, wk->out, FRAME_MAX, src, len);
	if (ZSTD_isError(j->size)) {
		err_set(&j->err, ERR_FAIL, "chunk %llu: zstd: %s",
		    (unsigned long long)j->chunk, ZSTD_getErrorName(j->size));
		return;
	}
	j->crc = crc32c(0, wk->out, j->size);
	scratch_append(wk->w, wk->out, j->size, &j->off, &j->alloc, &j->err);
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
		j->next = w->done;
		w->done = j;
		pthread_cond_signal(&w->cv_done);
	}
	pthread_mutex_unlock(&w->mu);
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
	b = xmalloc(CHUNK_BYTES);
	w->bufs[w->nbufs++] = b;
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
	size_t want = (size_t)npages * PAGE, n;
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
			memcpy(buf + (size_t)i * PAGE,
			    c->job->buf + (size_t)i * PAGE, PAGE);
		}
		return 0;
	}
	if (c->fgen != c->gen || c->fsize == 0 || (mask & ~c->vmask) != 0)
		return err_set(e, ERR_FAIL, "chunk %llu: internal error: "
		    "pages to merge are in no version",
		    (unsigned long long)ci);
	if (scratch_decode(w, ci, c->foff, c->fsize, c->fcrc,
	    popcount64(c->vmask), w->dbuf, e) < 0)
		return -1;
	for (m = mask; m != 0; m &= m - 1) {
		i = (unsigned)__builtin_ctzll(m);
		rank = popcount64(c->vmask & ((1ull << i) - 1));
		memcpy(buf + (size_t)i * PAGE, w->dbuf + (size_t)rank * PAGE,
		    PAGE);
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
		/* No data left: the older version is dead now. */
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
	if (len > MAX_CONFIG)
		return err_set(e, ERR_FAIL, "configuration section too large "
		    "(%zu bytes)", len);
	if (mlen > MAX_MACHINE)
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
	if (nblocks > MAX_NBLOCKS)
		return err_set(e, ERR_FAIL, "too many RAM blocks (%zu)",
		    nblocks);
	for (i = 0; i < nblocks; i++) {
		len = strnlen(blocks[i].name, sizeof(blocks[i].name));
		if (len == 0 || len > STREAM_BLOCK_NAME_MAX)
			return err_set(e, ERR_FAIL, "RAM block %zu: bad name",
			    i);
		if (blocks[i].used_length % PAGE != 0 ||
		    blocks[i].used_length >= MAX_USED_LEN)
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
		n += chunks_of(blocks[i].used_length);
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
	if (offset % PAGE != 0 || offset >= w->blocks[block].used_length)
		return err_set(e, ERR_FAIL, "page at offset 0x%llx outside "
		    "RAM block '%s'", (unsigned long long)offset,
		    w->blocks[block].name);
	ci = w->bfirst[block] + offset / CHUNK_BYTES;
	pi = (unsigned)(offset % CHUNK_BYTES / PAGE);
	bit = 1ull << pi;
	c = &w->chunks[ci];
	if (data != NULL && is_zero(data, PAGE))
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
	memcpy(sl->buf + (size_t)pi * PAGE, data, PAGE);
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
}

struct img_writer *
img_writer_new(const char *path, const struct img_opts *o, struct err *e)
{
	struct img_writer *w = xcalloc(1, sizeof(*w));
	struct img_opts def = IMG_OPTS_INIT;
	sigset_t all, old;
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

	w->nslots = (uint32_t)(w->opts.cache_bytes / CHUNK_BYTES <
	    (1u << 20) ? w->opts.cache_bytes / CHUNK_BYTES : (1u << 20));
	if (w->nslots == 0)
		w->nslots = 1;
	w->slots = xcalloc(w->nslots, sizeof(*w->slots));
	w->nworkers = w->opts.threads;
	w->maxjobs = 2 * (uint32_t)w->nworkers + 2;
	w->maxbufs = w->nslots + w->maxjobs;
	w->bufs = xcalloc(w->maxbufs, sizeof(*w->bufs));
	w->freebufs = xcalloc(w->maxbufs, sizeof(*w->freebufs));
	w->jobs = xcalloc(w->maxjobs, sizeof(*w->jobs));
	for (i = 0; i < w->maxjobs; i++) {
		w->jobs[i].next = w->freejobs;
		w->freejobs = &w->jobs[i];
	}
	w->zbuf = xmalloc(FRAME_MAX);
	w->dbuf = xmalloc(CHUNK_BYTES);
	if ((w->dctx = ZSTD_createDCtx()) == NULL) {
		err_set(e, ERR_FAIL, "zstd: cannot create a context");
		goto fail;
	}
	w->workers = xcalloc((size_t)w->nworkers, sizeof(*w->workers));
	for (k = 0; k < w->nworkers; k++) {
		struct worker *wk = &w->workers[k];

		wk->w = w;
		wk->pack = xmalloc(CHUNK_BYTES);
		wk->out = xmalloc(FRAME_MAX);
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
	w->sync_ok = 1;
	/* Workers block every signal, so SIGINT interrupts the caller's
	 * read() rather than a worker's write. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (k = 0; k < w->nworkers; k++) {
		errno = pthread_create(&w->workers[k].thread, NULL,
		    worker_main, &w->workers[k]);
		if (errno != 0)
			break;
		w->started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (k < w->nworkers) {
		err_sys(e, ERR_FAIL, "cannot start a compression thread");
		goto fail;
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
	put_le32(p + 4, (uint32_t)(region_size - 8));
}

static void
put_le16(uint8_t *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static uint16_t
get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* The metadata region, complete (frame header included). */
static void
meta_build(struct img_writer *w, struct buf *m, uint64_t frames)
{
	uint8_t fixed[META_FIXED], be[BLOCK_FIXED];
	size_t mlen = strlen(w->machine), i, nlen;

	memset(fixed, 0, sizeof(fixed));
	buf_add(m, fixed, 8);
	put_le32(fixed, w->ram_section_id);
	put_le32(fixed + 4, (uint32_t)w->nblocks);
	put_le32(fixed + 8, (uint32_t)mlen);
	put_le32(fixed + 12, (uint32_t)w->config_len);
	put_le64(fixed + 16, w->ram_bytes);
	put_le64(fixed + 24, w->nchunks);
	put_le64(fixed + 32, frames);
	put_le64(fixed + 40, w->pages);
	put_le64(fixed + 48, w->zero_pages);
	put_le64(fixed + 56, w->tail_len);
	buf_add(m, fixed, sizeof(fixed));
	buf_add(m, w->machine, mlen);
	buf_add(m, w->config, w->config_len);
	for (i = 0; i < w->nblocks; i++) {
		nlen = strlen(w->blocks[i].name);
		memset(be, 0, sizeof(be));
		put_le64(be, w->blocks[i].used_length);
		put_le64(be + 8, w->blocks[i].mr_addr);
		put_le32(be + 16, w->blocks[i].has_mr_addr ? BLK_F_MR_ADDR : 0);
		put_le16(be + 20, (uint16_t)nlen);
		buf_add(m, be, sizeof(be));
		buf_add(m, w->blocks[i].name, nlen);
	}
	put_skippable(m->data, SKIP_META, m->len);
}

/* Flush the cache through the pool and wait for every job. */
static int
flush_all(struct img_writer *w, struct err *e)
{
	while (w->lru_tail >= 0)
		if (evict(w, w->lru_tail, e) < 0)
			return -1;
	while (w->inflight > 0)
		reap(w, 1);
	if (w->failed)
		return writer_fail(w, e);
	return 0;
}

int
img_writer_commit(struct img_writer *w, struct img_stats *st, struct err *e)
{
	struct buf meta = BUF_INIT;
	uint8_t hdr[HDR_SIZE], *iobuf = NULL, *ib = NULL;
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
	if (flush_all(w, e) < 0)
		goto out;
	for (ci = 0; ci < w->nchunks; ci++)
		frames += w->chunks[ci].fsize != 0;
	meta_build(w, &meta, frames);
	if (meta.len > MAX_META) {
		err_set(e, ERR_FAIL, "image metadata too large");
		goto out;
	}
	iobuf = xmalloc(IO_BUF);
	ib = xmalloc(IO_BUF);

	if (pwrite_full(w->out.fd, meta.data, meta.len, HDR_SIZE) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", w->out.tmp);
		goto out;
	}
	data_off = pos = HDR_SIZE + meta.len;
	for (ci = 0; ci < w->nchunks; ci++) {
		c = &w->chunks[ci];
		if (c->fsize == 0)
			continue;
		if (copy_out(w, c->foff, pos, c->fsize, iobuf, e) < 0)
			goto out;
		pos += c->fsize;
	}
	tail_off = pos;
	if (copy_out(w, w->tail_off, pos, w->tail_size, iobuf, e) < 0)
		goto out;
	pos += w->tail_size;

	/* The index, streamed: its CRC runs over the whole region. */
	index_off = pos;
	put_skippable(ib, SKIP_INDEX, 8 + w->nchunks * ENTRY_SIZE);
	ilen = 8;
	icrc = 0;
	pos = data_off;
	for (ci = 0; ci <= w->nchunks; ci++) {
		if (ilen + ENTRY_SIZE > IO_BUF || ci == w->nchunks) {
			icrc = crc32c(icrc, ib, ilen);
			end = index_off + (uint64_t)(ci * ENTRY_SIZE + 8) -
			    ilen;
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
		memset(ib + ilen, 0, ENTRY_SIZE);
		if (c->fsize != 0) {
			put_le64(ib + ilen, pos);
			put_le32(ib + ilen + 8, c->fsize);
			put_le32(ib + ilen + 12, c->fcrc);
			pos += c->fsize;
		}
		put_le64(ib + ilen + 16, c->present);
		put_le64(ib + ilen + 24, c->zero);
		ilen += ENTRY_SIZE;
	}
	end = index_off + 8 + w->nchunks * ENTRY_SIZE;

	memset(hdr, 0, sizeof(hdr));
	put_skippable(hdr, SKIP_HDR, HDR_SIZE);
	memcpy(hdr + 8, IMG_MAGIC, 8);
	put_le32(hdr + 16, IMG_VERSION);
	put_le32(hdr + 20, IMG_F_FRAME_CRCS |
	    (w->switchover ? IMG_F_SWITCHOVER_START : 0) |
	    (w->saw_end ? 0 : IMG_F_NO_END));
	put_le32(hdr + 24, PAGE);
	put_le32(hdr + 28, CHUNK_PAGES);
	put_le64(hdr + 32, end);
	put_le64(hdr + 40, HDR_SIZE);
	put_le64(hdr + 48, meta.len);
	put_le64(hdr + 56, data_off);
	put_le64(hdr + 64, tail_off - data_off);
	put_le64(hdr + 72, tail_off);
	put_le64(hdr + 80, w->tail_size);
	put_le64(hdr + 88, index_off);
	put_le64(hdr + 96, end - index_off);
	put_le32(hdr + 104, crc32c(0, meta.data, meta.len));
	put_le32(hdr + 108, icrc);
	put_le32(hdr + 112, w->tail_crc);
	put_le32(hdr + 124, crc32c(0, hdr, 124));
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
	}
	atomic_file_release(&w->out);
	if (w->scratch >= 0)
		close(w->scratch);
	for (k = 0; w->workers != NULL && k < w->nworkers; k++) {
		ZSTD_freeCCtx(w->workers[k].cctx);
		free(w->workers[k].pack);
		free(w->workers[k].out);
	}
	free(w->workers);
	for (i = 0; i < w->nbufs; i++)
		free(w->bufs[i]);
	free(w->bufs);
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

/*
 * The reader.  Everything in the file is checked before it is used; the
 * index is held in memory (32 bytes per chunk, bounded by the file size),
 * frames are read and decoded one at a time into one chunk buffer.
 */

struct rentry {
	uint64_t off;
	uint64_t present;
	uint64_t zero;
	uint32_t size;
	uint32_t block;
	uint32_t crc;		/* of the frame, with IMG_F_FRAME_CRCS */
};

struct img_reader {
	struct img_io io;
	int fd;
	struct img_meta meta;
	struct stream_block *blocks;
	uint8_t *config;
	uint64_t *bfirst;		/* nblocks + 1 */
	struct rentry *idx;
	uint64_t nchunks;
	uint64_t data_off, data_size, tail_off, tail_size;
	uint64_t index_off, index_size;
	uint32_t tail_crc;		/* with IMG_F_FRAME_CRCS */
	ZSTD_DCtx *dctx;
	uint8_t *zbuf;			/* FRAME_MAX */
	uint8_t *cbuf;			/* decoded chunk, data pages packed */
	uint64_t cached;		/* chunk in cbuf, or UINT64_MAX */
};

static int
rd(const struct img_reader *r, void *buf, size_t len, uint64_t off,
    const char *what, struct err *e)
{
	ssize_t n;

	if (off > r->io.size || len > r->io.size - off)
		return err_set(e, ERR_FAIL, "%s lies past the end of the file",
		    what);
	n = r->io.pread(r->io.opaque, buf, len, off);
	if (n < 0)
		return err_sys(e, ERR_FAIL, "cannot read %s", what);
	if ((size_t)n != len)
		return err_set(e, ERR_FAIL, "%s is truncated", what);
	return 0;
}

static int
check_header(struct img_reader *r, const uint8_t *h, uint32_t *meta_crc,
    uint32_t *index_crc, uint64_t *meta_size, struct err *e)
{
	uint64_t fsize, moff, msize, doff, dsize, toff, tsize, ioff, isize;
	size_t i;

	if (get_le32(h) != SKIP_HDR || get_le32(h + 4) != HDR_SIZE - 8 ||
	    memcmp(h + 8, IMG_MAGIC, 8) != 0)
		return err_set(e, ERR_FAIL, "not a snapctl image");
	if (get_le32(h + 124) != crc32c(0, h, 124))
		return err_set(e, ERR_FAIL, "header checksum mismatch");
	if (get_le32(h + 16) != IMG_VERSION)
		return err_set(e, ERR_FAIL, "unsupported image version %u",
		    get_le32(h + 16));
	r->meta.version = IMG_VERSION;
	r->meta.flags = get_le32(h + 20);
	if (r->meta.flags & ~IMG_F_ALL)
		return err_set(e, ERR_FAIL, "unknown image flags 0x%x",
		    r->meta.flags);
	if (get_le32(h + 24) != PAGE || get_le32(h + 28) != CHUNK_PAGES)
		return err_set(e, ERR_FAIL, "unsupported page or chunk size");
	/* Bytes 112-115 hold the tail's CRC with frame CRCs. */
	for (i = r->meta.flags & IMG_F_FRAME_CRCS ? 116 : 112; i < 124; i++)
		if (h[i] != 0)
			return err_set(e, ERR_FAIL, "reserved header bytes "
			    "are not zero");
	fsize = get_le64(h + 32);
	moff = get_le64(h + 40);
	msize = get_le64(h + 48);
	doff = get_le64(h + 56);
	dsize = get_le64(h + 64);
	toff = get_le64(h + 72);
	tsize = get_le64(h + 80);
	ioff = get_le64(h + 88);
	isize = get_le64(h + 96);
	if (fsize != r->io.size || fsize >= 1ull << 62)
		return err_set(e, ERR_FAIL, "image is %llu bytes, header says "
		    "%llu: truncated or extended",
		    (unsigned long long)r->io.size,
		    (unsigned long long)fsize);
	/* Each region starts where the one before ends; sizes are bounded
	 * by the file, so none of these sums overflows. */
	if (moff != HDR_SIZE || msize < 8 + META_FIXED || msize > MAX_META ||
	    msize > fsize || doff != moff + msize || dsize > fsize ||
	    toff != doff + dsize || tsize > fsize || tsize > TAIL_FRAME_MAX ||
	    ioff != toff + tsize || isize < 8 || isize > fsize ||
	    ioff + isize != fsize)
		return err_set(e, ERR_FAIL, "header region table is "
		    "inconsistent with the file");
	r->data_off = doff;
	r->data_size = dsize;
	r->tail_off = toff;
	r->tail_size = tsize;
	r->index_off = ioff;
	r->index_size = isize;
	r->tail_crc = get_le32(h + 112);
	r->meta.file_bytes = fsize;
	r->meta.data_bytes = dsize;
	*meta_crc = get_le32(h + 104);
	*index_crc = get_le32(h + 108);
	*meta_size = msize;
	return 0;
}

static int
parse_meta(struct img_reader *r, const uint8_t *m, size_t size,
    uint64_t *chunks, uint64_t *frames, struct err *e)
{
	const uint8_t *p = m + 8, *end = m + size;
	uint32_t nblocks, mlen, clen, flags;
	uint64_t ram = 0, n = 0, used;
	size_t i, k, nlen;
	struct stream_block *b;

	if (get_le32(m) != SKIP_META || get_le32(m + 4) != size - 8)
		return err_set(e, ERR_FAIL, "metadata frame header is bad");
	r->meta.ram_section_id = get_le32(p);
	nblocks = get_le32(p + 4);
	mlen = get_le32(p + 8);
	clen = get_le32(p + 12);
	r->meta.ram_bytes = get_le64(p + 16);
	*chunks = get_le64(p + 24);
	*frames = get_le64(p + 32);
	r->meta.pages = get_le64(p + 40);
	r->meta.zero_pages = get_le64(p + 48);
	r->meta.tail_bytes = get_le64(p + 56);
	if (nblocks > MAX_NBLOCKS || mlen > MAX_MACHINE || clen > MAX_CONFIG ||
	    r->meta.tail_bytes > STREAM_TAIL_MAX)
		return err_set(e, ERR_FAIL, "metadata counts out of range");
	p += META_FIXED;
	if ((size_t)(end - p) < (size_t)mlen + clen)
		return err_set(e, ERR_FAIL, "metadata is truncated");
	if (memchr(p, 0, mlen) != NULL)
		return err_set(e, ERR_FAIL, "machine type holds a NUL byte");
	memcpy(r->meta.machine, p, mlen);
	r->meta.machine[mlen] = '\0';
	p += mlen;
	r->config = xmalloc(clen);
	if (clen)
		memcpy(r->config, p, clen);
	r->meta.config = r->config;
	r->meta.config_len = clen;
	p += clen;
	r->blocks = xcalloc(nblocks, sizeof(*r->blocks));
	r->bfirst = xcalloc((size_t)nblocks + 1, sizeof(*r->bfirst));
	for (i = 0; i < nblocks; i++) {
		b = &r->blocks[i];
		if ((size_t)(end - p) < BLOCK_FIXED)
			return err_set(e, ERR_FAIL, "block table is "
			    "truncated");
		used = get_le64(p);
		b->mr_addr = get_le64(p + 8);
		flags = get_le32(p + 16);
		nlen = get_le16(p + 20);
		if (get_le16(p + 22) != 0 || (flags & ~BLK_F_MR_ADDR) != 0)
			return err_set(e, ERR_FAIL, "block %zu: reserved "
			    "fields are not zero", i);
		b->has_mr_addr = flags & BLK_F_MR_ADDR;
		if (!b->has_mr_addr && b->mr_addr != 0)
			return err_set(e, ERR_FAIL, "block %zu: address "
			    "without flag", i);
		if (used % PAGE != 0 || used >= MAX_USED_LEN)
			return err_set(e, ERR_FAIL, "block %zu: bad used "
			    "length 0x%llx", i, (unsigned long long)used);
		b->used_length = used;
		p += BLOCK_FIXED;
		if (nlen == 0 || nlen > STREAM_BLOCK_NAME_MAX ||
		    (size_t)(end - p) < nlen)
			return err_set(e, ERR_FAIL, "block %zu: bad name", i);
		if (memchr(p, 0, nlen) != NULL)
			return err_set(e, ERR_FAIL, "block %zu: name holds a "
			    "NUL byte", i);
		memcpy(b->name, p, nlen);
		b->name[nlen] = '\0';
		p += nlen;
		for (k = 0; k < i; k++)
			if (strcmp(r->blocks[k].name, b->name) == 0)
				return err_set(e, ERR_FAIL, "block '%s' listed "
				    "twice", b->name);
		r->bfirst[i] = n;
		n += chunks_of(used);
		ram += used;	/* < 65535 * 2^50: no overflow */
	}
	r->bfirst[nblocks] = n;
	if (p != end)
		return err_set(e, ERR_FAIL, "metadata has %zu stray bytes",
		    (size_t)(end - p));
	if (ram != r->meta.ram_bytes || n != *chunks)
		return err_set(e, ERR_FAIL, "metadata totals do not match "
		    "the block table");
	r->meta.blocks = r->blocks;
	r->meta.nblocks = nblocks;
	return 0;
}

static int
parse_index(struct img_reader *r, uint32_t want_crc, uint64_t frames,
    struct err *e)
{
	uint8_t *buf = NULL, *p;
	uint64_t off, done = 0, left, ci, pos, valid, data;
	uint64_t nframes = 0, pages = 0, zero = 0, used;
	uint32_t crc = 0, b = 0;
	size_t step, k;
	struct rentry *x;
	int rc = -1;

	if ((r->index_size - 8) / ENTRY_SIZE != r->nchunks ||
	    (r->index_size - 8) % ENTRY_SIZE != 0) {
		err_set(e, ERR_FAIL, "index size does not match %llu chunks",
		    (unsigned long long)r->nchunks);
		goto out;
	}
	/* The index's size is checked against the file: small for small
	 * files, as a fuzzer's are. */
	buf = xmalloc(r->index_size < IO_BUF ? (size_t)r->index_size : IO_BUF);
	if (rd(r, buf, 8, r->index_off, "index", e) < 0)
		goto out;
	if (get_le32(buf) != SKIP_INDEX ||
	    get_le32(buf + 4) != r->index_size - 8) {
		err_set(e, ERR_FAIL, "index frame header is bad");
		goto out;
	}
	crc = crc32c(0, buf, 8);
	r->idx = xcalloc(r->nchunks ? r->nchunks : 1, sizeof(*r->idx));
	pos = r->data_off;
	ci = 0;
	off = r->index_off + 8;
	left = r->index_size - 8;
	while (left > 0) {
		step = left < IO_BUF ? (size_t)left : IO_BUF / ENTRY_SIZE *
		    ENTRY_SIZE;
		if (rd(r, buf, step, off + done, "index", e) < 0)
			goto out;
		crc = crc32c(crc, buf, step);
		for (k = 0; k < step; k += ENTRY_SIZE, ci++) {
			p = buf + k;
			x = &r->idx[ci];
			while (ci >= r->bfirst[b + 1])
				b++;
			used = r->blocks[b].used_length;
			valid = valid_mask(used, ci - r->bfirst[b]);
			x->off = get_le64(p);
			x->size = get_le32(p + 8);
			x->present = get_le64(p + 16);
			x->zero = get_le64(p + 24);
			x->block = b;
			x->crc = get_le32(p + 12);
			data = x->present & ~x->zero;
			/* Without frame CRCs the field is reserved; with
			 * them, 0 for a chunk without a frame. */
			if ((x->crc != 0 && (data == 0 ||
			    !(r->meta.flags & IMG_F_FRAME_CRCS))) ||
			    (x->present & ~valid) || (x->zero & ~x->present)) {
				err_set(e, ERR_FAIL, "index entry %llu is bad",
				    (unsigned long long)ci);
				goto out;
			}
			if (data == 0 ? x->off != 0 || x->size != 0 :
			    x->off != pos || x->size == 0 ||
			    x->size > FRAME_MAX ||
			    x->size > r->tail_off - pos) {
				err_set(e, ERR_FAIL, "index entry %llu: bad "
				    "frame position", (unsigned long long)ci);
				goto out;
			}
			pos += x->size;
			nframes += data != 0;
			pages += popcount64(x->present);
			zero += popcount64(x->zero);
		}
		done += step;
		left -= step;
	}
	if (crc != want_crc) {
		err_set(e, ERR_FAIL, "index checksum mismatch");
		goto out;
	}
	if (pos != r->tail_off) {
		err_set(e, ERR_FAIL, "frames do not fill the data region");
		goto out;
	}
	if (nframes != frames || pages != r->meta.pages ||
	    zero != r->meta.zero_pages) {
		err_set(e, ERR_FAIL, "index totals do not match the "
		    "metadata");
		goto out;
	}
	r->meta.chunks = nframes;
	rc = 0;
out:
	free(buf);
	return rc;
}

struct img_reader *
img_open_io(const struct img_io *io, struct err *e)
{
	struct img_reader *r = xcalloc(1, sizeof(*r));
	uint8_t hdr[HDR_SIZE], *m = NULL;
	uint32_t meta_crc = 0, index_crc = 0;
	uint64_t msize = 0, chunks = 0, frames = 0;

	r->io = *io;
	r->fd = -1;
	r->cached = UINT64_MAX;
	if (io->size < HDR_SIZE) {
		err_set(e, ERR_FAIL, "not a snapctl image (%llu bytes)",
		    (unsigned long long)io->size);
		goto fail;
	}
	if (rd(r, hdr, HDR_SIZE, 0, "header", e) < 0 ||
	    check_header(r, hdr, &meta_crc, &index_crc, &msize, e) < 0)
		goto fail;
	m = xmalloc((size_t)msize);
	if (rd(r, m, (size_t)msize, HDR_SIZE, "metadata", e) < 0)
		goto fail;
	if (crc32c(0, m, (size_t)msize) != meta_crc) {
		err_set(e, ERR_FAIL, "metadata checksum mismatch");
		goto fail;
	}
	if (parse_meta(r, m, (size_t)msize, &chunks, &frames, e) < 0)
		goto fail;
	r->nchunks = chunks;
	if (parse_index(r, index_crc, frames, e) < 0)
		goto fail;
	if ((r->dctx = ZSTD_createDCtx()) == NULL) {
		err_set(e, ERR_FAIL, "zstd: cannot create a context");
		goto fail;
	}
	r->zbuf = xmalloc(FRAME_MAX);
	r->cbuf = xmalloc(CHUNK_BYTES);
	free(m);
	return r;
fail:
	free(m);
	img_close(r);
	return NULL;
}

static ssize_t
fd_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	return pread_full(*(int *)opaque, buf, len, (off_t)off);
}

struct img_reader *
img_open(const char *path, struct err *e)
{
	struct img_reader *r = NULL;
	struct img_io io;
	struct stat st;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err_sys(e, ERR_FAIL, "cannot open '%s'", path);
		return NULL;
	}
	if (fstat(fd, &st) < 0) {
		err_sys(e, ERR_FAIL, "cannot stat '%s'", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err_set(e, ERR_FAIL, "'%s': not a regular file", path);
		goto out;
	}
	/* The reader keeps the fd; io.opaque points at its copy. */
	io.pread = fd_pread;
	io.size = (uint64_t)st.st_size;
	io.opaque = &fd;
	r = img_open_io(&io, e);
	if (r == NULL) {
		err_prefix(e, "'%s': ", path);
		goto out;
	}
	r->fd = fd;
	r->io.opaque = &r->fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

const struct img_meta *
img_meta(const struct img_reader *r)
{
	return &r->meta;
}

/*
 * Check size bytes of a frame at zbuf without decoding it: its CRC (with
 * frame CRCs), then that its zstd header declares want bytes, a checksum
 * and no dictionary, and that its blocks end exactly at size.
 */
static int
frame_sane(const struct img_reader *r, const uint8_t *zbuf, size_t size,
    size_t want, uint32_t crc, struct err *e)
{
	unsigned long long csize;
	size_t n;

	if ((r->meta.flags & IMG_F_FRAME_CRCS) && crc32c(0, zbuf, size) != crc)
		return err_set(e, ERR_FAIL, "frame CRC-32C mismatch");
	if (size < 6 || get_le32(zbuf) != ZSTD_MAGIC)
		return err_set(e, ERR_FAIL, "not a zstd frame");
	/* Frame header descriptor: checksum bit 2, dictionary id bits 0-1. */
	if ((zbuf[4] & 0x04) == 0 || (zbuf[4] & 0x03) != 0)
		return err_set(e, ERR_FAIL, "frame without checksum or with "
		    "a dictionary");
	csize = ZSTD_getFrameContentSize(zbuf, size);
	if (csize != want)
		return err_set(e, ERR_FAIL, "frame content size is not %zu",
		    want);
	n = ZSTD_findFrameCompressedSize(zbuf, size);
	if (ZSTD_isError(n))
		return err_set(e, ERR_FAIL, "zstd: %s", ZSTD_getErrorName(n));
	if (n != size)
		return err_set(e, ERR_FAIL, "frame is %zu bytes, index says "
		    "%zu", n, size);
	return 0;
}

/* Read a frame of size bytes at off into zbuf and check it (frame_sane). */
static int
frame_check(const struct img_reader *r, uint64_t off, size_t size,
    uint8_t *zbuf, size_t want, uint32_t crc, struct err *e)
{
	if (rd(r, zbuf, size, off, "frame", e) < 0)
		return -1;
	return frame_sane(r, zbuf, size, want, crc, e);
}

static void
chunk_prefix(const struct img_reader *r, uint64_t ci, struct err *e)
{
	const struct rentry *x = &r->idx[ci];

	err_prefix(e, "chunk %llu (block '%s' offset 0x%llx): ",
	    (unsigned long long)ci, r->blocks[x->block].name,
	    (unsigned long long)((ci - r->bfirst[x->block]) * CHUNK_BYTES));
}

/* Decode a frame checked by frame_check() into out (want bytes). */
static int
frame_decode(ZSTD_DCtx *dctx, const uint8_t *zbuf, size_t size,
    uint8_t *out, size_t want, struct err *e)
{
	size_t n;

	n = ZSTD_decompressDCtx(dctx, out, want, zbuf, size);
	if (ZSTD_isError(n))
		return err_set(e, ERR_FAIL, "zstd: %s", ZSTD_getErrorName(n));
	if (n != want)
		return err_set(e, ERR_FAIL, "frame decodes to %zu bytes, not "
		    "%zu", n, want);
	return 0;
}

/*
 * Read, check and decode chunk ci's frame into out with dctx and zbuf
 * (FRAME_MAX).  Only reads r: threads with a dctx and zbuf each may share
 * it (with a thread-safe io).
 */
static int
chunk_decode(const struct img_reader *r, ZSTD_DCtx *dctx, uint8_t *zbuf,
    uint64_t ci, uint8_t *out, struct err *e)
{
	const struct rentry *x = &r->idx[ci];
	size_t want = (size_t)popcount64(x->present & ~x->zero) * PAGE;

	if (frame_check(r, x->off, x->size, zbuf, want, x->crc, e) < 0 ||
	    frame_decode(dctx, zbuf, x->size, out, want, e) < 0) {
		chunk_prefix(r, ci, e);
		return -1;
	}
	return 0;
}

/* Decode chunk ci's frame into r->cbuf (no-op when it is there). */
static int
load_chunk(struct img_reader *r, uint64_t ci, struct err *e)
{
	struct rentry *x = &r->idx[ci];

	if (r->cached == ci || (x->present & ~x->zero) == 0)
		return 0;
	r->cached = UINT64_MAX;
	if (chunk_decode(r, r->dctx, r->zbuf, ci, r->cbuf, e) < 0)
		return -1;
	r->cached = ci;
	return 0;
}

static int
locate(struct img_reader *r, uint32_t block, uint64_t offset, uint64_t len,
    struct err *e)
{
	if (block >= r->meta.nblocks)
		return err_set(e, ERR_FAIL, "no RAM block %u in the image",
		    block);
	if (offset > r->blocks[block].used_length ||
	    len > r->blocks[block].used_length - offset)
		return err_set(e, ERR_FAIL, "range 0x%llx+%llu is outside "
		    "RAM block '%s'", (unsigned long long)offset,
		    (unsigned long long)len, r->blocks[block].name);
	return 0;
}

/* State of page pi of chunk ci; its data (if any) via *data. */
static int
page_get(struct img_reader *r, uint64_t ci, unsigned pi,
    enum img_page_state *state, const uint8_t **data, struct err *e)
{
	struct rentry *x = &r->idx[ci];
	uint64_t bit = 1ull << pi, dmask = x->present & ~x->zero;

	*data = NULL;
	if (!(x->present & bit)) {
		*state = IMG_PAGE_ABSENT;
		return 0;
	}
	if (x->zero & bit) {
		*state = IMG_PAGE_ZERO;
		return 0;
	}
	*state = IMG_PAGE_DATA;
	if (load_chunk(r, ci, e) < 0)
		return -1;
	*data = r->cbuf + (size_t)popcount64(dmask & (bit - 1)) * PAGE;
	return 0;
}

int
img_read_page(struct img_reader *r, uint32_t block, uint64_t offset,
    uint8_t *out, enum img_page_state *state, struct err *e)
{
	const uint8_t *data;

	if (locate(r, block, offset, PAGE, e) < 0)
		return -1;
	if (offset % PAGE != 0)
		return err_set(e, ERR_FAIL, "offset 0x%llx is not page "
		    "aligned", (unsigned long long)offset);
	if (page_get(r, r->bfirst[block] + offset / CHUNK_BYTES,
	    (unsigned)(offset % CHUNK_BYTES / PAGE), state, &data, e) < 0)
		return -1;
	if (data != NULL)
		memcpy(out, data, PAGE);
	else
		memset(out, 0, PAGE);
	return 0;
}

int
img_read_at(struct img_reader *r, uint32_t block, uint64_t offset,
    size_t len, uint8_t *out, struct err *e)
{
	enum img_page_state state;
	const uint8_t *data;
	uint64_t in;
	size_t n;

	if (locate(r, block, offset, len, e) < 0)
		return -1;
	while (len > 0) {
		in = offset % PAGE;
		n = PAGE - in < len ? (size_t)(PAGE - in) : len;
		if (page_get(r, r->bfirst[block] + offset / CHUNK_BYTES,
		    (unsigned)(offset % CHUNK_BYTES / PAGE), &state, &data,
		    e) < 0)
			return -1;
		if (data != NULL)
			memcpy(out, data + in, n);
		else
			memset(out, 0, n);
		out += n;
		offset += n;
		len -= n;
	}
	return 0;
}

/* Call fn for the present pages of chunk ci of block b; data: its frame's. */
static int
chunk_emit(const struct img_reader *r, uint32_t b, uint64_t ci,
    const uint8_t *data, img_page_fn fn, void *opaque, struct err *e)
{
	const struct rentry *x = &r->idx[ci];
	uint64_t m, base, dmask = x->present & ~x->zero;
	unsigned i, rank;

	base = (ci - r->bfirst[b]) * CHUNK_BYTES;
	for (m = x->present; m != 0; m &= m - 1) {
		i = (unsigned)__builtin_ctzll(m);
		rank = popcount64(dmask & ((1ull << i) - 1));
		if (fn(opaque, b, base + (uint64_t)i * PAGE, (x->zero >> i) & 1 ?
		    NULL : data + (size_t)rank * PAGE, e) < 0)
			return -1;
	}
	return 0;
}

int
img_foreach_page(struct img_reader *r, img_page_fn fn, void *opaque,
    struct err *e)
{
	uint64_t ci;
	uint32_t b;

	for (b = 0; b < r->meta.nblocks; b++) {
		for (ci = r->bfirst[b]; ci < r->bfirst[b + 1]; ci++) {
			if (r->idx[ci].present == 0)
				continue;
			if (load_chunk(r, ci, e) < 0 ||
			    chunk_emit(r, b, ci, r->cbuf, fn, opaque, e) < 0)
				return -1;
		}
	}
	return 0;
}

/*
 * img_foreach_page_parallel(): the s-th chunk with a frame (in index
 * order) is decoded into slot s % nslots of a ring.  Whoever decodes
 * claims the next such chunk once the caller is done with the one nslots
 * before it.  The caller decodes too, rather than wait, while its next
 * slot is not full; so it sleeps only when a worker has that very chunk in
 * hand, and the workers sleep only on a full ring until half of it is
 * free: few wake-ups, which cost most in a VM.
 */
struct ahead_slot {
	uint8_t *buf;		/* CHUNK_BYTES */
	uint64_t seq;		/* the framed chunk it holds, when full */
	int full;
	int rc;
	struct err err;
};

struct ahead;

struct ahead_worker {
	struct ahead *a;
	pthread_t thread;
	ZSTD_DCtx *dctx;
	uint8_t *zbuf;		/* FRAME_MAX */
};

struct ahead {
	const struct img_reader *r;
	struct ahead_slot *slots;
	uint32_t nslots;
	pthread_mutex_t mu;
	pthread_cond_t cv_full;	/* the caller waits for its slot */
	pthread_cond_t cv_free;	/* workers wait for room in the ring */
	uint64_t cursor;	/* next chunk to look at for a frame */
	uint64_t claimed;	/* framed chunks claimed */
	uint64_t consumed;	/* framed chunks the caller is done with */
	int caller_waits;
	int idle;		/* workers waiting on cv_free */
	int stop;
};

/*
 * With mu held: claim the next framed chunk, its index in *ci and its
 * number in *seq.  1, 0 when the ring is full, -1 when none is left.
 */
static int
ahead_claim(struct ahead *a, uint64_t *ci, uint64_t *seq)
{
	const struct img_reader *r = a->r;

	while (a->cursor < r->nchunks && r->idx[a->cursor].size == 0)
		a->cursor++;
	if (a->stop || a->cursor >= r->nchunks)
		return -1;
	if (a->claimed >= a->consumed + a->nslots)
		return 0;
	*ci = a->cursor++;
	*seq = a->claimed++;
	return 1;
}

/* Decode a claimed chunk into its slot, mu dropped meanwhile. */
static void
ahead_fill(struct ahead *a, ZSTD_DCtx *dctx, uint8_t *zbuf, uint64_t ci,
    uint64_t seq)
{
	/* The slot's last chunk, seq - nslots, was consumed. */
	struct ahead_slot *sl = &a->slots[seq % a->nslots];
	struct err err = ERR_INIT;
	int rc;

	pthread_mutex_unlock(&a->mu);
	rc = chunk_decode(a->r, dctx, zbuf, ci, sl->buf, &err);
	pthread_mutex_lock(&a->mu);
	sl->seq = seq;
	sl->rc = rc;
	sl->err = err;
	sl->full = 1;
}

static void *
ahead_main(void *arg)
{
	struct ahead_worker *wk = arg;
	struct ahead *a = wk->a;
	uint64_t ci, seq;
	int got;

	pthread_mutex_lock(&a->mu);
	while ((got = ahead_claim(a, &ci, &seq)) >= 0) {
		if (got == 0) {
			a->idle++;
			pthread_cond_wait(&a->cv_free, &a->mu);
			a->idle--;
			continue;
		}
		ahead_fill(a, wk->dctx, wk->zbuf, ci, seq);
		if (a->caller_waits)
			pthread_cond_signal(&a->cv_full);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/* The caller: wait for (or help with) framed chunk seq's slot. */
static struct ahead_slot *
ahead_get(struct ahead *a, struct img_reader *r, uint64_t seq)
{
	struct ahead_slot *sl = &a->slots[seq % a->nslots];
	uint64_t ci, s;

	pthread_mutex_lock(&a->mu);
	while (!sl->full || sl->seq != seq) {
		if (ahead_claim(a, &ci, &s) > 0) {
			ahead_fill(a, r->dctx, r->zbuf, ci, s);
			continue;
		}
		a->caller_waits = 1;
		pthread_cond_wait(&a->cv_full, &a->mu);
		a->caller_waits = 0;
	}
	pthread_mutex_unlock(&a->mu);
	return sl;
}

/* The caller is done with slot sl, framed chunk number seq. */
static void
ahead_put(struct ahead *a, struct ahead_slot *sl, uint64_t seq)
{
	pthread_mutex_lock(&a->mu);
	sl->full = 0;
	a->consumed = seq + 1;
	if (a->idle > 0 && a->consumed + a->nslots - a->claimed >=
	    (a->nslots + 1) / 2)
		pthread_cond_broadcast(&a->cv_free);
	pthread_mutex_unlock(&a->mu);
}

int
img_foreach_page_parallel(struct img_reader *r, int nthreads, img_page_fn fn,
    void *opaque, struct err *e)
{
	struct ahead a;
	struct ahead_worker *wk = NULL;
	struct ahead_slot *sl;
	sigset_t all, old;
	uint64_t ci, seq = 0;
	uint32_t b, k;
	int nworkers, started = 0, i, rc = -1;

	if (nthreads <= 0)
		nthreads = cpus_usable() < AHEAD_THREADS ? cpus_usable() :
		    AHEAD_THREADS;
	if (nthreads > AHEAD_MAX)
		nthreads = AHEAD_MAX;
	/* Workers share r's descriptor (pread); other I/O stays here. */
	if (nthreads < 2 || r->fd < 0 || r->meta.chunks < 2)
		return img_foreach_page(r, fn, opaque, e);
	nworkers = nthreads - 1;	/* and the caller */
	memset(&a, 0, sizeof(a));
	a.r = r;
	a.nslots = AHEAD_SLOTS * (uint32_t)nthreads;
	a.slots = xcalloc(a.nslots, sizeof(*a.slots));
	for (k = 0; k < a.nslots; k++)
		a.slots[k].buf = xmalloc(CHUNK_BYTES);
	wk = xcalloc((size_t)nworkers, sizeof(*wk));
	for (i = 0; i < nworkers; i++) {
		wk[i].a = &a;
		wk[i].zbuf = xmalloc(FRAME_MAX);
		if ((wk[i].dctx = ZSTD_createDCtx()) == NULL) {
			err_set(e, ERR_FAIL, "zstd: cannot create a context");
			goto out;
		}
	}
	r->cached = UINT64_MAX;		/* the caller decodes with r's */
	pthread_mutex_init(&a.mu, NULL);
	pthread_cond_init(&a.cv_full, NULL);
	pthread_cond_init(&a.cv_free, NULL);
	/* Workers block every signal: the caller's writes see SIGINT. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < nworkers; i++) {
		if (pthread_create(&wk[i].thread, NULL, ahead_main, &wk[i])
		    != 0)
			break;
		started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	/* Without workers the caller decodes alone, through the ring. */
	for (b = 0; b < r->meta.nblocks; b++) {
		for (ci = r->bfirst[b]; ci < r->bfirst[b + 1]; ci++) {
			if (r->idx[ci].present == 0)
				continue;
			if (r->idx[ci].size == 0) {
				if (chunk_emit(r, b, ci, NULL, fn, opaque, e)
				    < 0)
					goto stop;
				continue;
			}
			sl = ahead_get(&a, r, seq);
			if (sl->rc < 0) {
				if (e != NULL)
					*e = sl->err;
				goto stop;
			}
			if (chunk_emit(r, b, ci, sl->buf, fn, opaque, e) < 0)
				goto stop;
			ahead_put(&a, sl, seq++);
		}
	}
	rc = 0;
stop:
	pthread_mutex_lock(&a.mu);
	a.stop = 1;
	pthread_cond_broadcast(&a.cv_free);
	pthread_mutex_unlock(&a.mu);
	for (i = 0; i < started; i++)
		pthread_join(wk[i].thread, NULL);
	pthread_mutex_destroy(&a.mu);
	pthread_cond_destroy(&a.cv_full);
	pthread_cond_destroy(&a.cv_free);
out:
	for (i = 0; i < nworkers; i++) {
		ZSTD_freeDCtx(wk[i].dctx);
		free(wk[i].zbuf);
	}
	free(wk);
	for (k = 0; k < a.nslots; k++)
		free(a.slots[k].buf);
	free(a.slots);
	return rc;
}

int
img_read_tail(struct img_reader *r, uint8_t **out, size_t *len,
    struct err *e)
{
	uint8_t *z = NULL, *t = NULL;
	size_t tlen = (size_t)r->meta.tail_bytes;
	int rc = -1;

	*out = NULL;
	*len = 0;
	/* The frame is bounded by the file; check it before allocating
	 * what it claims to decode to. */
	z = xmalloc((size_t)r->tail_size);
	if (frame_check(r, r->tail_off, (size_t)r->tail_size, z, tlen,
	    r->tail_crc, e) < 0) {
		err_prefix(e, "device state: ");
		goto out;
	}
	t = xmalloc(tlen);
	if (frame_decode(r->dctx, z, (size_t)r->tail_size, t, tlen, e) < 0) {
		err_prefix(e, "device state: ");
		goto out;
	}
	*out = t;
	*len = tlen;
	t = NULL;
	rc = 0;
out:
	free(z);
	free(t);
	return rc;
}

/* Decode and check chunks [first, end). */
static int
verify_chunks(struct img_reader *r, uint64_t first, uint64_t end,
    struct err *e)
{
	uint64_t ci;

	for (ci = first; ci < end; ci++) {
		r->cached = UINT64_MAX;
		if (load_chunk(r, ci, e) < 0)
			return -1;
	}
	return 0;
}

int
img_verify(struct img_reader *r, struct err *e)
{
	uint8_t *tail = NULL;
	size_t len;

	if (verify_chunks(r, 0, r->nchunks, e) < 0)
		return -1;
	if (img_read_tail(r, &tail, &len, e) < 0)
		return -1;
	free(tail);
	return 0;
}

/*
 * One share of a check over chunks [first, end): img_verify_parallel()'s
 * (a reader of its own) or img_check_frames()'s (r shared).
 */
struct chunk_part {
	struct img_reader *r;
	uint64_t first, end;
	int (*check)(struct img_reader *r, uint64_t first, uint64_t end,
	    struct err *e);
	struct err err;
	int rc;
	pthread_t thread;
};

static void *
chunk_part_main(void *arg)
{
	struct chunk_part *v = arg;

	v->rc = v->check(v->r, v->first, v->end, &v->err);
	return NULL;
}

/*
 * Run the n shares: the first on this thread, the others on threads of
 * their own (on this one too when a thread cannot start).  The threads
 * block every signal, so the caller's waits see SIGINT.  0, or -1 with e
 * from the first failed share in order: the first bad chunk in the file.
 */
static int
chunk_parts_run(struct chunk_part *v, int n, struct err *e)
{
	sigset_t all, old;
	int k, started = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (k = 1; k < n; k++) {
		if (pthread_create(&v[k].thread, NULL, chunk_part_main,
		    &v[k]) != 0)
			break;
		started = k;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	chunk_part_main(&v[0]);
	for (k = started + 1; k < n; k++)
		chunk_part_main(&v[k]);
	for (k = 1; k <= started; k++)
		pthread_join(v[k].thread, NULL);
	for (k = 0; k < n; k++) {
		if (v[k].rc < 0) {
			if (e != NULL)
				*e = v[k].err;
			return -1;
		}
	}
	return 0;
}

int
img_verify_parallel(struct img_reader *r, const char *path, int nthreads,
    struct err *e)
{
	struct chunk_part *v;
	uint8_t *tail = NULL;
	size_t len;
	long cpus;
	int k, rc = -1;

	if (nthreads <= 0) {
		cpus = sysconf(_SC_NPROCESSORS_ONLN);
		nthreads = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
	}
	if (nthreads < 2 || r->nchunks < 2 * (uint64_t)nthreads)
		return img_verify(r, e);
	v = xcalloc((size_t)nthreads, sizeof(*v));
	for (k = 0; k < nthreads; k++) {
		v[k].first = r->nchunks * (uint64_t)k / (uint64_t)nthreads;
		v[k].end = r->nchunks * (uint64_t)(k + 1) / (uint64_t)nthreads;
		v[k].check = verify_chunks;
		v[k].r = k == 0 ? r : img_open(path, e);
		if (v[k].r == NULL)
			goto out;
	}
	if (chunk_parts_run(v, nthreads, e) < 0)
		goto out;
	if (img_read_tail(r, &tail, &len, e) < 0)
		goto out;
	free(tail);
	rc = 0;
out:
	for (k = 1; k < nthreads; k++)
		if (v[k].r != r)
			img_close(v[k].r);
	free(v);
	return rc;
}

/*
 * img_check_frames() on chunks [first, end): each frame's CRC and header,
 * read in large sequential reads; a frame that runs past the end of the
 * buffer moves to its front before the next read.  Only reads r.
 */
static int
check_chunks(struct img_reader *r, uint64_t first, uint64_t end,
    struct err *e)
{
	const struct rentry *x;
	uint8_t *buf = NULL;
	uint64_t ci, bpos = 0, have = 0, stop = 0, keep, n;
	int rc = -1;

	for (ci = end; ci > first && stop == 0; ci--)
		if (r->idx[ci - 1].size != 0)
			stop = r->idx[ci - 1].off + r->idx[ci - 1].size;
	if (stop == 0)
		return 0;
	buf = xmalloc(CHECK_BUF);
	for (ci = first; ci < end; ci++) {
		x = &r->idx[ci];
		if (x->size == 0)
			continue;
		/* Frames are back to back: x starts where the last ended. */
		if (have == 0 || x->off + x->size > bpos + have) {
			keep = have == 0 ? 0 : bpos + have - x->off;
			memmove(buf, buf + (have - keep), (size_t)keep);
			bpos = x->off;
			n = stop - bpos - keep;
			if (n > CHECK_BUF - keep)
				n = CHECK_BUF - keep;
			if (rd(r, buf + keep, (size_t)n, bpos + keep, "frame",
			    e) < 0) {
				chunk_prefix(r, ci, e);
				goto out;
			}
			have = keep + n;
		}
		if (frame_sane(r, buf + (x->off - bpos), x->size,
		    (size_t)popcount64(x->present & ~x->zero) * PAGE, x->crc,
		    e) < 0) {
			chunk_prefix(r, ci, e);
			goto out;
		}
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

int
img_check_frames(struct img_reader *r, const char *path, int nthreads,
    struct err *e)
{
	struct chunk_part *v = NULL;
	const struct rentry *x;
	uint8_t *z = NULL;
	uint64_t ci, share;
	int k, rc = -1;

	if (!(r->meta.flags & IMG_F_FRAME_CRCS))
		return path != NULL ? img_verify_parallel(r, path, nthreads,
		    e) : img_verify(r, e);
	if (nthreads <= 0)
		nthreads = cpus_usable() < 8 ? cpus_usable() : 8;
	/* Threads share r's descriptor (pread); other I/O stays here. */
	if (r->fd < 0 || r->data_size / CHECK_SHARE < 2)
		nthreads = 1;
	else if ((uint64_t)nthreads > r->data_size / CHECK_SHARE)
		nthreads = (int)(r->data_size / CHECK_SHARE);
	v = xcalloc((size_t)nthreads, sizeof(*v));
	/* Shares of equal data bytes, cut at chunks. */
	share = r->data_size / (uint64_t)nthreads;
	for (k = 0; k < nthreads; k++) {
		v[k].r = r;
		v[k].check = check_chunks;
	}
	v[nthreads - 1].end = r->nchunks;
	for (ci = 0, k = 1; ci < r->nchunks && k < nthreads; ci++) {
		x = &r->idx[ci];
		while (k < nthreads && x->size != 0 &&
		    x->off - r->data_off >= share * (uint64_t)k) {
			v[k - 1].end = v[k].first = ci;
			k++;
		}
	}
	for (; k < nthreads; k++)
		v[k - 1].end = v[k].first = r->nchunks;

	if (chunk_parts_run(v, nthreads, e) < 0)
		goto out;
	z = xmalloc((size_t)r->tail_size);
	if (frame_check(r, r->tail_off, (size_t)r->tail_size, z,
	    (size_t)r->meta.tail_bytes, r->tail_crc, e) < 0) {
		err_prefix(e, "device state: ");
		goto out;
	}
	rc = 0;
out:
	free(z);
	free(v);
	return rc;
}

void
img_close(struct img_reader *r)
{
	if (r == NULL)
		return;
	if (r->fd >= 0)
		close(r->fd);
	ZSTD_freeDCtx(r->dctx);
	free(r->zbuf);
	free(r->cbuf);
	free(r->idx);
	free(r->blocks);
	free(r->bfirst);
	free(r->config);
	free(r);
}
