/*
 * imgv1 - test helper: write a self-contained image as version 1, the
 * format snapctl wrote before version 2 (man/snapctl-image.5), so that the
 * tests can make the stores an older snapctl left behind.
 *
 *   imgv1 IN OUT
 *       IN is a version 2 image without packs (flag 0x8 clear), or a
 *       version 1 image (copied as it is).  OUT gets the same chunks,
 *       frames and tail, laid out as version 1: the 64-byte metadata fixed
 *       part, 32-byte index entries, the frames in index order; every CRC
 *       made right.  Exit 0, or 1 with a line on stderr.
 *
 * Works on raw bytes, not through the reader, so it needs nothing of the
 * reader it is used to test; it trusts IN (the tests make it with snapctl).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgfmt.h"
#include "util.h"

static int
fail(const char *what)
{
	fprintf(stderr, "imgv1: %s\n", what);
	return 1;
}

static uint8_t *
slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *p = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		goto out;
	p = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (p == NULL || read_full(fd, p, st.st_size) != st.st_size) {
		free(p);
		p = NULL;
		goto out;
	}
	*len = st.st_size;
out:
	if (fd >= 0)
		close(fd);
	return p;
}

/* A skippable frame's 8 bytes, then the payload's CRC over all of it. */
static void
skip_hdr(uint8_t *p, uint32_t magic, size_t payload)
{
	put_le32(p, magic);
	put_le32(p + 4, (uint32_t)payload);
}

int
main(int argc, char **argv)
{
	size_t len = 0, out_len, meta_v1, idx_v1, data_v1, nchunks, i, rest;
	uint8_t *in = NULL, *out = NULL, *m, *meta, *ix2, *ix1, *d;
	uint64_t meta_off, meta_size, tail_off, tail_size, idx_off, idx_size;
	uint64_t pos;
	uint32_t version, flags;
	int fd = -1, rc = 1;

	if (argc != 3)
		return fail("usage: imgv1 IN OUT");
	in = slurp(argv[1], &len);
	if (in == NULL || len < IMG_HDR_SIZE)
		return fail("cannot read IN, or it is too short");
	version = get_le32(in + IMG_HDR_VERSION);
	flags = get_le32(in + IMG_HDR_FLAGS);
	if (memcmp(in + IMG_HDR_MAGIC, IMG_MAGIC, IMG_MAGIC_LEN) != 0)
		return fail("IN is not an image");
	if (version == IMG_VERSION) {
		out = in;
		out_len = len;
		goto write;
	}
	if (version != IMG_VERSION_2 || (flags & IMG_F_PACKS))
		return fail("IN is not a version 2 image without packs");
	meta_off = get_le64(in + IMG_HDR_META_OFF);
	meta_size = get_le64(in + IMG_HDR_META_SIZE);
	tail_off = get_le64(in + IMG_HDR_TAIL_OFF);
	tail_size = get_le64(in + IMG_HDR_TAIL_SIZE);
	idx_off = get_le64(in + IMG_HDR_INDEX_OFF);
	idx_size = get_le64(in + IMG_HDR_INDEX_SIZE);
	if (meta_off + meta_size > len || tail_off + tail_size > len ||
	    idx_off + idx_size > len || meta_size < IMG_SKIP_SIZE + IMG_META_FIXED_V2)
		return fail("IN's regions are out of bounds");
	m = in + meta_off + IMG_SKIP_SIZE;
	if (get_le32(m + IMG_META_NPACKS) != 0)
		return fail("IN lists packs");
	nchunks = get_le64(m + IMG_META_CHUNKS);
	if (idx_size != IMG_SKIP_SIZE + nchunks * (uint64_t)IMG_ENTRY2_SIZE)
		return fail("IN's index size does not match its chunks");
	ix2 = in + idx_off + IMG_SKIP_SIZE;

	/* Sizes of the version 1 regions. */
	rest = meta_size - IMG_SKIP_SIZE - IMG_META_FIXED_V2;
	meta_v1 = IMG_SKIP_SIZE + IMG_META_FIXED + rest;
	data_v1 = 0;
	for (i = 0; i < nchunks; i++)
		data_v1 += get_le32(ix2 + i * IMG_ENTRY2_SIZE + IMG_ENTRY_FRAME_SIZE);
	idx_v1 = IMG_SKIP_SIZE + nchunks * (size_t)IMG_ENTRY_SIZE;
	out_len = IMG_HDR_SIZE + meta_v1 + data_v1 + tail_size + idx_v1;
	out = calloc(1, out_len);
	if (out == NULL)
		return fail("out of memory");

	/* Metadata: the v1 fixed part, then machine, config, blocks as they are. */
	meta = out + IMG_HDR_SIZE;
	skip_hdr(meta, IMG_SKIP_META, meta_v1 - IMG_SKIP_SIZE);
	memcpy(meta + IMG_SKIP_SIZE, m, IMG_META_FIXED);
	memcpy(meta + IMG_SKIP_SIZE + IMG_META_FIXED, m + IMG_META_FIXED_V2, rest);

	/* Data in index order, then the tail, then the index. */
	d = meta + meta_v1;
	pos = IMG_HDR_SIZE + meta_v1;
	ix1 = out + pos + data_v1 + tail_size;
	skip_hdr(ix1, IMG_SKIP_INDEX, idx_v1 - IMG_SKIP_SIZE);
	ix1 += IMG_SKIP_SIZE;
	for (i = 0; i < nchunks; i++) {
		const uint8_t *e2 = ix2 + i * IMG_ENTRY2_SIZE;
		uint8_t *e1 = ix1 + i * IMG_ENTRY_SIZE;
		uint64_t off = get_le64(e2 + IMG_ENTRY_FRAME_OFF);
		uint32_t size = get_le32(e2 + IMG_ENTRY_FRAME_SIZE);

		if ((e2[IMG_ENTRY_PACK] | e2[IMG_ENTRY_PACK + 1]) != 0)
			return fail("an entry of IN names a pack");
		if (size && (off + size > len))
			return fail("a frame of IN is out of bounds");
		memcpy(e1, e2, IMG_ENTRY_SIZE);
		if (size) {
			memcpy(d, in + off, size);
			put_le64(e1 + IMG_ENTRY_FRAME_OFF, (uint64_t)(d - out));
			d += size;
		}
	}
	memcpy(d, in + tail_off, tail_size);

	/* Header: version 1, same flags but version 2's (no hashes; the
	 * frames are packed here in index order, without holes), new region
	 * table and CRCs. */
	memcpy(out, in, IMG_HDR_SIZE);
	put_le32(out + IMG_HDR_VERSION, IMG_VERSION);
	put_le32(out + IMG_HDR_FLAGS, flags & ~(IMG_F_BLAKE3 | IMG_F_HOLES));
	put_le64(out + IMG_HDR_FILE_SIZE, out_len);
	put_le64(out + IMG_HDR_META_OFF, IMG_HDR_SIZE);
	put_le64(out + IMG_HDR_META_SIZE, meta_v1);
	put_le64(out + IMG_HDR_DATA_OFF, IMG_HDR_SIZE + meta_v1);
	put_le64(out + IMG_HDR_DATA_SIZE, data_v1);
	put_le64(out + IMG_HDR_TAIL_OFF, IMG_HDR_SIZE + meta_v1 + data_v1);
	put_le64(out + IMG_HDR_TAIL_SIZE, tail_size);
	put_le64(out + IMG_HDR_INDEX_OFF, IMG_HDR_SIZE + meta_v1 + data_v1 + tail_size);
	put_le64(out + IMG_HDR_INDEX_SIZE, idx_v1);
	put_le32(out + IMG_HDR_META_CRC, crc32c(0, meta, meta_v1));
	put_le32(out + IMG_HDR_INDEX_CRC, crc32c(0, ix1 - IMG_SKIP_SIZE, idx_v1));
	put_le32(out + IMG_HDR_CRC, crc32c(0, out, IMG_HDR_CRC));

write:
	fd = open(argv[2], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || write_full(fd, out, out_len) < 0 || fsync(fd) < 0) {
		fprintf(stderr, "imgv1: %s: %s\n", argv[2], strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (out != in)
		free(out);
	free(in);
	return rc;
}
