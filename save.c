/*
 * save.c - the compact memory image's writer (man/snapctl-image.5): fed by
 * the stream parser, it keeps only the newest copy of every page in a
 * fixed chunk cache, hashes evicted chunks on a thread pool and compresses
 * those its base does not hold into the image's own data region, and
 * writes the index at commit (version 2: frames in any order).
 *
 * Where frames go: the image's temporary file is the log.  A worker
 * appends its frame, tightly, at the end of the data region as it
 * finishes; the index records where each landed, so the commit never
 * rewrites frames in index order.  A chunk dirtied again after its frame
 * was written gets a newer frame; the older one is dead.  Dead frames are
 * gathered, merged where they touch, and their whole blocks punched in
 * batches of PUNCH_BATCH bytes, so the disk holds about one copy of the
 * guest.  Batches, not one punch per frame: on ext4 a punch costs a
 * journal transaction whatever its length, and one per frame, on the
 * parser's thread, made a 16 GiB stream sent thrice a third slower.
 * At commit the holes dead frames left are closed by sliding the frames
 * after the first hole down over them (one forward copy, in file order),
 * so that the own frames cover the data region exactly, as long as that
 * moves at most slide_max bytes (img_opts; 256 MiB by default): a stream
 * that never replaces a written frame (a chunk rewritten while still
 * cached costs nothing) commits without copying a byte.  Past it (every
 * page sent again after its frame was written, say), the commit leaves
 * the holes, punched, and sets flag 0x20: copying gigabytes of live frames
 * and syncing them again cost more than compressing them.  A file system
 * that cannot punch always slides (its holes would keep their bytes).
 * Filling holes with later frames cannot be exact (frame sizes are what
 * they are), so it is not tried.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "imgfmt.h"
#include "imghash.h"
#include "save.h"
#include "util.h"

_Static_assert(IMG_PAGE_SIZE == STREAM_PAGE_SIZE, "the image's pages are "
    "the stream's");

#define MAX_RAM		(1ull << 44)	/* index < 4 GiB */
#define PUNCH_ALIGN	4096u	/* dead frames free their whole blocks */
#define PUNCH_BATCH	IMG_DEAD_HELD_MAX /* punch when this much is dead ... */
#define PUNCH_RANGES	64		/* ... or this many ranges */
#define IO_BUF		(1u << 20)
#define DEFAULT_CACHE	(192u << 20)
#define DEFAULT_SLIDE_MAX (256ull << 20)
#define MAX_THREADS	64
#define HUGE_ALIGN	(2u << 20)	/* a transparent huge page */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23	/* Linux 5.14; older kernels say EINVAL */
#endif
#define PF_AHEAD	(4u << 20)	/* prefault this far past the buffers */
#define PF_STEP_BUFS	8u		/* ... told every 2 MiB of buffers */

/*
 * The writer.
 *
 * Every chunk has, besides its present and zero bitmaps, a newest
 * "version": the data pages last handed to compression (vmask).  That
 * version lives in a job's buffer while it is in flight and, once done, in
 * the log (a frame) or in the base (unchanged: shared, never compressed);
 * generations order versions, so a job that finishes after
 * a newer one was installed is simply dead.  A cache slot holds only the
 * pages written during its residency (written); on eviction the other data
 * pages are merged from the newest version, which a whole new pass over
 * memory never needs.
 *
 * With a base, a cached chunk whose pages have all arrived in its
 * residency (the first pass sends every chunk whole, in order) is checked
 * at once: a worker hashes the slot's buffer in place.  Unchanged, the
 * chunk becomes the base's and its slot is freed for the next chunk, so an
 * unchanged guest streams through a few cache-hot buffers instead of
 * filling the cache; changed, it stays cached with its hash kept for its
 * eviction, unless a page is written meanwhile.  A slot under check is
 * never written or evicted: the parser waits for the check first.
 */

struct wchunk {
	uint64_t present;
	uint64_t zero;
	uint64_t vmask;		/* data pages of the newest version */
	uint64_t foff;		/* newest finished frame, from the log's start
				 * (after the commit: in the file) */
	uint32_t fsize;
	uint32_t fcrc;		/* its CRC-32C */
	uint32_t fgen;		/* its generation (0: no frame) */
	uint32_t gen;		/* generation of the newest version */
	int32_t slot;		/* cache slot, or -1 */
	int shared;		/* the newest finished version is a frame the
				 * base names (fsize 0): that of its chunk bci */
	uint32_t bci;
	struct job *job;	/* newest version's job while in flight */
};

struct slot {
	uint8_t *buf;		/* a chunk, page i at i * IMG_PAGE_SIZE */
	uint64_t chunk;
	uint64_t written;	/* data pages written in this residency */
	int32_t prev, next;	/* LRU list, most recent first; free list */
	struct job *check;	/* a check of buf in flight */
	int checked;		/* a check was made in this residency */
	int hashed;		/* hash is the chunk's, unchanged since */
	uint8_t hash[IMG_HASH_SIZE];
};

struct job {
	struct job *next;
	uint64_t chunk;
	uint32_t gen;
	uint64_t mask;		/* data pages of buf to compress */
	uint8_t *buf;
	uint64_t off;		/* result: where in the log */
	size_t size;		/* compressed size (0 when shared) */
	uint32_t crc;		/* of the compressed bytes */
	int shared;		/* the base holds the same chunk: its bci */
	uint32_t bci;
	int check;		/* hash and compare only: buf is slot's */
	int32_t slot;		/* with check */
	int have_hash;		/* hash given, not to be computed */
	uint8_t hash[IMG_HASH_SIZE];
	struct err err;
};

struct worker {
	struct img_writer *w;
	pthread_t thread;
	ZSTD_CCtx *cctx;
	uint8_t *pack;		/* the data pages, packed */
	uint8_t *out;		/* IMG_FRAME_MAX */
	struct img_hasher *hasher;
};

struct img_writer {
	struct img_opts opts;
	struct atomic_file out;
	int rfd;			/* the temporary file, read-only */
	uint64_t log_base;		/* where the log starts in the file */
	uint64_t log_end;		/* atomic: next free log offset */
	int no_punch;
	/* Dead log ranges not punched yet: sorted, none touching another
	 * (ingest thread only). */
	struct { uint64_t a, b; } dead[PUNCH_RANGES];
	int ndead;
	uint64_t dead_bytes;
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
	uint8_t *tail;			/* the device state, compressed */
	uint64_t tail_size, tail_len;
	uint32_t tail_crc;

	/* version 2 */
	uint8_t id[IMG_ID_SIZE];
	int share;			/* the base's block table is ours */
	uint32_t npacks;		/* with share: 1 + the base's used */
	uint16_t *pack_map;		/* base pack k -> ours (0: unused) */
	uint8_t *hashes;		/* IMG_HASH_SIZE per chunk */
	/* With a base: its chunks with a frame by hash, open addressing
	 * (bci + 1, 0 empty; read-only once built, so workers share it). */
	uint32_t *btab;
	uint64_t bmask;
	uint64_t hashed_only;

	/* per chunk */
	struct wchunk *chunks;
	uint64_t nchunks;
	uint64_t pages, zero_pages, live_bytes, recompressions;

	/* cache */
	struct slot *slots;
	uint32_t nslots, nused;
	int32_t lru_head, lru_tail;
	int32_t free_slots;		/* released by checks, buffers kept */
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

static void lru_unlink(struct img_writer *w, int32_t s);
static void share_decide(struct img_writer *w);
static void meta_build(struct img_writer *w, struct buf *m, uint64_t frames,
    int packs);
static int id_make(struct img_writer *w, struct err *e);

static int
writer_fail(struct img_writer *w, struct err *e)
{
	w->failed = 1;
	if (e != NULL && !err_isset(e))
		*e = w->err;
	return -1;
}

/* Free the whole blocks of the dead log range [a, b). */
static void
punch_range(struct img_writer *w, uint64_t a, uint64_t b)
{
	a = (w->log_base + a + PUNCH_ALIGN - 1) / PUNCH_ALIGN * PUNCH_ALIGN;
	b = (w->log_base + b) / PUNCH_ALIGN * PUNCH_ALIGN;
	if (w->no_punch || b <= a)
		return;
	/* Best effort: a file system without holes just keeps the bytes. */
	if (fallocate(w->out.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	    (off_t)a, (off_t)(b - a)) < 0 && errno == EOPNOTSUPP)
		w->no_punch = 1;
}

static void
punch_flush(struct img_writer *w)
{
	int i;

	for (i = 0; i < w->ndead; i++)
		punch_range(w, w->dead[i].a, w->dead[i].b);
	w->ndead = 0;
	w->dead_bytes = 0;
}

/*
 * The frame at off (from the log's start), len bytes, is dead: add it to
 * the ranges to punch, merged with those it touches (so that the blocks
 * two dead frames share are freed too); punch them all once they are
 * PUNCH_BATCH bytes or PUNCH_RANGES ranges.  Ingest thread only.
 */
static void
punch(struct img_writer *w, uint64_t off, uint64_t len)
{
	uint64_t a = off, b = off + len;
	int i = 0, j;

	if (w->no_punch || len == 0)
		return;
	while (i < w->ndead && w->dead[i].b < a)
		i++;
	/* dead[i] is the first range that ends at or after a. */
	if (i < w->ndead && w->dead[i].a <= b) {
		if (w->dead[i].a > a)
			w->dead[i].a = a;
		if (w->dead[i].b < b) {
			w->dead[i].b = b;
			/* It may reach the next one now. */
			if (i + 1 < w->ndead && w->dead[i + 1].a <= b) {
				w->dead[i].b = w->dead[i + 1].b;
				for (j = i + 1; j + 1 < w->ndead; j++)
					w->dead[j] = w->dead[j + 1];
				w->ndead--;
			}
		}
	} else {
		if (w->ndead == PUNCH_RANGES)
			punch_flush(w);
		for (i = 0; i < w->ndead && w->dead[i].a < a; i++)
			;
		for (j = w->ndead; j > i; j--)
			w->dead[j] = w->dead[j - 1];
		w->dead[i].a = a;
		w->dead[i].b = b;
		w->ndead++;
	}
	w->dead_bytes += len;
	if (w->dead_bytes >= PUNCH_BATCH)
		punch_flush(w);
}

/* Append a frame to the log (any thread): *off where, from its start. */
static int
log_append(struct img_writer *w, const void *buf, size_t len, uint64_t *off,
    struct err *e)
{
	*off = __atomic_fetch_add(&w->log_end, len, __ATOMIC_RELAXED);
	if (pwrite_full(w->out.fd, buf, len, (off_t)(w->log_base + *off)) < 0)
		return err_sys(e, ERR_FAIL, "cannot write '%s'", w->out.tmp);
	return 0;
}

static int64_t base_find(const struct img_writer *w, const uint8_t *hash);

/*
 * Hash one job's pages and, unless the base holds the same chunk, compress
 * them into the log (worker thread).
 */
static void
job_run(struct worker *wk, struct job *j)
{
	struct img_writer *w = wk->w;
	struct img_chunk_ref ref;
	const uint8_t *src = j->buf;
	size_t len, n = 0;
	uint64_t m;
	int64_t b;
	unsigned i;

	/* Hashed where the pages are: an unchanged chunk is never copied. */
	if (!j->have_hash &&
	    img_hash_pages(wk->hasher, j->mask, j->buf, j->hash) < 0) {
		err_set(&j->err, ERR_FAIL, "chunk %llu: cannot hash it",
		    (unsigned long long)j->chunk);
		return;
	}
	j->shared = 0;
	j->size = 0;
	if (w->share) {
		/* img_chunk_ref() is pure: workers share the base.  The
		 * same chunk first, then any the base names. */
		img_chunk_ref(w->opts.base, j->chunk, &ref);
		if (ref.has_hash && ref.size != 0 &&
		    memcmp(ref.hash, j->hash, IMG_HASH_SIZE) == 0) {
			j->shared = 1;
			j->bci = (uint32_t)j->chunk;
			return;
		}
		if ((b = base_find(w, j->hash)) >= 0) {
			j->shared = 1;
			j->bci = (uint32_t)b;
			return;
		}
	}
	if (j->check)
		return;
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
	j->size = ZSTD_compress2(wk->cctx, wk->out, IMG_FRAME_MAX, src, len);
	if (ZSTD_isError(j->size)) {
		err_set(&j->err, ERR_FAIL, "chunk %llu: zstd: %s",
		    (unsigned long long)j->chunk, ZSTD_getErrorName(j->size));
		j->size = 0;
		return;
	}
	j->crc = crc32c(0, wk->out, j->size);
	if (log_append(w, wk->out, j->size, &j->off, &j->err) < 0)
		j->size = 0;
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

/*
 * A newest version of chunk c with no frame of its own, installed at once:
 * the base's (shared, data pages vmask) or none (no data page left).
 * Every older version is dead; an older job still in flight finds so.
 */
static void
version_frameless(struct img_writer *w, struct wchunk *c, int shared,
    uint64_t vmask)
{
	c->gen++;
	if (c->fsize != 0) {
		punch(w, c->foff, c->fsize);
		w->live_bytes -= c->fsize;
	}
	c->foff = 0;
	c->fsize = 0;
	c->fcrc = 0;
	c->fgen = c->gen;
	c->shared = shared;
	c->vmask = vmask;
	c->job = NULL;
}

/*
 * A check finished (ingest thread): an unchanged chunk becomes the base's
 * (a new version, as an eviction found shared would make) and its slot
 * goes to the free list with its buffer; a changed one stays cached and
 * keeps its hash for its eviction.
 */
static void
check_done(struct img_writer *w, struct job *j)
{
	struct wchunk *c = &w->chunks[j->chunk];
	struct slot *sl = &w->slots[j->slot];

	sl->check = NULL;
	j->buf = NULL;
	if (err_isset(&j->err))
		return;
	if (!j->shared) {
		memcpy(sl->hash, j->hash, IMG_HASH_SIZE);
		sl->hashed = 1;
		return;
	}
	version_frameless(w, c, 1, j->mask);
	c->bci = j->bci;
	memcpy(w->hashes + j->chunk * IMG_HASH_SIZE, j->hash, IMG_HASH_SIZE);
	w->hashed_only++;
	lru_unlink(w, j->slot);
	c->slot = -1;
	sl->next = w->free_slots;
	w->free_slots = j->slot;
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
		if (err_isset(&j->err) && !w->failed) {
			w->err = j->err;
			w->failed = 1;
		}
		if (j->check) {
			check_done(w, j);
			goto free_job;
		}
		if (!err_isset(&j->err) && j->gen > c->fgen) {
			if (c->fsize != 0) {
				punch(w, c->foff, c->fsize);
				w->live_bytes -= c->fsize;
			}
			c->foff = j->shared ? 0 : j->off;
			c->fsize = (uint32_t)j->size;
			c->fcrc = j->shared ? 0 : j->crc;
			c->fgen = j->gen;
			c->shared = j->shared;
			c->bci = j->bci;
			memcpy(w->hashes + j->chunk * IMG_HASH_SIZE, j->hash,
			    IMG_HASH_SIZE);
			w->live_bytes += j->size;
		} else if (!err_isset(&j->err) && j->size != 0) {
			punch(w, j->off, j->size);
		}
		if (!err_isset(&j->err) && j->shared)
			w->hashed_only++;
		if (c->job == j)
			c->job = NULL;
		buf_put(w, j->buf);
		j->buf = NULL;
free_job:
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
 * Decode a frame of npages packed pages from the log into out (the
 * writer's own frames, but a disk can still lie).
 */
static int
log_decode(struct img_writer *w, uint64_t ci, uint64_t off,
    uint32_t size, uint32_t crc, unsigned npages, uint8_t *out,
    struct err *e)
{
	size_t want = (size_t)npages * IMG_PAGE_SIZE, n;
	ssize_t got;

	got = pread_full(w->rfd, w->zbuf, size, (off_t)(w->log_base + off));
	if (got < 0)
		return err_sys(e, ERR_FAIL, "cannot read '%s'", w->out.tmp);
	if ((size_t)got != size)
		return err_set(e, ERR_FAIL, "'%s' is truncated", w->out.tmp);
	if (crc32c(0, w->zbuf, size) != crc)
		return err_set(e, ERR_FAIL, "chunk %llu in '%s': CRC-32C "
		    "mismatch", (unsigned long long)ci, w->out.tmp);
	n = ZSTD_decompressDCtx(w->dctx, out, want, w->zbuf, size);
	if (ZSTD_isError(n))
		return err_set(e, ERR_FAIL, "chunk %llu in '%s': zstd: %s",
		    (unsigned long long)ci, w->out.tmp, ZSTD_getErrorName(n));
	if (n != want)
		return err_set(e, ERR_FAIL, "chunk %llu in '%s': short frame",
		    (unsigned long long)ci, w->out.tmp);
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
	if (c->fgen != c->gen || (c->fsize == 0 && !c->shared) ||
	    (mask & ~c->vmask) != 0)
		return err_set(e, ERR_FAIL, "chunk %llu: internal error: "
		    "pages to merge are in no version",
		    (unsigned long long)ci);
	if (c->shared) {
		/* The base's frame: its reader is this thread's alone. */
		if (img_read_chunk(w->opts.base, c->bci, w->dbuf, &m, e) < 0)
			return -1;
		if (m != c->vmask)
			return err_set(e, ERR_FAIL, "chunk %llu: the base "
			    "changed under the writer",
			    (unsigned long long)ci);
	} else if (log_decode(w, ci, c->foff, c->fsize, c->fcrc,
	    img_mask_count(c->vmask), w->dbuf, e) < 0) {
		return -1;
	}
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
		version_frameless(w, c, 0, 0);	/* no data page left */
		return 0;
	}
	j = job_take(w);
	if (c->gen > 0)
		w->recompressions++;
	j->chunk = sl->chunk;
	j->gen = ++c->gen;
	j->mask = data;
	j->buf = sl->buf;
	j->check = 0;
	/* Checked changed and not written since: no need to hash again. */
	j->have_hash = sl->hashed && (data & ~sl->written) == 0;
	if (j->have_hash)
		memcpy(j->hash, sl->hash, IMG_HASH_SIZE);
	c->job = j;
	c->vmask = data;
	sl->buf = buf_take(w);
	job_submit(w, j);
	return 0;
}

/* Wait until slot s has no check in flight (its result installed: the
 * slot may have been freed). */
static int
check_wait(struct img_writer *w, int32_t s, struct err *e)
{
	while (w->slots[s].check != NULL)
		reap(w, 1);
	return w->failed ? writer_fail(w, e) : 0;
}

/*
 * A cache slot for chunk ci: a slot a check freed (its buffer the most
 * recently used), else a new one while there are, else the least
 * recently used one, evicted.
 */
static int
slot_get(struct img_writer *w, uint64_t ci, struct err *e)
{
	struct slot *sl;
	int32_t s;

	/* Checks free slots as they finish: take those first. */
	if (w->share && w->free_slots < 0 && w->inflight > 0)
		reap(w, 0);
	for (;;) {
		if (w->free_slots >= 0) {
			s = w->free_slots;
			w->free_slots = w->slots[s].next;
			break;
		}
		if (w->nused < w->nslots) {
			s = (int32_t)w->nused++;
			w->slots[s].buf = buf_take(w);
			break;
		}
		s = w->lru_tail;
		if (w->slots[s].check != NULL) {
			if (check_wait(w, s, e) < 0)
				return -1;
			continue;
		}
		if (evict(w, s, e) < 0)
			return -1;
		break;
	}
	sl = &w->slots[s];
	sl->chunk = ci;
	sl->written = 0;
	sl->checked = 0;
	sl->hashed = 0;
	w->chunks[ci].slot = s;
	lru_push(w, s);
	return s;
}

/*
 * Chunk ci's pages have all arrived in slot s's residency: unless its
 * data pages differ from the base's entry at a glance, a worker hashes it
 * in place and compares (once a residency: a chunk the guest keeps
 * writing is not hashed on every page).
 */
static void
check_submit(struct img_writer *w, uint64_t ci, int32_t s)
{
	struct slot *sl = &w->slots[s];
	struct wchunk *c = &w->chunks[ci];
	uint64_t data = c->present & ~c->zero;
	struct img_chunk_ref ref;
	struct job *j;

	sl->checked = 1;
	img_chunk_ref(w->opts.base, ci, &ref);
	if (data == 0 || !ref.has_hash || ref.size == 0 ||
	    (ref.present & ~ref.zero) != data)
		return;
	j = job_take(w);
	j->chunk = ci;
	j->gen = c->gen;
	j->mask = data;
	j->buf = sl->buf;
	j->check = 1;
	j->slot = s;
	j->have_hash = 0;
	sl->check = j;
	job_submit(w, j);
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
	if (w->have_blocks)	/* the log starts after the metadata */
		return err_set(e, ERR_FAIL, "configuration section after the "
		    "RAM block list");
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
	struct buf m = BUF_INIT;
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
	w->hashes = xcalloc(n ? n : 1, IMG_HASH_SIZE);
	for (k = 0; k < n; k++)
		w->chunks[k].slot = -1;
	w->have_blocks = 1;
	share_decide(w);
	/* The log starts where the data region will (with the pack table
	 * that sharing may need; without it the commit slides the frames). */
	meta_build(w, &m, 0, w->share);
	if (m.len > IMG_MAX_META) {
		buf_release(&m);
		return err_set(e, ERR_FAIL, "image metadata too large");
	}
	w->log_base = IMG_HDR_SIZE + m.len;
	buf_release(&m);
	return 0;
}

/* The pages chunk of offset in block has: 64 but for a block's last. */
static uint64_t
chunk_pages(const struct img_writer *w, uint32_t block, uint64_t offset)
{
	uint64_t left = w->blocks[block].used_length -
	    offset / IMG_CHUNK_BYTES * IMG_CHUNK_BYTES;

	if (left >= IMG_CHUNK_BYTES)
		return ~0ull;
	return (1ull << (left / IMG_PAGE_SIZE)) - 1;
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
	if (c->slot >= 0) {
		if (w->slots[c->slot].check != NULL &&
		    check_wait(w, c->slot, e) < 0)
			return -1;
		if (c->slot >= 0)
			w->slots[c->slot].hashed = 0;
	}
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
		goto complete;
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
complete:
	if (!w->share || c->slot < 0 || w->slots[c->slot].checked ||
	    c->present != chunk_pages(w, block, offset) ||
	    (c->present & ~c->zero & ~w->slots[c->slot].written) != 0)
		return 0;
	check_submit(w, ci, c->slot);
	return w->failed ? writer_fail(w, e) : 0;
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
	/* Kept in memory (at most the bound of 64 MiB) until the commit
	 * writes it after the data region. */
	w->tail = out;
	out = NULL;
	w->tail_size = n;
	w->tail_len = len;
	w->tail_crc = crc32c(0, w->tail, n);
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

	w->rfd = -1;
	w->lru_head = w->lru_tail = -1;
	w->free_slots = -1;
	w->out.fd = -1;
	w->opts = o != NULL ? *o : def;
	if (w->opts.level == 0)
		w->opts.level = 1;
	if (w->opts.slide_max == 0)
		w->opts.slide_max = DEFAULT_SLIDE_MAX;
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
	/* The log is read back for merges (the temporary name is ours). */
	w->rfd = open(w->out.tmp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (w->rfd < 0) {
		err_sys(e, ERR_FAIL, "cannot open '%s'", w->out.tmp);
		goto fail;
	}
	if (id_make(w, e) < 0)
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
		if ((wk->hasher = img_hasher_new(IMG_HASH_BLAKE3)) == NULL) {
			err_set(e, ERR_FAIL, "cannot create a hasher");
			goto fail;
		}
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

static uint64_t
hash_key(const uint8_t *hash)
{
	uint64_t k;

	memcpy(&k, hash, sizeof(k));
	return k;
}

/*
 * The base's chunks with a frame (its own or one it names), by hash, so
 * that a chunk found in none of the base's same places may still name a
 * frame the base names elsewhere: pages that moved, or the same content
 * in two places.  Of equal hashes the first chunk is kept.
 */
static void
btab_build(struct img_writer *w)
{
	struct img_chunk_ref ref;
	uint64_t n = 0, size = 16, ci, h;

	for (ci = 0; ci < w->nchunks; ci++) {
		img_chunk_ref(w->opts.base, ci, &ref);
		n += ref.has_hash && ref.size != 0;
	}
	while (size < 2 * n)
		size *= 2;
	w->btab = xcalloc((size_t)size, sizeof(*w->btab));
	w->bmask = size - 1;
	for (ci = 0; ci < w->nchunks; ci++) {
		img_chunk_ref(w->opts.base, ci, &ref);
		if (!ref.has_hash || ref.size == 0 || base_find(w, ref.hash) >= 0)
			continue;
		for (h = hash_key(ref.hash) & w->bmask; w->btab[h] != 0;
		    h = (h + 1) & w->bmask)
			;
		w->btab[h] = (uint32_t)ci + 1;
	}
}

/* The base's chunk whose frame has this hash, or -1 (any thread). */
static int64_t
base_find(const struct img_writer *w, const uint8_t *hash)
{
	struct img_chunk_ref ref;
	uint64_t h;

	if (w->btab == NULL)
		return -1;
	for (h = hash_key(hash) & w->bmask; w->btab[h] != 0;
	    h = (h + 1) & w->bmask) {
		img_chunk_ref(w->opts.base, w->btab[h] - 1, &ref);
		if (memcmp(ref.hash, hash, IMG_HASH_SIZE) == 0)
			return (int64_t)w->btab[h] - 1;
	}
	return -1;
}

/*
 * Sharing is possible when the base is version 2 with BLAKE3 hashes (ours:
 * a base from before flag 0x10 shares nothing) and our block table
 * (names and used lengths: then chunk i is the same guest range in both)
 * and its pack table leaves room for it in ours.
 */
static void
share_decide(struct img_writer *w)
{
	const struct img_meta *m;
	size_t i;

	w->share = 0;
	if (w->opts.base == NULL)
		return;
	m = img_meta(w->opts.base);
	if (m->version != IMG_VERSION_2 || !(m->flags & IMG_F_BLAKE3) ||
	    m->nblocks != w->nblocks ||
	    m->npacks + 1 > IMG_MAX_PACKS ||
	    img_nchunks(w->opts.base) != w->nchunks)
		return;
	for (i = 0; i < w->nblocks; i++)
		if (strcmp(m->blocks[i].name, w->blocks[i].name) != 0 ||
		    m->blocks[i].used_length != w->blocks[i].used_length)
			return;
	w->share = 1;
	w->npacks = 1;
	btab_build(w);
}

/*
 * Our pack table: the base (pack 1), then only those of the base's packs
 * that a shared entry names, in the base's order; pack_map[k] is our
 * number for the base's pack k (0 the base's own frames).  Without this
 * the table would grow by one entry per generation.
 */
static void
packs_plan(struct img_writer *w)
{
	const struct img_meta *bm = img_meta(w->opts.base);
	struct img_chunk_ref ref;
	uint64_t ci;
	uint32_t k;

	free(w->pack_map);
	w->pack_map = xcalloc((size_t)bm->npacks + 1, sizeof(*w->pack_map));
	for (ci = 0; ci < w->nchunks; ci++) {
		if (!w->chunks[ci].shared || w->chunks[ci].fsize != 0)
			continue;
		img_chunk_ref(w->opts.base, w->chunks[ci].bci, &ref);
		if (ref.pack <= bm->npacks)
			w->pack_map[ref.pack] = 1;
	}
	w->pack_map[0] = 1;
	w->npacks = 1;
	for (k = 1; k <= bm->npacks; k++)
		if (w->pack_map[k])
			w->pack_map[k] = (uint16_t)++w->npacks;
}

/* A pack table entry: id, file size and a name hint (cut at 255). */
static void
pack_add(struct buf *m, const uint8_t *id, uint64_t file_size,
    const char *hint)
{
	uint8_t pe[IMG_PACK_FIXED];
	size_t n = hint != NULL ? strnlen(hint, 255) : 0;

	memset(pe, 0, sizeof(pe));
	memcpy(pe + IMG_PACK_ID, id, IMG_ID_SIZE);
	put_le64(pe + IMG_PACK_FILE_SIZE, file_size);
	put_le16(pe + IMG_PACK_NAME_LEN, (uint16_t)n);
	buf_add(m, pe, sizeof(pe));
	buf_add(m, hint, n);
}

/*
 * The metadata region, complete (frame header included), version 2; with
 * packs, the pack table: the base, then those of the base's own packs
 * that a shared entry names, in its order (packs_plan()).
 */
static void
meta_build(struct img_writer *w, struct buf *m, uint64_t frames, int packs)
{
	uint8_t fixed[IMG_META_FIXED_V2], be[IMG_BLOCK_FIXED];
	size_t mlen = strlen(w->machine), i, nlen;
	const struct img_meta *bm;
	struct img_pack_info pi;
	uint32_t p;

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
	memcpy(fixed + IMG_META_IMAGE_ID, w->id, IMG_ID_SIZE);
	put_le32(fixed + IMG_META_NPACKS, packs ? w->npacks : 0);
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
	if (packs) {
		bm = img_meta(w->opts.base);
		pack_add(m, bm->id, bm->file_bytes, w->opts.base_hint);
		for (p = 1; p <= bm->npacks; p++) {
			img_pack_info(w->opts.base, p, &pi);
			/* Before the plan, the estimate: what the base names. */
			if (w->pack_map != NULL ? w->pack_map[p] == 0 :
			    pi.refs == 0)
				continue;
			pack_add(m, pi.id, pi.file_size, pi.hint);
		}
	}
	put_skippable(m->data, IMG_SKIP_META, m->len);
}

/* A new image id: random, never all zero, none of the packs' ids. */
static int
id_make(struct img_writer *w, struct err *e)
{
	static const uint8_t zero[IMG_ID_SIZE];
	const struct img_meta *bm;
	struct img_pack_info pi;
	uint32_t p;
	int again;

	do {
		if (getrandom(w->id, IMG_ID_SIZE, 0) != IMG_ID_SIZE)
			return err_sys(e, ERR_FAIL, "cannot get random bytes "
			    "for an image id");
		again = memcmp(w->id, zero, IMG_ID_SIZE) == 0;
		if (w->opts.base != NULL && !again) {
			bm = img_meta(w->opts.base);
			again = memcmp(w->id, bm->id, IMG_ID_SIZE) == 0;
			for (p = 1; !again && p <= bm->npacks; p++) {
				img_pack_info(w->opts.base, p, &pi);
				again = memcmp(w->id, pi.id, IMG_ID_SIZE) == 0;
			}
		}
	} while (again);
	return 0;
}

static int
off_cmp(const void *a, const void *b, void *arg)
{
	const struct wchunk *c = arg;
	uint64_t x = c[*(const uint64_t *)a].foff;
	uint64_t y = c[*(const uint64_t *)b].foff;

	return x < y ? -1 : x > y;
}

/* Move len bytes from src down to dst (dst < src; they may overlap). */
static int
move_down(struct img_writer *w, uint64_t src, uint64_t dst, uint64_t len,
    uint8_t *iobuf, struct err *e)
{
	size_t step;
	ssize_t n;

	while (len > 0) {
		step = len < IO_BUF ? (size_t)len : IO_BUF;
		/* Forward in steps: a step only overwrites bytes already
		 * read, as dst < src. */
		n = pread_full(w->rfd, iobuf, step, (off_t)src);
		if (n < 0)
			return err_sys(e, ERR_FAIL, "cannot read '%s'",
			    w->out.tmp);
		if ((size_t)n != step)
			return err_set(e, ERR_FAIL, "'%s' is truncated",
			    w->out.tmp);
		if (pwrite_full(w->out.fd, iobuf, step, (off_t)dst) < 0)
			return err_sys(e, ERR_FAIL, "cannot write '%s'",
			    w->out.tmp);
		src += step;
		dst += step;
		len -= step;
	}
	return 0;
}

/* At commit: every cached chunk evicted (hashed, compressed into the log
 * unless shared) and every job reaped. */
static int
flush_all(struct img_writer *w, struct err *e)
{
	while (w->lru_tail >= 0) {
		if (w->slots[w->lru_tail].check != NULL) {
			if (check_wait(w, w->lru_tail, e) < 0)
				return -1;
			continue;
		}
		if (evict(w, w->lru_tail, e) < 0)
			return -1;
	}
	while (w->inflight > 0)
		reap(w, 1);
	if (w->failed)
		return writer_fail(w, e);
	return 0;
}

/*
 * The data region at commit: the own frames, in log order, slid down over
 * the holes (dead frames, or a pack table the image turned out not to
 * need) so that they cover the region from data_off exactly.  Frames
 * before the first hole, all of them when there is none, stay where their
 * worker wrote them.  Sets each chunk's foff to its place in the file;
 * *end is where the region ends, *moved the bytes moved.
 */
static int
write_data(struct img_writer *w, uint64_t data_off, uint64_t *end,
    uint64_t *moved, int *holes, struct err *e)
{
	uint64_t *order = NULL, n = 0, k, ci, pos = data_off, src, run_src;
	uint64_t run_dst = 0, run_len = 0, would = 0, live = 0;
	uint8_t *iobuf = NULL;
	struct wchunk *c;
	int rc = -1;

	order = xcalloc(w->nchunks ? w->nchunks : 1, sizeof(*order));
	for (ci = 0; ci < w->nchunks; ci++)
		if (w->chunks[ci].fsize != 0)
			order[n++] = ci;
	qsort_r(order, n, sizeof(*order), off_cmp, w->chunks);
	/* What sliding would move: every frame not already in place. */
	for (k = 0; k < n; k++) {
		c = &w->chunks[order[k]];
		if (w->log_base + c->foff != pos)
			would += c->fsize;
		pos += c->fsize;
		live += c->fsize;
	}
	w->live_bytes = live;
	*moved = 0;
	*holes = 0;
	if (!w->no_punch && would > w->opts.slide_max) {
		/* The dead ranges not punched yet first: that also finds out
		 * whether this file system can punch at all. */
		punch_flush(w);
		*holes = !w->no_punch;
	}
	if (*holes) {
		/* Frames stay where they landed; the tail follows the last
		 * one. */
		pos = data_off;
		for (k = 0; k < n; k++) {
			c = &w->chunks[order[k]];
			c->foff += w->log_base;
			if (c->foff + c->fsize > pos)
				pos = c->foff + c->fsize;
		}
		*end = pos;
		rc = 0;
		goto out;
	}
	/* The slide writes over the dead ranges not punched yet, or the
	 * truncation frees them: a punch now could only cost. */
	w->ndead = 0;
	w->dead_bytes = 0;
	pos = data_off;
	iobuf = xmalloc(IO_BUF);
	run_src = 0;
	for (k = 0; k <= n; k++) {
		c = k < n ? &w->chunks[order[k]] : NULL;
		src = c != NULL ? w->log_base + c->foff : 0;
		/* A run of frames back to back in the log moves as one. */
		if (run_len > 0 && (c == NULL || src != run_src + run_len)) {
			if (run_src != run_dst && move_down(w, run_src,
			    run_dst, run_len, iobuf, e) < 0)
				goto out;
			if (run_src != run_dst)
				*moved += run_len;
			run_len = 0;
		}
		if (c == NULL)
			break;
		if (run_len == 0) {
			run_src = src;
			run_dst = pos;
		}
		run_len += c->fsize;
		c->foff = pos;
		pos += c->fsize;
	}
	*end = pos;
	rc = 0;
out:
	free(order);
	free(iobuf);
	return rc;
}

/* Chunk ci's index entry (version 2). */
static void
entry_build(struct img_writer *w, uint64_t ci, uint8_t *p,
    struct img_stats *sh)
{
	const struct wchunk *c = &w->chunks[ci];
	struct img_chunk_ref ref;

	memset(p, 0, IMG_ENTRY2_SIZE);
	if (c->fsize != 0) {
		put_le64(p + IMG_ENTRY_FRAME_OFF, c->foff);
		put_le32(p + IMG_ENTRY_FRAME_SIZE, c->fsize);
		put_le32(p + IMG_ENTRY_FRAME_CRC, c->fcrc);
		memcpy(p + IMG_ENTRY_HASH, w->hashes + ci * IMG_HASH_SIZE,
		    IMG_HASH_SIZE);
	} else if (c->shared) {
		/* One hop: the base's own frame is pack 1, a frame the base
		 * names in its pack k is ours in pack_map[k]. */
		img_chunk_ref(w->opts.base, c->bci, &ref);
		put_le64(p + IMG_ENTRY_FRAME_OFF, ref.off);
		put_le32(p + IMG_ENTRY_FRAME_SIZE, ref.size);
		put_le32(p + IMG_ENTRY_FRAME_CRC, ref.crc);
		put_le16(p + IMG_ENTRY_PACK, w->pack_map[ref.pack]);
		memcpy(p + IMG_ENTRY_HASH, w->hashes + ci * IMG_HASH_SIZE,
		    IMG_HASH_SIZE);
		sh->shared_chunks++;
		sh->shared_bytes += ref.size;
		sh->shared_elsewhere += c->bci != ci;
	}
	put_le64(p + IMG_ENTRY_PRESENT, c->present);
	put_le64(p + IMG_ENTRY_ZERO, c->zero);
}

int
img_writer_commit(struct img_writer *w, struct img_stats *st, struct err *e)
{
	struct buf meta = BUF_INIT;
	struct img_stats sh;
	uint8_t hdr[IMG_HDR_SIZE], *ib = NULL;
	uint64_t pos, frames = 0, ci, data_off, tail_off, index_off, end;
	uint64_t moved = 0;
	size_t ilen = 0;
	uint32_t icrc;
	int rc = -1, packs, k, holes = 0;
	double cpu0 = self_cpu_s(), cpu = 0;

	memset(&sh, 0, sizeof(sh));
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
	/* Flush everything first: only then is it known whether an entry
	 * names a pack (the pack table is there only if one does). */
	if (flush_all(w, e) < 0)
		goto out;
	/* Every job is done: what the threads used is final. */
	for (k = 0; k < w->started; k++)
		cpu += thread_cpu_s(w->workers[k].thread);
	if (w->pf_started)
		cpu += thread_cpu_s(w->pf_thread);
	packs = 0;
	for (ci = 0; ci < w->nchunks; ci++) {
		packs |= w->chunks[ci].shared;
		frames += w->chunks[ci].fsize != 0 || w->chunks[ci].shared;
	}
	if (packs)
		packs_plan(w);
	meta_build(w, &meta, frames, packs);
	data_off = IMG_HDR_SIZE + meta.len;
	if (meta.len > IMG_MAX_META) {
		err_set(e, ERR_FAIL, "image metadata too large");
		goto out;
	}
	if (write_data(w, data_off, &pos, &moved, &holes, e) < 0)
		goto out;
	if (pwrite_full(w->out.fd, meta.data, meta.len, IMG_HDR_SIZE) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", w->out.tmp);
		goto out;
	}
	tail_off = pos;
	if (pwrite_full(w->out.fd, w->tail, w->tail_size, (off_t)pos) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", w->out.tmp);
		goto out;
	}
	pos += w->tail_size;

	/* The index, streamed: its CRC runs over the whole region. */
	ib = xmalloc(IO_BUF);
	index_off = pos;
	put_skippable(ib, IMG_SKIP_INDEX, IMG_SKIP_SIZE +
	    w->nchunks * IMG_ENTRY2_SIZE);
	ilen = IMG_SKIP_SIZE;
	icrc = 0;
	for (ci = 0; ci <= w->nchunks; ci++) {
		if (ilen + IMG_ENTRY2_SIZE > IO_BUF || ci == w->nchunks) {
			icrc = crc32c(icrc, ib, ilen);
			end = index_off + (uint64_t)(ci * IMG_ENTRY2_SIZE +
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
		entry_build(w, ci, ib + ilen, &sh);
		ilen += IMG_ENTRY2_SIZE;
	}
	end = index_off + IMG_SKIP_SIZE + w->nchunks * IMG_ENTRY2_SIZE;
	/* The log may have run past the end (dead frames, slid down). */
	if (ftruncate(w->out.fd, (off_t)end) < 0) {
		err_sys(e, ERR_FAIL, "cannot truncate '%s'", w->out.tmp);
		goto out;
	}

	memset(hdr, 0, sizeof(hdr));
	put_skippable(hdr, IMG_SKIP_HDR, IMG_HDR_SIZE);
	memcpy(hdr + IMG_HDR_MAGIC, IMG_MAGIC, IMG_MAGIC_LEN);
	put_le32(hdr + IMG_HDR_VERSION, IMG_VERSION_2);
	put_le32(hdr + IMG_HDR_FLAGS, IMG_F_FRAME_CRCS | IMG_F_BLAKE3 |
	    (packs ? IMG_F_PACKS : 0) | (holes ? IMG_F_HOLES : 0) |
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
	if (st != NULL) {
		img_writer_stats(w, st);
		st->file_bytes = end;
		st->shared_chunks = sh.shared_chunks;
		st->shared_bytes = sh.shared_bytes;
		st->shared_elsewhere = sh.shared_elsewhere;
		st->moved_bytes = moved;
		st->hole_bytes = tail_off - data_off - w->live_bytes;
		st->cpu_s = cpu + (self_cpu_s() - cpu0);
	}
	rc = 0;
out:
	if (rc < 0)
		w->failed = 1;
	if (rc < 0 && !err_isset(&w->err) && e != NULL)
		w->err = *e;
	buf_release(&meta);
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
	st->hashed_only = w->hashed_only;
}

void
img_writer_free(struct img_writer *w)
{
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
	if (w->rfd >= 0)
		close(w->rfd);
	atomic_file_release(&w->out);
	for (k = 0; w->workers != NULL && k < w->nworkers; k++) {
		ZSTD_freeCCtx(w->workers[k].cctx);
		img_hasher_free(w->workers[k].hasher);
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
	free(w->hashes);
	free(w->btab);
	free(w->pack_map);
	free(w->blocks);
	free(w->bfirst);
	free(w->config);
	free(w->tail);
	ZSTD_freeDCtx(w->dctx);
	free(w->zbuf);
	free(w->dbuf);
	free(w);
}
