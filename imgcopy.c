/*
 * imgcopy.c - img_write_standalone(): a self-contained version 2 copy of
 * an image, its frames (wherever they live) copied, not recompressed, in
 * index order, with a new random id and no packs; written beside its
 * path and renamed into place (atomic_file).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "imgfmt.h"
#include "imghash.h"
#include "imgread.h"
#include "imgread_int.h"
#include "sig.h"
#include "util.h"

#include "banned.h"

static void
put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* 16 random bytes, not all zero. */
static int
new_id(uint8_t id[IMG_ID_SIZE], struct err *e)
{
	size_t i;
	ssize_t n;

	for (;;) {
		n = getrandom(id, IMG_ID_SIZE, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)IMG_ID_SIZE)
			return err_sys(e, ERR_FAIL, "getrandom");
		for (i = 0; i < IMG_ID_SIZE; i++)
			if (id[i] != 0)
				return 0;
	}
}

/* The metadata region of the copy: r's, version 2, without packs. */
static uint8_t *
meta_build(const struct img_reader *r, const uint8_t id[IMG_ID_SIZE],
    size_t *size)
{
	const struct img_meta *m = &r->meta;
	size_t n = IMG_SKIP_SIZE + IMG_META_FIXED_V2 + strlen(m->machine) +
	    m->config_len, i, nlen;
	uint8_t *buf, *p;

	for (i = 0; i < m->nblocks; i++)
		n += IMG_BLOCK_FIXED + strlen(m->blocks[i].name);
	buf = xcalloc(1, n);
	put_le32(buf, IMG_SKIP_META);
	put_le32(buf + 4, (uint32_t)(n - IMG_SKIP_SIZE));
	p = buf + IMG_SKIP_SIZE;
	put_le32(p + IMG_META_RAM_SECTION, m->ram_section_id);
	put_le32(p + IMG_META_NBLOCKS, (uint32_t)m->nblocks);
	put_le32(p + IMG_META_MACHINE_LEN, (uint32_t)strlen(m->machine));
	put_le32(p + IMG_META_CONFIG_LEN, (uint32_t)m->config_len);
	put_le64(p + IMG_META_RAM_BYTES, m->ram_bytes);
	put_le64(p + IMG_META_CHUNKS, r->nchunks);
	put_le64(p + IMG_META_FRAMES, m->chunks);
	put_le64(p + IMG_META_PAGES, m->pages);
	put_le64(p + IMG_META_ZERO_PAGES, m->zero_pages);
	put_le64(p + IMG_META_TAIL_LEN, m->tail_bytes);
	memcpy(p + IMG_META_IMAGE_ID, id, IMG_ID_SIZE);
	p += IMG_META_FIXED_V2;
	memcpy(p, m->machine, strlen(m->machine));
	p += strlen(m->machine);
	if (m->config_len)
		memcpy(p, m->config, m->config_len);
	p += m->config_len;
	for (i = 0; i < m->nblocks; i++) {
		nlen = strlen(m->blocks[i].name);
		put_le64(p + IMG_BLOCK_USED_LEN, m->blocks[i].used_length);
		put_le64(p + IMG_BLOCK_MR_ADDR, m->blocks[i].mr_addr);
		put_le32(p + IMG_BLOCK_FLAGS, m->blocks[i].has_mr_addr ?
		    IMG_BLK_F_MR_ADDR : 0);
		put_le16(p + IMG_BLOCK_NAME_LEN, (uint16_t)nlen);
		p += IMG_BLOCK_FIXED;
		memcpy(p, m->blocks[i].name, nlen);
		p += nlen;
	}
	*size = n;
	return buf;
}

/*
 * Append every frame in index order at *pos, filling the index entries
 * (idx, 80 bytes per chunk): offsets in the copy, CRCs, hashes (computed
 * from the decoded chunk, in BLAKE3, when r has none: version 1).
 */
static int
copy_frames(struct img_reader *r, int fd, uint64_t *pos, uint8_t *idx,
    struct err *e)
{
	struct img_hasher *h = NULL;
	struct img_chunk_ref ref;
	uint8_t *frame = xmalloc(IMG_FRAME_MAX), *chunk = NULL, *x;
	uint64_t ci, dm;
	uint32_t size;
	int rc = -1;

	for (ci = 0; ci < r->nchunks; ci++) {
		if (ci % 64 == 0 && sig_interrupted(e))
			goto out;
		img_chunk_ref(r, ci, &ref);
		x = idx + ci * IMG_ENTRY2_SIZE;
		put_le64(x + IMG_ENTRY_PRESENT, ref.present);
		put_le64(x + IMG_ENTRY_ZERO, ref.zero);
		if (ref.size == 0)
			continue;
		if (img_read_frame(r, ci, frame, &size, e) < 0)
			goto out;
		if (!ref.has_hash) {
			if (h == NULL &&
			    (h = img_hasher_new(IMG_HASH_BLAKE3)) == NULL) {
				err_set(e, ERR_FAIL, "cannot create a hasher");
				goto out;
			}
			if (chunk == NULL)
				chunk = xmalloc(IMG_CHUNK_BYTES);
			if (img_read_chunk(r, ci, chunk, &dm, e) < 0)
				goto out;
			if (img_hash_chunk(h, dm, chunk,
			    (size_t)img_mask_count(dm) * IMG_PAGE_SIZE,
			    ref.hash) < 0) {
				err_set(e, ERR_FAIL, "cannot hash a chunk");
				goto out;
			}
		}
		if (write_full(fd, frame, size) < 0) {
			err_sys(e, ERR_FAIL, "cannot write the copy");
			goto out;
		}
		put_le64(x + IMG_ENTRY_FRAME_OFF, *pos);
		put_le32(x + IMG_ENTRY_FRAME_SIZE, size);
		put_le32(x + IMG_ENTRY_FRAME_CRC, crc32c(0, frame, size));
		memcpy(x + IMG_ENTRY_HASH, ref.hash, IMG_HASH_SIZE);
		*pos += size;
	}
	rc = 0;
out:
	img_hasher_free(h);
	free(chunk);
	free(frame);
	return rc;
}

int
img_write_standalone(struct img_reader *r, const char *path, struct err *e)
{
	struct atomic_file af = ATOMIC_FILE_INIT;
	uint8_t hdr[IMG_HDR_SIZE], id[IMG_ID_SIZE];
	uint8_t *meta = NULL, *idx = NULL, *tail = NULL;
	size_t msize = 0, isize;
	uint64_t pos, doff, toff, ioff;
	uint32_t tcrc;
	int rc = -1;

	if (new_id(id, e) < 0)
		return -1;
	meta = meta_build(r, id, &msize);
	isize = IMG_SKIP_SIZE + (size_t)r->nchunks * IMG_ENTRY2_SIZE;
	idx = xcalloc(1, isize);
	put_le32(idx, IMG_SKIP_INDEX);
	put_le32(idx + 4, (uint32_t)(isize - IMG_SKIP_SIZE));
	/* The tail frame as it is, checked first. */
	tail = xmalloc((size_t)r->tail_size);
	if (imgr_frame_check(r, r->tail_off, (size_t)r->tail_size, tail,
	    (size_t)r->meta.tail_bytes, r->tail_crc, e) < 0) {
		err_prefix(e, "device state: ");
		goto out;
	}
	if (atomic_file_open(&af, path, 0600, e) < 0)
		goto out;
	memset(hdr, 0, sizeof(hdr));
	if (write_full(af.fd, hdr, sizeof(hdr)) < 0 ||
	    write_full(af.fd, meta, msize) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", af.tmp);
		goto out;
	}
	doff = pos = IMG_HDR_SIZE + msize;
	if (copy_frames(r, af.fd, &pos, idx + IMG_SKIP_SIZE, e) < 0)
		goto out;
	toff = pos;
	ioff = toff + r->tail_size;
	tcrc = crc32c(0, tail, (size_t)r->tail_size);
	if (write_full(af.fd, tail, (size_t)r->tail_size) < 0 ||
	    write_full(af.fd, idx, isize) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", af.tmp);
		goto out;
	}
	put_le32(hdr + IMG_HDR_SKIP_MAGIC, IMG_SKIP_HDR);
	put_le32(hdr + IMG_HDR_SKIP_LEN, IMG_HDR_SIZE - IMG_SKIP_SIZE);
	memcpy(hdr + IMG_HDR_MAGIC, IMG_MAGIC, IMG_MAGIC_LEN);
	put_le32(hdr + IMG_HDR_VERSION, IMG_VERSION_2);
	/* Hashes are copied (a version 1 source's computed, in BLAKE3). */
	put_le32(hdr + IMG_HDR_FLAGS, (r->meta.flags &
	    (IMG_F_SWITCHOVER_START | IMG_F_NO_END)) | IMG_F_FRAME_CRCS |
	    (r->meta.version == IMG_VERSION ? IMG_F_BLAKE3 :
	    r->meta.flags & IMG_F_BLAKE3));
	put_le32(hdr + IMG_HDR_PAGE_SIZE, IMG_PAGE_SIZE);
	put_le32(hdr + IMG_HDR_CHUNK_PAGES, IMG_CHUNK_PAGES);
	put_le64(hdr + IMG_HDR_FILE_SIZE, ioff + isize);
	put_le64(hdr + IMG_HDR_META_OFF, IMG_HDR_SIZE);
	put_le64(hdr + IMG_HDR_META_SIZE, msize);
	put_le64(hdr + IMG_HDR_DATA_OFF, doff);
	put_le64(hdr + IMG_HDR_DATA_SIZE, toff - doff);
	put_le64(hdr + IMG_HDR_TAIL_OFF, toff);
	put_le64(hdr + IMG_HDR_TAIL_SIZE, r->tail_size);
	put_le64(hdr + IMG_HDR_INDEX_OFF, ioff);
	put_le64(hdr + IMG_HDR_INDEX_SIZE, isize);
	put_le32(hdr + IMG_HDR_META_CRC, crc32c(0, meta, msize));
	put_le32(hdr + IMG_HDR_INDEX_CRC, crc32c(0, idx, isize));
	put_le32(hdr + IMG_HDR_TAIL_CRC, tcrc);
	put_le32(hdr + IMG_HDR_CRC, crc32c(0, hdr, IMG_HDR_CRC));
	if (pwrite_full(af.fd, hdr, sizeof(hdr), 0) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", af.tmp);
		goto out;
	}
	if (atomic_file_commit(&af, 1, e) < 0)
		goto out;
	rc = 0;
out:
	atomic_file_release(&af);
	free(tail);
	free(idx);
	free(meta);
	return rc;
}
