/*
 * imgread.c - the compact memory image's reader (man/snapctl-image.5),
 * versions 1 and 2.  Everything in the file is checked before it is used;
 * the index is held in memory (40 bytes per chunk, and a 32-byte hash in
 * version 2, bounded by the file size), and so are the indexes of the
 * packs its entries name, opened at open; frames are read (from this file
 * or a pack) and decoded one at a time into one chunk buffer, or ahead on
 * threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "imgfmt.h"
#include "imgread.h"
#include "imgread_int.h"
#include "util.h"

#define TAIL_FRAME_MAX	ZSTD_COMPRESSBOUND(STREAM_TAIL_MAX)
#define INDEX_BUF	(1u << 20)	/* the index is read in these */
#define AHEAD_THREADS	4	/* img_foreach_page_parallel()'s default max */
#define AHEAD_SLOTS	4u	/* ... and its decoded chunks per thread */
#define AHEAD_MAX	16	/* ... and its most threads */

static uint16_t
get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int
imgr_pread(const struct img_reader *r, void *buf, size_t len, uint64_t off,
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

	if (get_le32(h + IMG_HDR_SKIP_MAGIC) != IMG_SKIP_HDR ||
	    get_le32(h + IMG_HDR_SKIP_LEN) != IMG_HDR_SIZE - IMG_SKIP_SIZE ||
	    memcmp(h + IMG_HDR_MAGIC, IMG_MAGIC, IMG_MAGIC_LEN) != 0)
		return err_set(e, ERR_FAIL, "not a snapctl image");
	if (get_le32(h + IMG_HDR_CRC) != crc32c(0, h, IMG_HDR_CRC))
		return err_set(e, ERR_FAIL, "header checksum mismatch");
	r->meta.version = get_le32(h + IMG_HDR_VERSION);
	if (r->meta.version != IMG_VERSION && r->meta.version != IMG_VERSION_2)
		return err_set(e, ERR_FAIL, "unsupported image version %u",
		    r->meta.version);
	r->meta.flags = get_le32(h + IMG_HDR_FLAGS);
	if (r->meta.flags & ~(r->meta.version == IMG_VERSION ? IMG_F_ALL :
	    IMG_F_ALL_V2))
		return err_set(e, ERR_FAIL, "unknown image flags 0x%x",
		    r->meta.flags);
	if (r->meta.version == IMG_VERSION_2 &&
	    !(r->meta.flags & IMG_F_FRAME_CRCS))
		return err_set(e, ERR_FAIL, "version 2 image without frame "
		    "CRCs (flag 0x4)");
	if (get_le32(h + IMG_HDR_PAGE_SIZE) != IMG_PAGE_SIZE ||
	    get_le32(h + IMG_HDR_CHUNK_PAGES) != IMG_CHUNK_PAGES)
		return err_set(e, ERR_FAIL, "unsupported page or chunk size");
	/* The tail's CRC field is reserved without frame CRCs. */
	for (i = r->meta.flags & IMG_F_FRAME_CRCS ? IMG_HDR_RESERVED :
	    IMG_HDR_TAIL_CRC; i < IMG_HDR_CRC; i++)
		if (h[i] != 0)
			return err_set(e, ERR_FAIL, "reserved header bytes "
			    "are not zero");
	fsize = get_le64(h + IMG_HDR_FILE_SIZE);
	moff = get_le64(h + IMG_HDR_META_OFF);
	msize = get_le64(h + IMG_HDR_META_SIZE);
	doff = get_le64(h + IMG_HDR_DATA_OFF);
	dsize = get_le64(h + IMG_HDR_DATA_SIZE);
	toff = get_le64(h + IMG_HDR_TAIL_OFF);
	tsize = get_le64(h + IMG_HDR_TAIL_SIZE);
	ioff = get_le64(h + IMG_HDR_INDEX_OFF);
	isize = get_le64(h + IMG_HDR_INDEX_SIZE);
	if (fsize != r->io.size || fsize >= 1ull << 62)
		return err_set(e, ERR_FAIL, "image is %llu bytes, header says "
		    "%llu: truncated or extended",
		    (unsigned long long)r->io.size,
		    (unsigned long long)fsize);
	/* Each region starts where the one before ends; sizes are bounded
	 * by the file, so none of these sums overflows. */
	if (moff != IMG_HDR_SIZE || msize < IMG_SKIP_SIZE +
	    (r->meta.version == IMG_VERSION ? IMG_META_FIXED :
	    IMG_META_FIXED_V2) ||
	    msize > IMG_MAX_META || msize > fsize || doff != moff + msize ||
	    dsize > fsize || toff != doff + dsize || tsize > fsize ||
	    tsize > TAIL_FRAME_MAX || ioff != toff + tsize ||
	    isize < IMG_SKIP_SIZE || isize > fsize || ioff + isize != fsize)
		return err_set(e, ERR_FAIL, "header region table is "
		    "inconsistent with the file");
	r->data_off = doff;
	r->data_size = dsize;
	r->tail_off = toff;
	r->tail_size = tsize;
	r->index_off = ioff;
	r->index_size = isize;
	r->tail_crc = get_le32(h + IMG_HDR_TAIL_CRC);
	r->meta.file_bytes = fsize;
	r->meta.data_bytes = dsize;
	*meta_crc = get_le32(h + IMG_HDR_META_CRC);
	*index_crc = get_le32(h + IMG_HDR_INDEX_CRC);
	*meta_size = msize;
	return 0;
}

void
img_id_hex(const uint8_t id[IMG_ID_SIZE], char out[IMG_ID_HEX])
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < IMG_ID_SIZE; i++) {
		out[2 * i] = hex[id[i] >> 4];
		out[2 * i + 1] = hex[id[i] & 15];
	}
	out[2 * IMG_ID_SIZE] = '\0';
}

static int
all_zero(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

/*
 * The first entry of n equal to an earlier one (by cmp on the entries at
 * base, size bytes apart), as a scan of each against all before it would
 * find it, but in O(n log n): a crafted table of 65535 entries must not
 * cost 2^31 comparisons.  1 with *dup its index, or 0.
 */
struct dup_ctx {
	const uint8_t *base;
	size_t size;
	int (*cmp)(const void *, const void *);
};

static int
dup_order(const void *a, const void *b, void *arg)
{
	const struct dup_ctx *c = arg;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int d = c->cmp(c->base + x * c->size, c->base + y * c->size);

	return d != 0 ? d : (x > y) - (x < y);
}

static int
first_dup(const void *base, size_t n, size_t size,
    int (*cmp)(const void *, const void *), size_t *dup)
{
	struct dup_ctx c = { base, size, cmp };
	size_t *ix, i, best = SIZE_MAX;

	if (n < 2)
		return 0;
	ix = xcalloc(n, sizeof(*ix));
	for (i = 0; i < n; i++)
		ix[i] = i;
	qsort_r(ix, n, sizeof(*ix), dup_order, &c);
	/* Equal entries sort by index: each pair's later one is a dup. */
	for (i = 1; i < n; i++)
		if (cmp(c.base + ix[i - 1] * size, c.base + ix[i] * size) == 0 &&
		    ix[i] < best)
			best = ix[i];
	free(ix);
	*dup = best;
	return best != SIZE_MAX;
}

static int
pack_id_cmp(const void *a, const void *b)
{
	return memcmp(((const struct rpack *)a)->id,
	    ((const struct rpack *)b)->id, IMG_ID_SIZE);
}

static int
block_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct stream_block *)a)->name,
	    ((const struct stream_block *)b)->name);
}

/* Version 2's fixed metadata past the first 64 bytes: id, packs. */
static int
parse_meta_v2(struct img_reader *r, const uint8_t *p, struct err *e)
{
	uint32_t npacks = get_le32(p + IMG_META_NPACKS);

	memcpy(r->meta.id, p + IMG_META_IMAGE_ID, IMG_ID_SIZE);
	if (all_zero(r->meta.id, IMG_ID_SIZE))
		return err_set(e, ERR_FAIL, "image id is all zero");
	if (!all_zero(p + IMG_META_RESERVED_V2, IMG_META_FIXED_V2 -
	    IMG_META_RESERVED_V2))
		return err_set(e, ERR_FAIL, "reserved metadata bytes are not "
		    "zero");
	if (npacks > IMG_MAX_PACKS ||
	    (npacks != 0) != ((r->meta.flags & IMG_F_PACKS) != 0))
		return err_set(e, ERR_FAIL, "bad number of packs %u (flag "
		    "0x8 %s)", npacks, r->meta.flags & IMG_F_PACKS ? "set" :
		    "clear");
	r->meta.npacks = npacks;
	return 0;
}

/* Version 2's pack table, from *pp (after the block table) on. */
static int
parse_packs(struct img_reader *r, const uint8_t **pp, const uint8_t *end,
    struct err *e)
{
	const uint8_t *p = *pp;
	struct rpack *k;
	size_t i, j, nlen;
	char hex[2 * IMG_ID_SIZE + 1];

	if (r->meta.npacks == 0)
		return 0;
	r->packs = xcalloc(r->meta.npacks, sizeof(*r->packs));
	for (i = 0; i < r->meta.npacks; i++) {
		k = &r->packs[i];
		if ((size_t)(end - p) < IMG_PACK_FIXED)
			return err_set(e, ERR_FAIL, "pack table is truncated");
		memcpy(k->id, p + IMG_PACK_ID, IMG_ID_SIZE);
		k->file_size = get_le64(p + IMG_PACK_FILE_SIZE);
		nlen = get_le16(p + IMG_PACK_NAME_LEN);
		if (get_le16(p + IMG_PACK_RESERVED) != 0)
			return err_set(e, ERR_FAIL, "pack %zu: reserved "
			    "fields are not zero", i + 1);
		p += IMG_PACK_FIXED;
		if (nlen > 255 || (size_t)(end - p) < nlen)
			return err_set(e, ERR_FAIL, "pack %zu: bad name",
			    i + 1);
		memcpy(k->hint, p, nlen);
		k->hint[nlen] = '\0';
		p += nlen;
		if (memchr(p - nlen, 0, nlen) != NULL ||
		    memchr(p - nlen, '/', nlen) != NULL ||
		    strcmp(k->hint, ".") == 0 || strcmp(k->hint, "..") == 0)
			return err_set(e, ERR_FAIL, "pack %zu: bad name", i + 1);
		img_id_hex(k->id, hex);
		if (all_zero(k->id, IMG_ID_SIZE) ||
		    memcmp(k->id, r->meta.id, IMG_ID_SIZE) == 0)
			return err_set(e, ERR_FAIL, "pack %zu: bad image id "
			    "%s", i + 1, hex);
		if (k->file_size < IMG_HDR_SIZE || k->file_size >= 1ull << 62)
			return err_set(e, ERR_FAIL, "pack %zu: bad file size "
			    "%llu", i + 1, (unsigned long long)k->file_size);
	}
	if (first_dup(r->packs, r->meta.npacks, sizeof(*r->packs),
	    pack_id_cmp, &j)) {
		img_id_hex(r->packs[j].id, hex);
		return err_set(e, ERR_FAIL, "pack %zu: image %s listed twice",
		    j + 1, hex);
	}
	*pp = p;
	return 0;
}

static int
parse_meta(struct img_reader *r, const uint8_t *m, size_t size,
    uint64_t *chunks, uint64_t *frames, struct err *e)
{
	const uint8_t *p = m + IMG_SKIP_SIZE, *end = m + size;
	uint32_t nblocks, mlen, clen, flags;
	uint64_t ram = 0, n = 0, used;
	size_t i, nlen;
	struct stream_block *b;

	if (get_le32(m) != IMG_SKIP_META ||
	    get_le32(m + 4) != size - IMG_SKIP_SIZE)
		return err_set(e, ERR_FAIL, "metadata frame header is bad");
	r->meta.ram_section_id = get_le32(p + IMG_META_RAM_SECTION);
	nblocks = get_le32(p + IMG_META_NBLOCKS);
	mlen = get_le32(p + IMG_META_MACHINE_LEN);
	clen = get_le32(p + IMG_META_CONFIG_LEN);
	r->meta.ram_bytes = get_le64(p + IMG_META_RAM_BYTES);
	*chunks = get_le64(p + IMG_META_CHUNKS);
	*frames = get_le64(p + IMG_META_FRAMES);
	r->meta.pages = get_le64(p + IMG_META_PAGES);
	r->meta.zero_pages = get_le64(p + IMG_META_ZERO_PAGES);
	r->meta.tail_bytes = get_le64(p + IMG_META_TAIL_LEN);
	if (nblocks > IMG_MAX_BLOCKS || mlen > IMG_MAX_MACHINE ||
	    clen > IMG_MAX_CONFIG || r->meta.tail_bytes > STREAM_TAIL_MAX)
		return err_set(e, ERR_FAIL, "metadata counts out of range");
	if (r->meta.version == IMG_VERSION_2) {
		if (parse_meta_v2(r, p, e) < 0)
			return -1;
		p += IMG_META_FIXED_V2;
	} else
		p += IMG_META_FIXED;
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
		if ((size_t)(end - p) < IMG_BLOCK_FIXED)
			return err_set(e, ERR_FAIL, "block table is "
			    "truncated");
		used = get_le64(p + IMG_BLOCK_USED_LEN);
		b->mr_addr = get_le64(p + IMG_BLOCK_MR_ADDR);
		flags = get_le32(p + IMG_BLOCK_FLAGS);
		nlen = get_le16(p + IMG_BLOCK_NAME_LEN);
		if (get_le16(p + IMG_BLOCK_RESERVED) != 0 ||
		    (flags & ~IMG_BLK_F_MR_ADDR) != 0)
			return err_set(e, ERR_FAIL, "block %zu: reserved "
			    "fields are not zero", i);
		b->has_mr_addr = flags & IMG_BLK_F_MR_ADDR;
		if (!b->has_mr_addr && b->mr_addr != 0)
			return err_set(e, ERR_FAIL, "block %zu: address "
			    "without flag", i);
		if (used % IMG_PAGE_SIZE != 0 || used >= IMG_MAX_USED_LEN)
			return err_set(e, ERR_FAIL, "block %zu: bad used "
			    "length 0x%llx", i, (unsigned long long)used);
		b->used_length = used;
		p += IMG_BLOCK_FIXED;
		if (nlen == 0 || nlen > STREAM_BLOCK_NAME_MAX ||
		    (size_t)(end - p) < nlen)
			return err_set(e, ERR_FAIL, "block %zu: bad name", i);
		if (memchr(p, 0, nlen) != NULL)
			return err_set(e, ERR_FAIL, "block %zu: name holds a "
			    "NUL byte", i);
		memcpy(b->name, p, nlen);
		b->name[nlen] = '\0';
		p += nlen;
		r->bfirst[i] = n;
		n += img_chunks_of(used);
		ram += used;	/* < 65535 * 2^50: no overflow */
	}
	r->bfirst[nblocks] = n;
	if (first_dup(r->blocks, nblocks, sizeof(*r->blocks), block_name_cmp,
	    &i))
		return err_set(e, ERR_FAIL, "block '%s' listed twice",
		    r->blocks[i].name);
	if (parse_packs(r, &p, end, e) < 0)
		return -1;
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

/* qsort() of (frame offset, chunk) pairs by offset. */
static int
off_cmp(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/*
 * The own frames sorted by offset (version 2 writes them in any order)
 * into r->byoff: they must cover the data region exactly, or with flag
 * 0x20 (holes) lie in it without overlap.
 */
static int
sort_frames(struct img_reader *r, struct err *e)
{
	uint64_t *pairs, ci, k = 0, pos = r->data_off;
	int rc = -1;

	pairs = xcalloc(r->nown ? 2 * r->nown : 1, sizeof(*pairs));
	for (ci = 0; ci < r->nchunks; ci++) {
		if (r->idx[ci].size == 0 || r->idx[ci].pack != 0)
			continue;
		pairs[2 * k] = r->idx[ci].off;
		pairs[2 * k + 1] = ci;
		k++;
	}
	if (r->meta.version != IMG_VERSION)
		qsort(pairs, (size_t)r->nown, 2 * sizeof(*pairs), off_cmp);
	r->byoff = xcalloc(r->nown ? r->nown : 1, sizeof(*r->byoff));
	for (k = 0; k < r->nown; k++) {
		ci = pairs[2 * k + 1];
		if (pairs[2 * k] > pos && !(r->meta.flags & IMG_F_HOLES)) {
			err_set(e, ERR_FAIL, "index entry %llu: frame at 0x%llx "
			    "leaves a gap in the data region at 0x%llx",
			    (unsigned long long)ci,
			    (unsigned long long)pairs[2 * k],
			    (unsigned long long)pos);
			goto out;
		}
		if (pairs[2 * k] < pos) {
			err_set(e, ERR_FAIL, "index entry %llu: frame at 0x%llx "
			    "overlaps the one before it, which ends at 0x%llx",
			    (unsigned long long)ci,
			    (unsigned long long)pairs[2 * k],
			    (unsigned long long)pos);
			goto out;
		}
		pos = pairs[2 * k] + r->idx[ci].size;
		r->byoff[k] = ci;
	}
	if (r->meta.flags & IMG_F_HOLES ? pos > r->tail_off :
	    pos != r->tail_off) {
		err_set(e, ERR_FAIL, "frames do not fill the data region");
		goto out;
	}
	rc = 0;
out:
	free(pairs);
	return rc;
}

/* Check entry ci of version 2 beyond what version 1 checks, at p. */
static int
entry_v2(struct img_reader *r, uint64_t ci, const uint8_t *p, uint64_t data,
    struct err *e)
{
	struct rentry *x = &r->idx[ci];
	const uint8_t *hash = p + IMG_ENTRY_HASH;

	x->pack = get_le16(p + IMG_ENTRY_PACK);
	if (!all_zero(p + IMG_ENTRY_RESERVED2, IMG_ENTRY_HASH -
	    IMG_ENTRY_RESERVED2) || !all_zero(p + IMG_ENTRY_RESERVED3,
	    IMG_ENTRY2_SIZE - IMG_ENTRY_RESERVED3))
		return err_set(e, ERR_FAIL, "index entry %llu: reserved "
		    "bytes are not zero", (unsigned long long)ci);
	if (data == 0 && (x->pack != 0 || !all_zero(hash, IMG_HASH_SIZE)))
		return err_set(e, ERR_FAIL, "index entry %llu: pack or hash "
		    "without a frame", (unsigned long long)ci);
	if (x->pack > r->meta.npacks)
		return err_set(e, ERR_FAIL, "index entry %llu: pack %u is not "
		    "in the pack table (%zu)", (unsigned long long)ci, x->pack,
		    r->meta.npacks);
	memcpy(r->hashes + ci * IMG_HASH_SIZE, hash, IMG_HASH_SIZE);
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
	size_t step, k, esize;
	struct rentry *x;
	int v2 = r->meta.version != IMG_VERSION, rc = -1;

	esize = v2 ? IMG_ENTRY2_SIZE : IMG_ENTRY_SIZE;
	if ((r->index_size - IMG_SKIP_SIZE) / esize != r->nchunks ||
	    (r->index_size - IMG_SKIP_SIZE) % esize != 0) {
		err_set(e, ERR_FAIL, "index size does not match %llu chunks",
		    (unsigned long long)r->nchunks);
		goto out;
	}
	/* The index's size is checked against the file: small for small
	 * files, as a fuzzer's are. */
	buf = xmalloc(r->index_size < INDEX_BUF ? (size_t)r->index_size :
	    INDEX_BUF);
	if (imgr_pread(r, buf, IMG_SKIP_SIZE, r->index_off, "index", e) < 0)
		goto out;
	if (get_le32(buf) != IMG_SKIP_INDEX ||
	    get_le32(buf + 4) != r->index_size - IMG_SKIP_SIZE) {
		err_set(e, ERR_FAIL, "index frame header is bad");
		goto out;
	}
	crc = crc32c(0, buf, IMG_SKIP_SIZE);
	r->idx = xcalloc(r->nchunks ? r->nchunks : 1, sizeof(*r->idx));
	if (v2)
		r->hashes = xcalloc(r->nchunks ? r->nchunks : 1,
		    IMG_HASH_SIZE);
	pos = r->data_off;
	ci = 0;
	off = r->index_off + IMG_SKIP_SIZE;
	left = r->index_size - IMG_SKIP_SIZE;
	while (left > 0) {
		step = left < INDEX_BUF ? (size_t)left : INDEX_BUF / esize *
		    esize;
		if (imgr_pread(r, buf, step, off + done, "index", e) < 0)
			goto out;
		crc = crc32c(crc, buf, step);
		for (k = 0; k < step; k += esize, ci++) {
			p = buf + k;
			x = &r->idx[ci];
			while (ci >= r->bfirst[b + 1])
				b++;
			used = r->blocks[b].used_length;
			valid = img_valid_mask(used, ci - r->bfirst[b]);
			x->off = get_le64(p + IMG_ENTRY_FRAME_OFF);
			x->size = get_le32(p + IMG_ENTRY_FRAME_SIZE);
			x->present = get_le64(p + IMG_ENTRY_PRESENT);
			x->zero = get_le64(p + IMG_ENTRY_ZERO);
			x->block = b;
			x->crc = get_le32(p + IMG_ENTRY_FRAME_CRC);
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
			if (v2 && entry_v2(r, ci, p, data, e) < 0)
				goto out;
			/* Version 1: frames back to back in index order;
			 * version 2: in the data region, or in a pack. */
			if (data == 0 ? x->off != 0 || x->size != 0 :
			    x->size == 0 || x->size > IMG_FRAME_MAX ||
			    (x->pack != 0 ? x->off < IMG_HDR_SIZE ||
			    x->size > r->packs[x->pack - 1].file_size ||
			    x->off > r->packs[x->pack - 1].file_size -
			    x->size :
			    (v2 ? x->off < r->data_off : x->off != pos) ||
			    x->off > r->tail_off ||
			    x->size > r->tail_off - x->off)) {
				err_set(e, ERR_FAIL, "index entry %llu: bad "
				    "frame position", (unsigned long long)ci);
				goto out;
			}
			if (data != 0 && x->pack == 0) {
				pos += x->size;
				r->nown++;
				r->meta.own_bytes += x->size;
			} else if (data != 0) {
				r->packs[x->pack - 1].refs++;
				r->meta.shared_chunks++;
				r->meta.shared_bytes += x->size;
			}
			nframes += data != 0;
			pages += img_mask_count(x->present);
			zero += img_mask_count(x->zero);
		}
		done += step;
		left -= step;
	}
	if (crc != want_crc) {
		err_set(e, ERR_FAIL, "index checksum mismatch");
		goto out;
	}
	if (sort_frames(r, e) < 0)
		goto out;
	if (nframes != frames || pages != r->meta.pages ||
	    zero != r->meta.zero_pages) {
		err_set(e, ERR_FAIL, "index totals do not match the "
		    "metadata");
		goto out;
	}
	r->meta.chunks = nframes;
	if (!v2)
		r->meta.own_bytes = 0;	/* version 2 fields only */
	else
		r->meta.data_bytes = r->meta.own_bytes;	/* holes aside */
	rc = 0;
out:
	free(buf);
	return rc;
}

/* Open and check header, metadata and index; packs are not looked at. */
static struct img_reader *
open_io(const struct img_io *io, struct err *e)
{
	struct img_reader *r = xcalloc(1, sizeof(*r));
	uint8_t hdr[IMG_HDR_SIZE], *m = NULL;
	uint32_t meta_crc = 0, index_crc = 0;
	uint64_t msize = 0, chunks = 0, frames = 0;

	r->io = *io;
	r->fd = -1;
	r->cached = UINT64_MAX;
	if (io->size < IMG_HDR_SIZE) {
		err_set(e, ERR_FAIL, "not a snapctl image (%llu bytes)",
		    (unsigned long long)io->size);
		goto fail;
	}
	if (imgr_pread(r, hdr, IMG_HDR_SIZE, 0, "header", e) < 0 ||
	    check_header(r, hdr, &meta_crc, &index_crc, &msize, e) < 0)
		goto fail;
	m = xmalloc((size_t)msize);
	if (imgr_pread(r, m, (size_t)msize, IMG_HDR_SIZE, "metadata", e) < 0)
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
	if (r->meta.version != IMG_VERSION && (r->hasher =
	    img_hasher_new(img_hash_algo_of(r->meta.flags))) == NULL) {
		err_set(e, ERR_FAIL, "cannot create a %s hasher",
		    img_hash_name(img_hash_algo_of(r->meta.flags)));
		goto fail;
	}
	r->zbuf = xmalloc(IMG_FRAME_MAX);
	r->cbuf = xmalloc(IMG_CHUNK_BYTES);
	free(m);
	return r;
fail:
	free(m);
	img_close(r);
	return NULL;
}

struct img_reader *
img_open_io(const struct img_io *io, struct err *e)
{
	struct img_reader *r = open_io(io, e);
	uint32_t p;

	if (r == NULL)
		return NULL;
	for (p = 1; p <= r->meta.npacks; p++) {
		if (r->packs[p - 1].refs != 0) {
			err_set(e, ERR_FAIL, "image names pack %u '%s': it is "
			    "found beside a file, not in memory", p,
			    r->packs[p - 1].hint);
			img_close(r);
			return NULL;
		}
	}
	return r;
}

static ssize_t
fd_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	return pread_full(*(int *)opaque, buf, len, (off_t)off);
}

/* open_io() on fd, which the reader takes (closed on failure too). */
static struct img_reader *
open_fd(int fd, const char *path, int prefix, struct err *e)
{
	struct img_reader *r = NULL;
	struct img_io io;
	struct stat st;

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
	r = open_io(&io, e);
	if (r == NULL) {
		if (prefix)
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

void
imgr_pack_prefix(const struct img_reader *r, uint64_t ci, struct err *e)
{
	const struct rpack *k;
	char hex[2 * IMG_ID_SIZE + 1];

	if (r->idx[ci].pack == 0)
		return;
	k = &r->packs[r->idx[ci].pack - 1];
	img_id_hex(k->id, hex);
	err_prefix(e, "pack %u '%s' (image %s): ", r->idx[ci].pack, k->hint,
	    hex);
}

const struct img_reader *
imgr_frame_home(const struct img_reader *r, uint64_t ci)
{
	return r->idx[ci].pack == 0 ? r : r->packs[r->idx[ci].pack - 1].r;
}

/* The chunk of pack reader pr whose own frame starts at off, or -1. */
static int64_t
own_frame_at(const struct img_reader *pr, uint64_t off)
{
	uint64_t lo = 0, hi = pr->nown, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (pr->idx[pr->byoff[mid]].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < pr->nown && pr->idx[pr->byoff[lo]].off == off)
		return (int64_t)pr->byoff[lo];
	return -1;
}

/*
 * Find, open and check pack p: its own header, metadata and index, its id
 * and size (refs_check() then checks what r's entries name in it).
 */
static int
open_pack(struct img_reader *r, const char *path, uint32_t p, struct err *e)
{
	struct rpack *k = &r->packs[p - 1];
	struct img_reader *pr;
	char hex[2 * IMG_ID_SIZE + 1];
	int fd;

	img_id_hex(k->id, hex);
	fd = r->finder.open != NULL ? r->finder.open(r->finder.opaque, path,
	    k->id, k->file_size, k->hint, e) :
	    img_pack_find_beside(NULL, path, k->id, k->file_size, k->hint, e);
	if (fd < 0)
		return -1;	/* the finder names hint and id */
	if ((k->r = pr = open_fd(fd, k->hint, 0, e)) == NULL)
		goto fail;
	if (pr->meta.version != IMG_VERSION_2 ||
	    memcmp(pr->meta.id, k->id, IMG_ID_SIZE) != 0) {
		err_set(e, ERR_FAIL, "the file found is another image");
		goto fail;
	}
	if (pr->meta.file_bytes != k->file_size) {
		err_set(e, ERR_FAIL, "the file found is %llu bytes, not %llu",
		    (unsigned long long)pr->meta.file_bytes,
		    (unsigned long long)k->file_size);
		goto fail;
	}
	if ((pr->meta.flags ^ r->meta.flags) & IMG_F_BLAKE3) {
		err_set(e, ERR_FAIL, "its chunk hashes are %s, the image's %s",
		    img_hash_name(img_hash_algo_of(pr->meta.flags)),
		    img_hash_name(img_hash_algo_of(r->meta.flags)));
		goto fail;
	}
	return 0;
fail:
	err_prefix(e, "pack %u '%s' (image %s): ", p, k->hint, hex);
	return -1;
}

/*
 * Every entry of r naming a pack names one of the pack's own frames with
 * the same size, CRC and hash (one hop); one pass, whatever the number of
 * packs.
 */
static int
refs_check(struct img_reader *r, struct err *e)
{
	const struct rentry *x, *y;
	const struct img_reader *pr;
	char hex[2 * IMG_ID_SIZE + 1];
	int64_t pc;
	uint64_t ci;

	for (ci = 0; ci < r->nchunks; ci++) {
		x = &r->idx[ci];
		if (x->pack == 0)
			continue;
		pr = r->packs[x->pack - 1].r;
		if ((pc = own_frame_at(pr, x->off)) < 0) {
			err_set(e, ERR_FAIL, "no frame of its own at 0x%llx "
			    "(a reference is one hop)",
			    (unsigned long long)x->off);
			goto chunk;
		}
		y = &pr->idx[pc];
		if (y->size != x->size || y->crc != x->crc ||
		    memcmp(pr->hashes + (uint64_t)pc * IMG_HASH_SIZE,
		    r->hashes + ci * IMG_HASH_SIZE, IMG_HASH_SIZE) != 0) {
			err_set(e, ERR_FAIL, "its frame at 0x%llx differs in "
			    "size, CRC or hash", (unsigned long long)x->off);
			goto chunk;
		}
	}
	return 0;
chunk:
	img_id_hex(r->packs[x->pack - 1].id, hex);
	err_prefix(e, "pack %u '%s' (image %s): ", x->pack,
	    r->packs[x->pack - 1].hint, hex);
	imgr_chunk_prefix(r, ci, e);
	return -1;
}

struct img_reader *
img_open_finder(const char *path, const struct img_pack_finder *finder,
    struct err *e)
{
	struct img_reader *r;
	uint32_t p;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err_sys(e, ERR_FAIL, "cannot open '%s'", path);
		return NULL;
	}
	if ((r = open_fd(fd, path, 1, e)) == NULL)
		return NULL;
	if (finder != NULL)
		r->finder = *finder;
	for (p = 1; p <= r->meta.npacks; p++) {
		if (r->packs[p - 1].refs != 0 && open_pack(r, path, p, e) < 0)
			goto fail;
	}
	if (r->meta.npacks > 0 && refs_check(r, e) < 0)
		goto fail;
	return r;
fail:
	err_prefix(e, "'%s': ", path);
	img_close(r);
	return NULL;
}

struct img_reader *
img_open(const char *path, struct err *e)
{
	return img_open_finder(path, NULL, e);
}

const struct img_meta *
img_meta(const struct img_reader *r)
{
	return &r->meta;
}

int
img_find_block(const struct img_meta *m, const char *name, uint32_t *index)
{
	size_t i;

	for (i = 0; i < m->nblocks; i++) {
		if (strcmp(m->blocks[i].name, name) == 0) {
			*index = (uint32_t)i;
			return 0;
		}
	}
	return -1;
}

int
imgr_frame_sane(const struct img_reader *r, const uint8_t *zbuf, size_t size,
    size_t want, uint32_t crc, struct err *e)
{
	unsigned long long csize;
	size_t n;

	if ((r->meta.flags & IMG_F_FRAME_CRCS) && crc32c(0, zbuf, size) != crc)
		return err_set(e, ERR_FAIL, "frame CRC-32C mismatch");
	if (size < 6 || get_le32(zbuf) != IMG_ZSTD_MAGIC)
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

int
imgr_frame_check(const struct img_reader *r, uint64_t off, size_t size,
    uint8_t *zbuf, size_t want, uint32_t crc, struct err *e)
{
	if (imgr_pread(r, zbuf, size, off, "frame", e) < 0)
		return -1;
	return imgr_frame_sane(r, zbuf, size, want, crc, e);
}

void
imgr_chunk_prefix(const struct img_reader *r, uint64_t ci, struct err *e)
{
	const struct rentry *x = &r->idx[ci];

	err_prefix(e, "chunk %llu (block '%s' offset 0x%llx): ",
	    (unsigned long long)ci, r->blocks[x->block].name,
	    (unsigned long long)((ci - r->bfirst[x->block]) * IMG_CHUNK_BYTES));
}

/* Decode a frame checked by imgr_frame_check() into out (want bytes). */
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
 * Read, check and decode chunk ci's frame (from r's file or its pack)
 * into out with dctx, zbuf (IMG_FRAME_MAX) and h; a frame from a pack,
 * or any version 2 frame with hash_all, is checked against the entry's
 * hash too.  Only reads r: threads with a dctx, zbuf and h each may share
 * it (with a thread-safe io).
 */
static int
chunk_decode(const struct img_reader *r, ZSTD_DCtx *dctx, uint8_t *zbuf,
    struct img_hasher *h, uint64_t ci, uint8_t *out, int hash_all,
    struct err *e)
{
	const struct rentry *x = &r->idx[ci];
	uint64_t data = x->present & ~x->zero;
	size_t want = (size_t)img_mask_count(data) * IMG_PAGE_SIZE;
	uint8_t got[IMG_HASH_SIZE];

	if (imgr_frame_check(imgr_frame_home(r, ci), x->off, x->size, zbuf,
	    want, x->crc, e) < 0 ||
	    frame_decode(dctx, zbuf, x->size, out, want, e) < 0)
		goto fail;
	if (r->hashes != NULL && (x->pack != 0 || hash_all)) {
		if (h == NULL || img_hash_chunk(h, data, out, want, got) < 0) {
			err_set(e, ERR_FAIL, "cannot hash the chunk");
			goto fail;
		}
		if (memcmp(got, r->hashes + ci * IMG_HASH_SIZE,
		    IMG_HASH_SIZE) != 0) {
			err_set(e, ERR_FAIL, "frame content does not match "
			    "its hash (%s)",
			    img_hash_name(img_hash_algo_of(r->meta.flags)));
			goto fail;
		}
	}
	return 0;
fail:
	imgr_pack_prefix(r, ci, e);
	imgr_chunk_prefix(r, ci, e);
	return -1;
}

int
imgr_load_chunk(struct img_reader *r, uint64_t ci, struct err *e)
{
	struct rentry *x = &r->idx[ci];

	if (r->cached == ci || (x->present & ~x->zero) == 0)
		return 0;
	r->cached = UINT64_MAX;
	if (chunk_decode(r, r->dctx, r->zbuf, r->hasher, ci, r->cbuf, 0, e)
	    < 0)
		return -1;
	r->cached = ci;
	return 0;
}

int
imgr_verify_chunk(struct img_reader *r, uint64_t ci, struct err *e)
{
	struct rentry *x = &r->idx[ci];

	r->cached = UINT64_MAX;
	if ((x->present & ~x->zero) == 0)
		return 0;
	if (chunk_decode(r, r->dctx, r->zbuf, r->hasher, ci, r->cbuf, 1, e)
	    < 0)
		return -1;
	r->cached = ci;
	return 0;
}

uint64_t
img_nchunks(const struct img_reader *r)
{
	return r->nchunks;
}

void
img_chunk_ref(const struct img_reader *r, uint64_t ci,
    struct img_chunk_ref *out)
{
	const struct rentry *x;

	memset(out, 0, sizeof(*out));
	if (ci >= r->nchunks)
		return;
	x = &r->idx[ci];
	out->present = x->present;
	out->zero = x->zero;
	out->off = x->off;
	out->size = x->size;
	out->crc = x->crc;
	out->pack = x->pack;
	if (r->hashes != NULL && x->size != 0) {
		out->has_hash = 1;
		memcpy(out->hash, r->hashes + ci * IMG_HASH_SIZE,
		    IMG_HASH_SIZE);
	}
}

void
img_pack_info(const struct img_reader *r, uint32_t p,
    struct img_pack_info *out)
{
	const struct rpack *k;

	memset(out, 0, sizeof(*out));
	if (p == 0 || p > r->meta.npacks)
		return;
	k = &r->packs[p - 1];
	memcpy(out->id, k->id, IMG_ID_SIZE);
	out->file_size = k->file_size;
	memcpy(out->hint, k->hint, sizeof(out->hint));
	out->refs = k->refs;
}

int
img_read_frame(struct img_reader *r, uint64_t ci, uint8_t *buf,
    uint32_t *size, struct err *e)
{
	const struct rentry *x;

	*size = 0;
	if (ci >= r->nchunks)
		return err_set(e, ERR_FAIL, "no chunk %llu in the image",
		    (unsigned long long)ci);
	x = &r->idx[ci];
	if (x->size == 0)
		return 0;
	if (x->pack != 0) {
		/* Another image's frame: its hash must be this entry's
		 * (decoded and hashed, as a read through the pack is). */
		r->cached = UINT64_MAX;
		if (chunk_decode(r, r->dctx, buf, r->hasher, ci, r->cbuf, 0,
		    e) < 0)
			return -1;
		r->cached = ci;
		*size = x->size;
		return 0;
	}
	if (imgr_frame_check(imgr_frame_home(r, ci), x->off, x->size, buf,
	    (size_t)img_mask_count(x->present & ~x->zero) * IMG_PAGE_SIZE,
	    x->crc, e) < 0) {
		imgr_pack_prefix(r, ci, e);
		imgr_chunk_prefix(r, ci, e);
		return -1;
	}
	*size = x->size;
	return 0;
}

int
img_read_chunk(struct img_reader *r, uint64_t ci, uint8_t *out,
    uint64_t *datamask, struct err *e)
{
	const struct rentry *x;

	*datamask = 0;
	if (ci >= r->nchunks)
		return err_set(e, ERR_FAIL, "no chunk %llu in the image",
		    (unsigned long long)ci);
	x = &r->idx[ci];
	*datamask = x->present & ~x->zero;
	if (*datamask == 0)
		return 0;
	if (imgr_load_chunk(r, ci, e) < 0)
		return -1;
	memcpy(out, r->cbuf, (size_t)img_mask_count(*datamask) *
	    IMG_PAGE_SIZE);
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
	if (imgr_load_chunk(r, ci, e) < 0)
		return -1;
	*data = r->cbuf + (size_t)img_mask_count(dmask & (bit - 1)) *
	    IMG_PAGE_SIZE;
	return 0;
}

int
img_read_page(struct img_reader *r, uint32_t block, uint64_t offset,
    uint8_t *out, enum img_page_state *state, struct err *e)
{
	const uint8_t *data;

	if (locate(r, block, offset, IMG_PAGE_SIZE, e) < 0)
		return -1;
	if (offset % IMG_PAGE_SIZE != 0)
		return err_set(e, ERR_FAIL, "offset 0x%llx is not page "
		    "aligned", (unsigned long long)offset);
	if (page_get(r, r->bfirst[block] + offset / IMG_CHUNK_BYTES,
	    (unsigned)(offset % IMG_CHUNK_BYTES / IMG_PAGE_SIZE), state, &data,
	    e) < 0)
		return -1;
	if (data != NULL)
		memcpy(out, data, IMG_PAGE_SIZE);
	else
		memset(out, 0, IMG_PAGE_SIZE);
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
		in = offset % IMG_PAGE_SIZE;
		n = IMG_PAGE_SIZE - in < len ? (size_t)(IMG_PAGE_SIZE - in) :
		    len;
		if (page_get(r, r->bfirst[block] + offset / IMG_CHUNK_BYTES,
		    (unsigned)(offset % IMG_CHUNK_BYTES / IMG_PAGE_SIZE),
		    &state, &data, e) < 0)
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

	base = (ci - r->bfirst[b]) * IMG_CHUNK_BYTES;
	for (m = x->present; m != 0; m &= m - 1) {
		i = (unsigned)__builtin_ctzll(m);
		rank = img_mask_count(dmask & ((1ull << i) - 1));
		if (fn(opaque, b, base + (uint64_t)i * IMG_PAGE_SIZE,
		    (x->zero >> i) & 1 ? NULL : data + (size_t)rank *
		    IMG_PAGE_SIZE, e) < 0)
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
			if (imgr_load_chunk(r, ci, e) < 0 ||
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
	uint8_t *buf;		/* IMG_CHUNK_BYTES */
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
	uint8_t *zbuf;		/* IMG_FRAME_MAX */
	struct img_hasher *h;	/* version 2 */
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
ahead_fill(struct ahead *a, ZSTD_DCtx *dctx, uint8_t *zbuf,
    struct img_hasher *h, uint64_t ci, uint64_t seq)
{
	/* The slot's last chunk, seq - nslots, was consumed. */
	struct ahead_slot *sl = &a->slots[seq % a->nslots];
	struct err err = ERR_INIT;
	int rc;

	pthread_mutex_unlock(&a->mu);
	rc = chunk_decode(a->r, dctx, zbuf, h, ci, sl->buf, 0, &err);
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
		ahead_fill(a, wk->dctx, wk->zbuf, wk->h, ci, seq);
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
			ahead_fill(a, r->dctx, r->zbuf, r->hasher, ci, s);
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
		a.slots[k].buf = xmalloc(IMG_CHUNK_BYTES);
	wk = xcalloc((size_t)nworkers, sizeof(*wk));
	for (i = 0; i < nworkers; i++) {
		wk[i].a = &a;
		wk[i].zbuf = xmalloc(IMG_FRAME_MAX);
		if ((wk[i].dctx = ZSTD_createDCtx()) == NULL) {
			err_set(e, ERR_FAIL, "zstd: cannot create a context");
			goto out;
		}
		if (r->hashes != NULL && (wk[i].h =
		    img_hasher_new(img_hash_algo_of(r->meta.flags))) == NULL) {
			err_set(e, ERR_FAIL, "cannot create a hasher");
			goto out;
		}
	}
	r->cached = UINT64_MAX;		/* the caller decodes with r's */
	pthread_mutex_init(&a.mu, NULL);
	pthread_cond_init(&a.cv_full, NULL);
	pthread_cond_init(&a.cv_free, NULL);
	/* Workers block every signal: the caller's writes see SIGINT.  One
	 * that cannot start leaves its share to the others. */
	for (i = 0; i < nworkers; i++) {
		if (thread_start(&wk[i].thread, ahead_main, &wk[i],
		    "decoding ahead", NULL) < 0)
			break;
		started++;
	}

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
		img_hasher_free(wk[i].h);
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
	if (imgr_frame_check(r, r->tail_off, (size_t)r->tail_size, z, tlen,
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

void
img_close(struct img_reader *r)
{
	size_t i;

	if (r == NULL)
		return;
	if (r->fd >= 0)
		close(r->fd);
	ZSTD_freeDCtx(r->dctx);
	free(r->zbuf);
	free(r->cbuf);
	free(r->idx);
	free(r->hashes);
	free(r->byoff);
	for (i = 0; i < r->meta.npacks && r->packs != NULL; i++)
		img_close(r->packs[i].r);
	free(r->packs);
	img_hasher_free(r->hasher);
	free(r->blocks);
	free(r->bfirst);
	free(r->config);
	free(r);
}
