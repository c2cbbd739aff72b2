/*
 * fuzz_image - libFuzzer target for the image reader (imgread.c).  Opens the
 * input from memory; if it opens, verifies it, reads a few pages and byte
 * ranges of every block, walks every page and reads the device tail.  Any
 * failure must be a clean error with a message; reads of an image that
 * verified must succeed, and img_foreach_page must agree with
 * img_read_page.
 *
 * Every region of the format is under a CRC, which a fuzzer rarely gets
 * right; so each input is tried as it is and again with the CRCs of its
 * header, metadata and index (and with flag 0x4, of its frames and tail)
 * recomputed, to reach the checks behind them.  img_check_frames() must
 * pass whatever img_verify() passes.
 *
 * Seeds: fuzz/corpus/image/, small images written by the writer
 * (build/helper-imgtool seeds DIR), some of them damaged; v2-* are
 * version 2 (build/helper-imgv2tool: standalone of a seed; v2-reverse,
 * split with its frames in reverse order; v2-packs, split naming a pack,
 * which an image read from memory cannot find, so it is refused; those
 * hold SHA-256 hashes); v2-blake3-three-blocks (BLAKE3 hashes, flag 0x10)
 * and v2-holes (flag 0x20: holes in the data region), from the writer of
 * today.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imgcheck.h"
#include "imgfmt.h"
#include "imgread.h"
#include "util.h"

struct mem {
	const uint8_t *p;
	size_t len;
};

static ssize_t
mem_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	const struct mem *m = opaque;

	if (off >= m->len)
		return 0;
	if (len > m->len - off)
		len = (size_t)(m->len - off);
	memcpy(buf, m->p + off, len);
	return (ssize_t)len;
}

struct walk {
	struct img_reader *r;
	uint64_t pages;
	uint64_t zero;
	uint64_t sum;
};

static int
walk_fn(void *opaque, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct walk *w = opaque;

	w->pages++;
	if (data == NULL)
		w->zero++;
	else
		w->sum += crc32c(0, data, STREAM_PAGE_SIZE);
	(void)block;
	(void)offset;
	return 0;
}

static void
fail_if(int cond)
{
	if (cond)
		abort();
}

/* Recompute the CRCs the header covers, where its table is in bounds. */
static void
fix_crcs(uint8_t *p, size_t n)
{
	uint64_t off, len, ioff, ilen, k, foff, fsize, esize;

	if (n < IMG_HDR_SIZE)
		return;
	ioff = get_le64(p + IMG_HDR_INDEX_OFF);
	ilen = get_le64(p + IMG_HDR_INDEX_SIZE);
	/* Version 2 entries are longer; a frame in a pack is not here. */
	esize = get_le32(p + IMG_HDR_VERSION) == IMG_VERSION_2 ?
	    IMG_ENTRY2_SIZE : IMG_ENTRY_SIZE;
	if ((get_le32(p + IMG_HDR_FLAGS) & IMG_F_FRAME_CRCS) && ioff <= n &&
	    ilen <= n - ioff) {
		for (k = ioff + IMG_SKIP_SIZE; k + esize <= ioff + ilen;
		    k += esize) {
			foff = get_le64(p + k + IMG_ENTRY_FRAME_OFF);
			fsize = get_le32(p + k + IMG_ENTRY_FRAME_SIZE);
			if (esize == IMG_ENTRY2_SIZE &&
			    (p[k + IMG_ENTRY_PACK] | p[k + IMG_ENTRY_PACK + 1]))
				continue;
			if (fsize != 0 && foff <= n && fsize <= n - foff)
				put_le32(p + k + IMG_ENTRY_FRAME_CRC,
				    crc32c(0, p + foff, (size_t)fsize));
		}
		off = get_le64(p + IMG_HDR_TAIL_OFF);
		len = get_le64(p + IMG_HDR_TAIL_SIZE);
		if (off <= n && len <= n - off)
			put_le32(p + IMG_HDR_TAIL_CRC, crc32c(0, p + off,
			    (size_t)len));
	}
	off = get_le64(p + IMG_HDR_META_OFF);
	len = get_le64(p + IMG_HDR_META_SIZE);
	if (off <= n && len <= n - off)
		put_le32(p + IMG_HDR_META_CRC, crc32c(0, p + off,
		    (size_t)len));
	off = get_le64(p + IMG_HDR_INDEX_OFF);
	len = get_le64(p + IMG_HDR_INDEX_SIZE);
	if (off <= n && len <= n - off)
		put_le32(p + IMG_HDR_INDEX_CRC, crc32c(0, p + off,
		    (size_t)len));
	put_le32(p + IMG_HDR_CRC, crc32c(0, p, IMG_HDR_CRC));
}

static void
one(const uint8_t *data, size_t size)
{
	struct mem m = { data, size };
	struct img_io io = { mem_pread, 0, NULL };
	struct err e = ERR_INIT;
	struct img_reader *r;
	const struct img_meta *meta;
	enum img_page_state state;
	uint8_t page[STREAM_PAGE_SIZE], range[3 * STREAM_PAGE_SIZE];
	uint8_t *tail = NULL;
	uint64_t len, offs[4];
	size_t b, k, tlen;
	struct walk w = { NULL, 0, 0, 0 };
	int verified;

	io.size = size;
	io.opaque = &m;
	r = img_open_io(&io, &e);
	if (r == NULL) {
		fail_if(e.msg[0] == '\0');
		return;
	}
	meta = img_meta(r);
	verified = img_verify(r, &e) == 0;
	fail_if(!verified && e.msg[0] == '\0');
	err_clear(&e);
	if (img_check_frames(r, NULL, 1, &e) < 0)
		fail_if(verified || e.msg[0] == '\0');
	err_clear(&e);
	for (b = 0; b < meta->nblocks && b < 8; b++) {
		len = meta->blocks[b].used_length;
		if (len == 0)
			continue;
		offs[0] = 0;
		offs[1] = len / 2 / STREAM_PAGE_SIZE * STREAM_PAGE_SIZE;
		offs[2] = len - STREAM_PAGE_SIZE;
		offs[3] = len;		/* past the end: refused */
		for (k = 0; k < 4; k++) {
			int rc = img_read_page(r, (uint32_t)b, offs[k], page,
			    &state, &e);

			fail_if(rc < 0 && e.msg[0] == '\0');
			fail_if(k < 3 && verified && rc < 0);
			fail_if(k == 3 && rc == 0);
			err_clear(&e);
		}
		k = len > sizeof(range) ? sizeof(range) : (size_t)len;
		if (img_read_at(r, (uint32_t)b, (len - k) / 2, k, range, &e)
		    < 0) {
			fail_if(e.msg[0] == '\0' || verified);
			err_clear(&e);
		}
	}
	w.r = r;
	if (img_foreach_page(r, walk_fn, &w, &e) == 0)
		fail_if(w.pages != meta->pages || w.zero != meta->zero_pages);
	else
		fail_if(e.msg[0] == '\0' || verified);
	err_clear(&e);
	if (img_read_tail(r, &tail, &tlen, &e) == 0)
		fail_if(tlen != meta->tail_bytes);
	else
		fail_if(e.msg[0] == '\0' || verified);
	free(tail);
	img_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	one(data, size);
	if (size >= IMG_HDR_SIZE) {
		copy = xmalloc(size);
		memcpy(copy, data, size);
		fix_crcs(copy, size);
		one(copy, size);
		free(copy);
	}
	return 0;
}
