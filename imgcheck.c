/*
 * imgcheck.c - checks of a whole compact memory image: every frame
 * decoded (img_verify, and on threads img_verify_parallel), or every
 * frame's CRC and header at the speed of reading (img_check_frames).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgcheck.h"
#include "imgfmt.h"
#include "imgread_int.h"
#include "util.h"

#define CHECK_BUF	(1u << 19)	/* img_check_frames()'s reads */
#define CHECK_SHARE	(4u << 20)	/* data bytes worth a thread there */
_Static_assert(CHECK_BUF >= IMG_FRAME_MAX, "a frame fits "
    "img_check_frames()'s buffer");

/* Decode and check chunks [first, end). */
static int
verify_chunks(struct img_reader *r, uint64_t first, uint64_t end,
    struct err *e)
{
	uint64_t ci;

	for (ci = first; ci < end; ci++)
		if (imgr_verify_chunk(r, ci, e) < 0)
			return -1;
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
	int k, started = 0;

	for (k = 1; k < n; k++) {
		if (thread_start(&v[k].thread, chunk_part_main, &v[k],
		    "checking chunks", NULL) < 0)
			break;
		started = k;
	}
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
		v[k].r = k == 0 ? r : img_open_finder(path,
		    r->finder.open != NULL ? &r->finder : NULL, e);
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
 * img_check_frames() on r's own frames [first, end) in file order
 * (r->byoff): each frame's CRC and header, read in large sequential
 * reads; a frame that runs past the end of the buffer moves to its front
 * before the next read.  Only reads r.
 */
static int
check_chunks(struct img_reader *r, uint64_t first, uint64_t end,
    struct err *e)
{
	const struct rentry *x;
	uint8_t *buf = NULL;
	uint64_t k, ci, bpos = 0, have = 0, stop, keep, n;
	int rc = -1;

	if (first >= end)
		return 0;
	x = &r->idx[r->byoff[end - 1]];
	stop = x->off + x->size;
	buf = xmalloc(CHECK_BUF);
	for (k = first; k < end; k++) {
		ci = r->byoff[k];
		x = &r->idx[ci];
		/* Frames are back to back, or with holes (flag 0x20) x may
		 * start past what the buffer holds. */
		if (have == 0 || x->off + x->size > bpos + have) {
			keep = have == 0 || x->off >= bpos + have ? 0 :
			    bpos + have - x->off;
			memmove(buf, buf + (have - keep), (size_t)keep);
			bpos = x->off;
			n = stop - bpos - keep;
			if (n > CHECK_BUF - keep)
				n = CHECK_BUF - keep;
			if (imgr_pread(r, buf + keep, (size_t)n, bpos + keep,
			    "frame", e) < 0) {
				imgr_chunk_prefix(r, ci, e);
				goto out;
			}
			have = keep + n;
		}
		if (imgr_frame_sane(r, buf + (x->off - bpos), x->size,
		    (size_t)img_mask_count(x->present & ~x->zero) *
		    IMG_PAGE_SIZE, x->crc, e) < 0) {
			imgr_chunk_prefix(r, ci, e);
			goto out;
		}
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

/* The frames r's entries take from packs: CRC and header each. */
static int
check_pack_frames(struct img_reader *r, struct err *e)
{
	const struct rentry *x;
	uint8_t *z = NULL;
	uint64_t ci;
	int rc = -1;

	if (r->meta.shared_chunks == 0)
		return 0;
	z = xmalloc(IMG_FRAME_MAX);
	for (ci = 0; ci < r->nchunks; ci++) {
		x = &r->idx[ci];
		if (x->pack == 0 || x->size == 0)
			continue;
		if (imgr_frame_check(imgr_frame_home(r, ci), x->off, x->size,
		    z, (size_t)img_mask_count(x->present & ~x->zero) *
		    IMG_PAGE_SIZE, x->crc, e) < 0) {
			imgr_pack_prefix(r, ci, e);
			imgr_chunk_prefix(r, ci, e);
			goto out;
		}
	}
	rc = 0;
out:
	free(z);
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
	/* Shares are ranges of r->byoff, the own frames in file order. */
	v[nthreads - 1].end = r->nown;
	for (ci = 0, k = 1; ci < r->nown && k < nthreads; ci++) {
		x = &r->idx[r->byoff[ci]];
		while (k < nthreads &&
		    x->off - r->data_off >= share * (uint64_t)k) {
			v[k - 1].end = v[k].first = ci;
			k++;
		}
	}
	for (; k < nthreads; k++)
		v[k - 1].end = v[k].first = r->nown;

	if (chunk_parts_run(v, nthreads, e) < 0)
		goto out;
	if (check_pack_frames(r, e) < 0)
		goto out;
	z = xmalloc((size_t)r->tail_size);
	if (imgr_frame_check(r, r->tail_off, (size_t)r->tail_size, z,
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
