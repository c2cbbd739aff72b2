/*
 * imgv2tool - test helper for image version 2 before the writer makes it
 * (man/snapctl-image.5, VERSION 2): copies and splits of an image.
 *
 *   imgv2tool standalone IMAGE OUT
 *       img_write_standalone(): a self-contained version 2 copy.
 *   imgv2tool split IMAGE PACK OUT HINT
 *       A version 2 pair from IMAGE: PACK its standalone copy, OUT an
 *       image naming PACK (as HINT) for every other framed chunk, its own
 *       frames in reverse index order; print PACK's id in hex.  HINT
 *       "-": no pack table, OUT holds every frame, in reverse order.
 *   imgv2tool sha256 IMAGE OUT
 *       OUT: IMAGE (self-contained, BLAKE3 hashes) as a snapctl from before
 *       flag 0x10 wrote it: the same bytes and id, SHA-256 chunk hashes.
 *   imgv2tool swap IMAGE OUT
 *       OUT: IMAGE (self-contained) with the index entries of the first two
 *       chunks of its first block that have frames of different hashes
 *       swapped, as if those chunks' contents had traded places, and a new
 *       id; print the two chunk numbers.
 *   imgv2tool hashtime IMAGE
 *       Decode every chunk of IMAGE into memory, page i at i * 4096 as the
 *       writer holds it, then print the CPU seconds img_hash_pages() takes
 *       over all of them: "blake3 S sha256 S".  For bench/incremental.sh.
 */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgfmt.h"
#include "imghash.h"
#include "imgread.h"
#include "util.h"

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* The bytes of a whole file into *buf. */
static int
slurp(const char *path, uint8_t **buf, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0)
		return -1;
	*len = (size_t)st.st_size;
	*buf = xmalloc(*len ? *len : 1);
	if (read_full(fd, *buf, *len) != (ssize_t)*len) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* A new file at path (0600, not there before) holding buf. 0 or -1. */
static int
spill(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

	if (fd < 0 || write_full(fd, buf, len) < 0 || fsync(fd) < 0) {
		perror(path);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int
split(const char *path, const char *pack, const char *out, const char *hint)
{
	struct err e = ERR_INIT;
	struct img_reader *r;
	uint8_t *p = NULL, *o = NULL, *hdr, *x, *y;
	size_t len, hlen = strlen(hint), msize, nmeta, isize, i, k, n;
	int packs = strcmp(hint, "-") != 0;	/* "-": reverse only */
	uint64_t moff, toff, tsize, ioff, nch, ci, pos, doff, framed = 0;
	int fd, rc = 1;

	if ((r = img_open(path, &e)) == NULL ||
	    img_write_standalone(r, pack, &e) < 0) {
		fprintf(stderr, "imgv2tool split: %s\n", e.msg);
		img_close(r);
		return 1;
	}
	img_close(r);
	if (slurp(pack, &p, &len) < 0) {
		perror(pack);
		goto out;
	}
	moff = get_le64(p + IMG_HDR_META_OFF);
	msize = (size_t)get_le64(p + IMG_HDR_META_SIZE);
	toff = get_le64(p + IMG_HDR_TAIL_OFF);
	tsize = get_le64(p + IMG_HDR_TAIL_SIZE);
	ioff = get_le64(p + IMG_HDR_INDEX_OFF);
	isize = (size_t)get_le64(p + IMG_HDR_INDEX_SIZE);
	nch = (isize - IMG_SKIP_SIZE) / IMG_ENTRY2_SIZE;
	nmeta = msize + (packs ? IMG_PACK_FIXED + hlen : 0);
	o = xcalloc(1, len + nmeta);
	/* metadata: P's, a pack table of one */
	memcpy(o + IMG_HDR_SIZE, p + moff, msize);
	put_le32(o + IMG_HDR_SIZE + 4, (uint32_t)(nmeta - IMG_SKIP_SIZE));
	put_le32(o + IMG_HDR_SIZE + IMG_SKIP_SIZE + IMG_META_NPACKS,
	    packs ? 1 : 0);
	x = packs ? o + IMG_HDR_SIZE + msize : xcalloc(1, 512);
	memcpy(x + IMG_PACK_ID, p + moff + IMG_SKIP_SIZE + IMG_META_IMAGE_ID,
	    IMG_ID_SIZE);
	put_le64(x + IMG_PACK_FILE_SIZE, len);
	put16(x + IMG_PACK_NAME_LEN, (uint16_t)hlen);
	memcpy(x + IMG_PACK_FIXED, hint, hlen);
	if (!packs)
		free(x);
	/* a new id: P's with its first byte changed */
	o[IMG_HDR_SIZE + IMG_SKIP_SIZE + IMG_META_IMAGE_ID] ^= 0x5a;
	doff = pos = IMG_HDR_SIZE + nmeta;
	/* the index: P's entries; every other framed one stays in P */
	n = IMG_SKIP_SIZE + (size_t)nch * IMG_ENTRY2_SIZE;
	y = xmalloc(n);
	memcpy(y, p + ioff, n);
	for (k = 0, ci = nch; ci-- > 0;) {
		x = y + IMG_SKIP_SIZE + ci * IMG_ENTRY2_SIZE;
		if (get_le32(x + IMG_ENTRY_FRAME_SIZE) == 0)
			continue;
		framed++;
		if (packs && ci % 2 == 0) {
			put16(x + IMG_ENTRY_PACK, 1);
			continue;
		}
		i = get_le32(x + IMG_ENTRY_FRAME_SIZE);
		memcpy(o + pos, p + get_le64(x + IMG_ENTRY_FRAME_OFF), i);
		put_le64(x + IMG_ENTRY_FRAME_OFF, pos);
		pos += i;
		k++;
	}
	memcpy(o + pos, p + toff, (size_t)tsize);
	memcpy(o + pos + tsize, y, n);
	hdr = o;
	memcpy(hdr, p, IMG_HDR_SIZE);
	put_le32(hdr + IMG_HDR_FLAGS, get_le32(p + IMG_HDR_FLAGS) |
	    (packs ? IMG_F_PACKS : 0));
	put_le64(hdr + IMG_HDR_FILE_SIZE, pos + tsize + n);
	put_le64(hdr + IMG_HDR_META_SIZE, nmeta);
	put_le64(hdr + IMG_HDR_DATA_OFF, doff);
	put_le64(hdr + IMG_HDR_DATA_SIZE, pos - doff);
	put_le64(hdr + IMG_HDR_TAIL_OFF, pos);
	put_le64(hdr + IMG_HDR_INDEX_OFF, pos + tsize);
	put_le32(hdr + IMG_HDR_META_CRC, crc32c(0, o + IMG_HDR_SIZE, nmeta));
	put_le32(hdr + IMG_HDR_INDEX_CRC, crc32c(0, y, n));
	put_le32(hdr + IMG_HDR_CRC, crc32c(0, hdr, IMG_HDR_CRC));
	free(y);
	unlink(out);
	fd = open(out, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write_full(fd, o, (size_t)(pos + tsize + n)) < 0) {
		perror(out);
		if (fd >= 0)
			close(fd);
		goto out;
	}
	close(fd);
	for (i = 0; i < IMG_ID_SIZE; i++)
		printf("%02x", p[moff + IMG_SKIP_SIZE + IMG_META_IMAGE_ID + i]);
	printf("\n");
	fprintf(stderr, "imgv2tool split: %llu framed chunks, %zu own\n",
	    (unsigned long long)framed, k);
	rc = 0;
out:
	free(p);
	free(o);
	return rc;
}

static int
standalone(const char *path, const char *out)
{
	struct err e = ERR_INIT;
	struct img_reader *r;
	int rc = 1;

	if ((r = img_open(path, &e)) != NULL &&
	    img_write_standalone(r, out, &e) == 0)
		rc = 0;
	else
		fprintf(stderr, "imgv2tool standalone: %s\n", e.msg);
	img_close(r);
	return rc;
}

static int
to_sha256(const char *path, const char *out)
{
	struct err e = ERR_INIT;
	struct img_reader *r = NULL;
	struct img_hasher *h = img_hasher_new(IMG_HASH_SHA256);
	struct img_chunk_ref ref;
	uint8_t *p = NULL, *chunk = xmalloc(IMG_CHUNK_BYTES), *x;
	size_t len;
	uint64_t ioff, isize, ci, dm;
	uint32_t flags;
	int rc = 1;

	if (h == NULL || (r = img_open(path, &e)) == NULL ||
	    slurp(path, &p, &len) < 0) {
		fprintf(stderr, "imgv2tool sha256: %s\n", e.msg);
		goto out;
	}
	flags = get_le32(p + IMG_HDR_FLAGS);
	if (get_le32(p + IMG_HDR_VERSION) != IMG_VERSION_2 ||
	    (flags & IMG_F_PACKS) || !(flags & IMG_F_BLAKE3)) {
		fprintf(stderr, "imgv2tool sha256: not a self-contained "
		    "BLAKE3 image\n");
		goto out;
	}
	ioff = get_le64(p + IMG_HDR_INDEX_OFF);
	isize = get_le64(p + IMG_HDR_INDEX_SIZE);
	for (ci = 0; ci < img_nchunks(r); ci++) {
		img_chunk_ref(r, ci, &ref);
		if (ref.size == 0)
			continue;
		x = p + ioff + IMG_SKIP_SIZE + ci * IMG_ENTRY2_SIZE;
		if (img_read_chunk(r, ci, chunk, &dm, &e) < 0 ||
		    img_hash_chunk(h, dm, chunk, (size_t)img_mask_count(dm) *
		    IMG_PAGE_SIZE, x + IMG_ENTRY_HASH) < 0) {
			fprintf(stderr, "imgv2tool sha256: %s\n", e.msg);
			goto out;
		}
	}
	put_le32(p + IMG_HDR_FLAGS, flags & ~IMG_F_BLAKE3);
	put_le32(p + IMG_HDR_INDEX_CRC, crc32c(0, p + ioff, (size_t)isize));
	put_le32(p + IMG_HDR_CRC, crc32c(0, p, IMG_HDR_CRC));
	if (spill(out, p, len) < 0)
		goto out;
	rc = 0;
out:
	img_close(r);
	img_hasher_free(h);
	free(chunk);
	free(p);
	return rc;
}

static int
swap(const char *path, const char *out)
{
	struct err e = ERR_INIT;
	struct img_reader *r = NULL;
	struct img_chunk_ref ra, rb;
	uint8_t *p = NULL, tmp[IMG_ENTRY2_SIZE], *x, *y;
	size_t len;
	uint64_t ioff, isize, moff, a = 0, b, n;
	int rc = 1;

	if ((r = img_open(path, &e)) == NULL || slurp(path, &p, &len) < 0) {
		fprintf(stderr, "imgv2tool swap: %s\n", e.msg);
		goto out;
	}
	if (get_le32(p + IMG_HDR_VERSION) != IMG_VERSION_2 ||
	    (get_le32(p + IMG_HDR_FLAGS) & IMG_F_PACKS)) {
		fprintf(stderr, "imgv2tool swap: not a self-contained version 2 "
		    "image\n");
		goto out;
	}
	/* Whole chunks of block 0: their masks are valid anywhere in it. */
	n = img_meta(r)->blocks[0].used_length / IMG_CHUNK_BYTES;
	for (a = 0; a < n; a++) {
		img_chunk_ref(r, a, &ra);
		if (ra.size != 0)
			break;
	}
	for (b = a + 1; b < n; b++) {
		img_chunk_ref(r, b, &rb);
		if (rb.size != 0 && memcmp(ra.hash, rb.hash, IMG_HASH_SIZE) != 0)
			break;
	}
	if (b >= n) {
		fprintf(stderr, "imgv2tool swap: no two chunks to swap\n");
		goto out;
	}
	ioff = get_le64(p + IMG_HDR_INDEX_OFF);
	isize = get_le64(p + IMG_HDR_INDEX_SIZE);
	moff = get_le64(p + IMG_HDR_META_OFF);
	x = p + ioff + IMG_SKIP_SIZE + a * IMG_ENTRY2_SIZE;
	y = p + ioff + IMG_SKIP_SIZE + b * IMG_ENTRY2_SIZE;
	memcpy(tmp, x, IMG_ENTRY2_SIZE);
	memcpy(x, y, IMG_ENTRY2_SIZE);
	memcpy(y, tmp, IMG_ENTRY2_SIZE);
	/* A new id: IMAGE's with its first byte changed. */
	p[moff + IMG_SKIP_SIZE + IMG_META_IMAGE_ID] ^= 0x5a;
	put_le32(p + IMG_HDR_META_CRC, crc32c(0, p + moff,
	    (size_t)get_le64(p + IMG_HDR_META_SIZE)));
	put_le32(p + IMG_HDR_INDEX_CRC, crc32c(0, p + ioff, (size_t)isize));
	put_le32(p + IMG_HDR_CRC, crc32c(0, p, IMG_HDR_CRC));
	if (spill(out, p, len) < 0)
		goto out;
	printf("%llu %llu\n", (unsigned long long)a, (unsigned long long)b);
	rc = 0;
out:
	img_close(r);
	free(p);
	return rc;
}

static double
thread_cpu(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
hashtime(const char *path)
{
	struct err e = ERR_INIT;
	struct img_reader *r = img_open(path, &e);
	struct img_hasher *h;
	uint8_t *mem = NULL, *packed = xmalloc(IMG_CHUNK_BYTES), *c;
	uint8_t out[IMG_HASH_SIZE];
	uint64_t n, ci, dm, *masks = NULL, m;
	size_t k;
	double t[2];
	int a, rc = 1;

	if (r == NULL) {
		fprintf(stderr, "imgv2tool hashtime: %s\n", e.msg);
		goto out;
	}
	n = img_nchunks(r);
	mem = xcalloc(n ? n : 1, IMG_CHUNK_BYTES);
	masks = xcalloc(n ? n : 1, sizeof(*masks));
	for (ci = 0; ci < n; ci++) {
		if (img_read_chunk(r, ci, packed, &dm, &e) < 0) {
			fprintf(stderr, "imgv2tool hashtime: %s\n", e.msg);
			goto out;
		}
		masks[ci] = dm;
		c = mem + ci * IMG_CHUNK_BYTES;
		for (k = 0, m = dm; m != 0; m &= m - 1, k++)
			memcpy(c + (size_t)__builtin_ctzll(m) * IMG_PAGE_SIZE,
			    packed + k * IMG_PAGE_SIZE, IMG_PAGE_SIZE);
	}
	for (a = 0; a < 2; a++) {
		h = img_hasher_new(a == 0 ? IMG_HASH_BLAKE3 : IMG_HASH_SHA256);
		if (h == NULL)
			goto out;
		t[a] = thread_cpu();
		for (ci = 0; ci < n; ci++)
			if (masks[ci] != 0)
				img_hash_pages(h, masks[ci],
				    mem + ci * IMG_CHUNK_BYTES, out);
		t[a] = thread_cpu() - t[a];
		img_hasher_free(h);
	}
	printf("blake3 %.3f sha256 %.3f\n", t[0], t[1]);
	rc = 0;
out:
	img_close(r);
	free(mem);
	free(masks);
	free(packed);
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "split") == 0)
		return split(argv[2], argv[3], argv[4], argv[5]);
	if (argc == 4 && strcmp(argv[1], "standalone") == 0)
		return standalone(argv[2], argv[3]);
	if (argc == 4 && strcmp(argv[1], "sha256") == 0)
		return to_sha256(argv[2], argv[3]);
	if (argc == 3 && strcmp(argv[1], "hashtime") == 0)
		return hashtime(argv[2]);
	if (argc == 4 && strcmp(argv[1], "swap") == 0)
		return swap(argv[2], argv[3]);
	fprintf(stderr, "usage: imgv2tool standalone IMAGE OUT | "
	    "split IMAGE PACK OUT HINT | sha256 IMAGE OUT | hashtime IMAGE | "
	    "swap IMAGE OUT\n");
	return 2;
}
