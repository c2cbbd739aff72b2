/*
 * tests/unit/imgv2.c - the reader of image version 2 (man/snapctl-image.5,
 * VERSION 2) on images built by hand here: self-contained, frames in
 * reverse order, sharing frames with a pack beside them, every malformed
 * case the reader must refuse, version 1 still read, and
 * img_write_standalone()'s copy.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "imgcheck.h"
#include "imgfmt.h"
#include "imghash.h"
#include "imgread.h"
#include "util.h"
#include "tap.h"

#define PAGE IMG_PAGE_SIZE
#define NCH 6			/* chunks of block 0, "pc.ram" */
#define NCH1 1			/* chunks of block 1, "vga" */
#define NALL (NCH + NCH1)
#define MAXPACKS 4

static char *tmpdir;
/* The hash flag of the version 2 images built: IMG_F_BLAKE3 (what snapctl
 * writes) or 0 (SHA-256, images written before it); main() runs both. */
static uint32_t hash_flag;

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

static void
put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static char *
tpath(const char *name)
{
	return xasprintf("%s/%s", tmpdir, name);
}

/* Page pi of chunk ci's content in a series called seed. */
static void
page_fill(uint8_t *p, unsigned seed, unsigned ci, unsigned pi)
{
	size_t i;

	for (i = 0; i < PAGE; i++)
		p[i] = (uint8_t)((i * 7 + ci * 131 + pi * 17 + seed * 59) ^
		    (i >> 5));
}

/* A chunk of an image being built. */
struct bchunk {
	uint64_t present, zero;
	unsigned seed;			/* content series */
	uint32_t pack;			/* 0, or refer to pack's chunk */
	uint64_t off;			/* set by the build, or the pack's */
	uint32_t size, crc;
	uint8_t hash[IMG_HASH_SIZE];
	uint8_t *frame;
};

struct bpack {
	uint8_t id[IMG_ID_SIZE];
	uint64_t size;
	char hint[300];
};

struct bimg {
	uint32_t version, flags;
	uint8_t id[IMG_ID_SIZE];
	struct bchunk c[NALL];
	size_t npacks;
	struct bpack packs[MAXPACKS];
	int reverse;			/* own frames in reverse order */
	size_t gap;			/* bytes of 0xee before each own
					 * frame (flag 0x20, holes) */
	int32_t npacks_field;		/* -1: npacks */
	uint8_t *buf;
	size_t len;
	uint64_t index_off;
};

static uint64_t
used_of(unsigned b)
{
	/* block 1 is a short chunk: 40 pages */
	return b == 0 ? (uint64_t)NCH * IMG_CHUNK_BYTES : 40 * PAGE;
}

static void
chunk_frame(struct bchunk *c, unsigned ci, enum img_hash_algo algo)
{
	uint64_t data = c->present & ~c->zero, m;
	uint8_t *content = xcalloc(1, IMG_CHUNK_BYTES);
	size_t n = 0, z;
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	struct img_hasher *h = img_hasher_new(algo);

	for (m = data; m != 0; m &= m - 1)
		page_fill(content + n++ * PAGE, c->seed, ci,
		    (unsigned)__builtin_ctzll(m));
	free(c->frame);
	c->frame = NULL;
	c->size = 0;
	c->crc = 0;
	memset(c->hash, 0, sizeof(c->hash));
	if (data != 0) {
		c->frame = xmalloc(IMG_FRAME_MAX);
		ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
		z = ZSTD_compress2(cc, c->frame, IMG_FRAME_MAX, content,
		    n * PAGE);
		if (ZSTD_isError(z))
			abort();
		c->size = (uint32_t)z;
		c->crc = crc32c(0, c->frame, z);
		img_hash_chunk(h, data, content, n * PAGE, c->hash);
	}
	ZSTD_freeCCtx(cc);
	img_hasher_free(h);
	free(content);
}

/* A fresh image spec: chunks with a mix of absent, zero and data pages. */
static void
bimg_init(struct bimg *b, uint32_t version, unsigned seed, uint8_t idbyte)
{
	unsigned ci;

	memset(b, 0, sizeof(*b));
	b->version = version;
	b->flags = IMG_F_FRAME_CRCS |
	    (version == IMG_VERSION_2 ? hash_flag : 0);
	memset(b->id, idbyte, sizeof(b->id));
	b->npacks_field = -1;
	for (ci = 0; ci < NALL; ci++) {
		struct bchunk *c = &b->c[ci];

		c->present = ci < NCH ? ~0ull : (1ull << 40) - 1;
		if (ci == 2)
			c->present = 0;			/* never sent */
		c->zero = ci == 3 ? c->present : 0x0f0full & c->present;
		if (ci == 4)
			c->present &= ~0xf000ull;	/* some absent */
		c->seed = seed + ci;
	}
}

static void
bimg_frames(struct bimg *b)
{
	unsigned ci;

	for (ci = 0; ci < NALL; ci++)
		if (b->c[ci].pack == 0)
			chunk_frame(&b->c[ci], ci, img_hash_algo_of(b->flags));
}

/* Chunk ci of b names pack p, whose image is pb (its chunk ci). */
static void
bimg_share(struct bimg *b, unsigned ci, uint32_t p, const struct bimg *pb)
{
	struct bchunk *c = &b->c[ci];

	c->pack = p;
	c->present = pb->c[ci].present;
	c->zero = pb->c[ci].zero;
	c->off = pb->c[ci].off;
	c->size = pb->c[ci].size;
	c->crc = pb->c[ci].crc;
	memcpy(c->hash, pb->c[ci].hash, IMG_HASH_SIZE);
}

static void
bimg_add_pack(struct bimg *b, const struct bimg *pb, const char *hint)
{
	struct bpack *k = &b->packs[b->npacks++];

	memcpy(k->id, pb->id, IMG_ID_SIZE);
	k->size = pb->len;
	snprintf(k->hint, sizeof(k->hint), "%s", hint);
	b->flags |= IMG_F_PACKS;
}

/* Header, metadata and index CRCs of an image in memory, again. */
static void
fix_crcs(uint8_t *p)
{
	uint64_t off, len;

	off = get_le64(p + IMG_HDR_META_OFF);
	len = get_le64(p + IMG_HDR_META_SIZE);
	put_le32(p + IMG_HDR_META_CRC, crc32c(0, p + off, (size_t)len));
	off = get_le64(p + IMG_HDR_INDEX_OFF);
	len = get_le64(p + IMG_HDR_INDEX_SIZE);
	put_le32(p + IMG_HDR_INDEX_CRC, crc32c(0, p + off, (size_t)len));
	put_le32(p + IMG_HDR_CRC, crc32c(0, p, IMG_HDR_CRC));
}

static const char machine[] = "pc-q35-7.2";
static const uint8_t config[] = { 0x07, 0, 0, 0, 3, 'p', 'c', 0 };
static const char tail_text[] = "device state and the end of the stream";

static void
bimg_build(struct bimg *b)
{
	uint8_t *p, *m, tframe[256];
	size_t msize, esize, isize, mpay, k, i, tsize;
	uint64_t doff, pos, frames = 0, pages = 0, zero = 0;
	unsigned ci, order[NALL], bl;
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	int v2 = b->version == IMG_VERSION_2;
	uint64_t ram = used_of(0) + used_of(1);

	ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	tsize = ZSTD_compress2(cc, tframe, sizeof(tframe), tail_text,
	    sizeof(tail_text));
	ZSTD_freeCCtx(cc);
	mpay = (v2 ? IMG_META_FIXED_V2 : IMG_META_FIXED) + strlen(machine) +
	    sizeof(config) + 2 * IMG_BLOCK_FIXED + strlen("pc.ram") +
	    strlen("vga");
	for (k = 0; k < b->npacks; k++)
		mpay += IMG_PACK_FIXED + strlen(b->packs[k].hint);
	msize = IMG_SKIP_SIZE + mpay;
	esize = v2 ? IMG_ENTRY2_SIZE : IMG_ENTRY_SIZE;
	isize = IMG_SKIP_SIZE + NALL * esize;
	doff = IMG_HDR_SIZE + msize;
	pos = doff;
	for (ci = 0; ci < NALL; ci++)
		order[ci] = b->reverse ? NALL - 1 - ci : ci;
	for (i = 0; i < NALL; i++) {
		struct bchunk *c = &b->c[order[i]];

		if (c->pack != 0 || c->size == 0) {
			if (c->pack == 0)
				c->off = 0;
			continue;
		}
		c->off = pos + b->gap;
		pos += b->gap + c->size;
	}
	b->len = pos + tsize + isize;
	free(b->buf);
	b->buf = p = xcalloc(1, b->len);
	memset(p + doff, 0xee, (size_t)(pos - doff));
	for (ci = 0; ci < NALL; ci++) {
		if (b->c[ci].pack == 0 && b->c[ci].size)
			memcpy(p + b->c[ci].off, b->c[ci].frame, b->c[ci].size);
		frames += b->c[ci].size != 0;
		pages += img_mask_count(b->c[ci].present);
		zero += img_mask_count(b->c[ci].zero);
	}
	memcpy(p + pos, tframe, tsize);
	/* header */
	put_le32(p + IMG_HDR_SKIP_MAGIC, IMG_SKIP_HDR);
	put_le32(p + IMG_HDR_SKIP_LEN, IMG_HDR_SIZE - IMG_SKIP_SIZE);
	memcpy(p + IMG_HDR_MAGIC, IMG_MAGIC, IMG_MAGIC_LEN);
	put_le32(p + IMG_HDR_VERSION, b->version);
	put_le32(p + IMG_HDR_FLAGS, b->flags);
	put_le32(p + IMG_HDR_PAGE_SIZE, IMG_PAGE_SIZE);
	put_le32(p + IMG_HDR_CHUNK_PAGES, IMG_CHUNK_PAGES);
	put_le64(p + IMG_HDR_FILE_SIZE, b->len);
	put_le64(p + IMG_HDR_META_OFF, IMG_HDR_SIZE);
	put_le64(p + IMG_HDR_META_SIZE, msize);
	put_le64(p + IMG_HDR_DATA_OFF, doff);
	put_le64(p + IMG_HDR_DATA_SIZE, pos - doff);
	put_le64(p + IMG_HDR_TAIL_OFF, pos);
	put_le64(p + IMG_HDR_TAIL_SIZE, tsize);
	put_le64(p + IMG_HDR_INDEX_OFF, pos + tsize);
	put_le64(p + IMG_HDR_INDEX_SIZE, isize);
	if (b->flags & IMG_F_FRAME_CRCS)
		put_le32(p + IMG_HDR_TAIL_CRC, crc32c(0, tframe, tsize));
	/* metadata */
	m = p + IMG_HDR_SIZE;
	put_le32(m, IMG_SKIP_META);
	put_le32(m + 4, (uint32_t)mpay);
	m += IMG_SKIP_SIZE;
	put_le32(m + IMG_META_RAM_SECTION, 2);
	put_le32(m + IMG_META_NBLOCKS, 2);
	put_le32(m + IMG_META_MACHINE_LEN, (uint32_t)strlen(machine));
	put_le32(m + IMG_META_CONFIG_LEN, sizeof(config));
	put_le64(m + IMG_META_RAM_BYTES, ram);
	put_le64(m + IMG_META_CHUNKS, NALL);
	put_le64(m + IMG_META_FRAMES, frames);
	put_le64(m + IMG_META_PAGES, pages);
	put_le64(m + IMG_META_ZERO_PAGES, zero);
	put_le64(m + IMG_META_TAIL_LEN, sizeof(tail_text));
	if (v2) {
		memcpy(m + IMG_META_IMAGE_ID, b->id, IMG_ID_SIZE);
		put_le32(m + IMG_META_NPACKS, b->npacks_field >= 0 ?
		    (uint32_t)b->npacks_field : (uint32_t)b->npacks);
		m += IMG_META_FIXED_V2;
	} else
		m += IMG_META_FIXED;
	memcpy(m, machine, strlen(machine));
	m += strlen(machine);
	memcpy(m, config, sizeof(config));
	m += sizeof(config);
	for (bl = 0; bl < 2; bl++) {
		const char *name = bl == 0 ? "pc.ram" : "vga";

		put_le64(m + IMG_BLOCK_USED_LEN, used_of(bl));
		put_le16(m + IMG_BLOCK_NAME_LEN, (uint16_t)strlen(name));
		m += IMG_BLOCK_FIXED;
		memcpy(m, name, strlen(name));
		m += strlen(name);
	}
	for (k = 0; k < b->npacks; k++) {
		memcpy(m + IMG_PACK_ID, b->packs[k].id, IMG_ID_SIZE);
		put_le64(m + IMG_PACK_FILE_SIZE, b->packs[k].size);
		put_le16(m + IMG_PACK_NAME_LEN,
		    (uint16_t)strlen(b->packs[k].hint));
		m += IMG_PACK_FIXED;
		memcpy(m, b->packs[k].hint, strlen(b->packs[k].hint));
		m += strlen(b->packs[k].hint);
	}
	if (m != p + IMG_HDR_SIZE + msize)
		abort();
	/* index */
	b->index_off = pos + tsize;
	m = p + b->index_off;
	put_le32(m, IMG_SKIP_INDEX);
	put_le32(m + 4, (uint32_t)(isize - IMG_SKIP_SIZE));
	m += IMG_SKIP_SIZE;
	for (ci = 0; ci < NALL; ci++, m += esize) {
		struct bchunk *c = &b->c[ci];

		put_le64(m + IMG_ENTRY_FRAME_OFF, c->off);
		put_le32(m + IMG_ENTRY_FRAME_SIZE, c->size);
		if (b->flags & IMG_F_FRAME_CRCS)
			put_le32(m + IMG_ENTRY_FRAME_CRC, c->crc);
		put_le64(m + IMG_ENTRY_PRESENT, c->present);
		put_le64(m + IMG_ENTRY_ZERO, c->zero);
		if (v2) {
			put_le16(m + IMG_ENTRY_PACK, (uint16_t)c->pack);
			memcpy(m + IMG_ENTRY_HASH, c->hash, IMG_HASH_SIZE);
		}
	}
	fix_crcs(p);
}

/* Entry ci of a built image, to damage it. */
static uint8_t *
bentry(struct bimg *b, unsigned ci)
{
	return b->buf + b->index_off + IMG_SKIP_SIZE + ci *
	    (b->version == IMG_VERSION_2 ? IMG_ENTRY2_SIZE : IMG_ENTRY_SIZE);
}

static void
bimg_free(struct bimg *b)
{
	unsigned ci;

	for (ci = 0; ci < NALL; ci++)
		free(b->c[ci].frame);
	free(b->buf);
	memset(b, 0, sizeof(*b));
}

static void
write_file(const char *name, const uint8_t *p, size_t len)
{
	char *path = tpath(name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || write_full(fd, p, len) < 0)
		abort();
	close(fd);
	free(path);
}

/* Does the reader of name read every page as spec b says? */
static int
reads_as(struct img_reader *r, const struct bimg *b, const char *what)
{
	uint8_t page[PAGE], want[PAGE];
	enum img_page_state st, wst;
	struct err e = ERR_INIT;
	unsigned ci, pi, bl;
	uint64_t base;

	for (ci = 0; ci < NALL; ci++) {
		const struct bchunk *c = &b->c[ci];

		bl = ci < NCH ? 0 : 1;
		base = bl == 0 ? (uint64_t)ci * IMG_CHUNK_BYTES : 0;
		for (pi = 0; pi < 64; pi++) {
			if (base + (pi + 1) * PAGE > used_of(bl))
				break;
			if (img_read_page(r, bl, base + pi * PAGE, page, &st,
			    &e) < 0) {
				note("%s: chunk %u page %u: %s", what, ci, pi,
				    e.msg);
				return 0;
			}
			wst = !(c->present >> pi & 1) ? IMG_PAGE_ABSENT :
			    c->zero >> pi & 1 ? IMG_PAGE_ZERO : IMG_PAGE_DATA;
			memset(want, 0, PAGE);
			if (wst == IMG_PAGE_DATA)
				page_fill(want, c->seed, ci, pi);
			if (st != wst || memcmp(page, want, PAGE) != 0) {
				note("%s: chunk %u page %u differs", what, ci,
				    pi);
				return 0;
			}
		}
	}
	return 1;
}

struct walk {
	uint64_t pages, sum;
};

static int
walk_fn(void *opaque, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct walk *w = opaque;

	w->pages++;
	w->sum = w->sum * 31 + block + offset + (data ? crc32c(0, data, PAGE) :
	    1);
	return 0;
}

/* Open name: NULL, with the error in msg when it fails. */
static struct img_reader *
open_name(const char *name, const struct img_pack_finder *f, char *msg,
    size_t msglen)
{
	char *path = tpath(name);
	struct err e = ERR_INIT;
	struct img_reader *r = img_open_finder(path, f, &e);

	snprintf(msg, msglen, "%s", r == NULL ? e.msg : "");
	free(path);
	return r;
}

/* Every check passes on name, and it reads as b. */
static void
all_good(const char *name, const struct bimg *b, const char *what)
{
	char msg[1024], *path = tpath(name);
	struct img_reader *r = open_name(name, NULL, msg, sizeof(msg));
	struct err e = ERR_INIT;
	struct walk w1 = { 0, 0 }, w2 = { 0, 0 };
	uint8_t *tail = NULL;
	size_t tlen = 0;

	if (!check(r != NULL, "%s: opens", what)) {
		note("%s", msg);
		free(path);
		return;
	}
	check(reads_as(r, b, what), "%s: every page reads as written", what);
	check(img_verify(r, &e) == 0, "%s: img_verify passes %s", what,
	    e.msg);
	check(img_verify_parallel(r, path, 3, &e) == 0,
	    "%s: img_verify_parallel passes %s", what, e.msg);
	check(img_check_frames(r, path, 2, &e) == 0,
	    "%s: img_check_frames passes %s", what, e.msg);
	check(img_foreach_page(r, walk_fn, &w1, &e) == 0 &&
	    img_foreach_page_parallel(r, 3, walk_fn, &w2, &e) == 0 &&
	    w1.pages == img_meta(r)->pages && w1.pages == w2.pages &&
	    w1.sum == w2.sum, "%s: foreach and foreach_parallel agree %s",
	    what, e.msg);
	check(img_read_tail(r, &tail, &tlen, &e) == 0 &&
	    tlen == sizeof(tail_text) && memcmp(tail, tail_text, tlen) == 0,
	    "%s: tail reads back", what);
	free(tail);
	img_close(r);
	free(path);
}

/* Opening name fails with a message holding want (and want2). */
static void
open_fails(const char *name, const struct img_pack_finder *f,
    const char *want, const char *want2, const char *what)
{
	char msg[1024];
	struct img_reader *r = open_name(name, f, msg, sizeof(msg));

	check(r == NULL && strstr(msg, want) != NULL &&
	    (want2 == NULL || strstr(msg, want2) != NULL),
	    "%s: refused (%s)", what, r ? "opened" : msg);
	img_close(r);
}

/* Built b at name, opening fails. */
static void
build_fails(struct bimg *b, const char *want, const char *what)
{
	write_file("bad.img", b->buf, b->len);
	open_fails("bad.img", NULL, want, NULL, what);
}

/* A finder that hands out a fixed file whatever is asked. */
static int
fixed_finder(void *opaque, const char *image_path,
    const uint8_t id[IMG_ID_SIZE], uint64_t file_size, const char *hint,
    struct err *e)
{
	char *path = tpath(opaque);
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		err_sys(e, ERR_FAIL, "cannot open '%s'", path);
	free(path);
	return fd;
}

/* A pack A, an image B sharing chunks 0, 1 and 5 of it; both written. */
static void
make_pair(struct bimg *a, struct bimg *b, int reverse)
{
	bimg_init(a, IMG_VERSION_2, 10, 0xa1);
	bimg_frames(a);
	bimg_build(a);
	bimg_init(b, IMG_VERSION_2, 10, 0xb2);
	b->c[4].seed = 99;		/* changed since A */
	b->reverse = reverse;
	bimg_frames(b);
	bimg_share(b, 0, 1, a);
	bimg_share(b, 1, 1, a);
	bimg_share(b, 5, 1, a);
	bimg_add_pack(b, a, "a.img");
	bimg_build(b);
	write_file("a.img", a->buf, a->len);
	write_file("b.img", b->buf, b->len);
}

static void
test_self_contained(void)
{
	struct bimg b;
	char msg[1024];
	struct img_reader *r;
	struct img_chunk_ref ref;
	const struct img_meta *m;

	bimg_init(&b, IMG_VERSION_2, 1, 0x11);
	bimg_frames(&b);
	bimg_build(&b);
	write_file("self.img", b.buf, b.len);
	all_good("self.img", &b, "v2 self-contained");
	r = open_name("self.img", NULL, msg, sizeof(msg));
	if (r != NULL) {
		m = img_meta(r);
		check(m->version == 2 && m->npacks == 0 &&
		    m->shared_chunks == 0 && m->shared_bytes == 0 &&
		    m->own_bytes == m->data_bytes && m->id[0] == 0x11 &&
		    img_nchunks(r) == NALL,
		    "v2 self-contained: metadata (own %llu, data %llu)",
		    (unsigned long long)m->own_bytes,
		    (unsigned long long)m->data_bytes);
		img_chunk_ref(r, 0, &ref);
		check(ref.has_hash && memcmp(ref.hash, b.c[0].hash,
		    IMG_HASH_SIZE) == 0 && ref.pack == 0 &&
		    ref.size == b.c[0].size && ref.crc == b.c[0].crc,
		    "v2: img_chunk_ref gives the entry");
		img_chunk_ref(r, 2, &ref);
		check(!ref.has_hash && ref.size == 0,
		    "v2: a chunk without a frame has no hash");
		img_close(r);
	}
	bimg_free(&b);

	bimg_init(&b, IMG_VERSION_2, 1, 0x12);
	b.reverse = 1;
	bimg_frames(&b);
	bimg_build(&b);
	check(b.c[0].off > b.c[1].off, "reverse: frames are in reverse order");
	write_file("rev.img", b.buf, b.len);
	all_good("rev.img", &b, "v2 frames in reverse order");
	bimg_free(&b);

	bimg_init(&b, IMG_VERSION, 1, 0);
	bimg_frames(&b);
	bimg_build(&b);
	write_file("v1.img", b.buf, b.len);
	all_good("v1.img", &b, "v1");
	r = open_name("v1.img", NULL, msg, sizeof(msg));
	if (r != NULL) {
		img_chunk_ref(r, 0, &ref);
		check(img_meta(r)->version == 1 && !ref.has_hash &&
		    img_meta(r)->own_bytes == 0,
		    "v1: no hashes, no version 2 fields");
		img_close(r);
	}
	bimg_free(&b);
}

static void
test_packs(void)
{
	struct bimg a, b;
	char msg[1024];
	struct img_reader *r;
	const struct img_meta *m;
	struct img_pack_info pi;
	struct img_chunk_ref ref;
	uint8_t frame[IMG_FRAME_MAX], out[IMG_CHUNK_BYTES];
	uint32_t fsize;
	uint64_t dm;
	struct err e = ERR_INIT;

	make_pair(&a, &b, 0);
	all_good("b.img", &b, "v2 with a pack beside it");
	r = open_name("b.img", NULL, msg, sizeof(msg));
	if (r != NULL) {
		m = img_meta(r);
		check(m->npacks == 1 && m->shared_chunks == 3 &&
		    m->shared_bytes == (uint64_t)a.c[0].size + a.c[1].size +
		    a.c[5].size && m->own_bytes == m->data_bytes &&
		    m->chunks == 5, "packs: own and shared counted");
		img_pack_info(r, 1, &pi);
		check(memcmp(pi.id, a.id, IMG_ID_SIZE) == 0 &&
		    pi.file_size == a.len && strcmp(pi.hint, "a.img") == 0 &&
		    pi.refs == 3, "packs: img_pack_info");
		img_chunk_ref(r, 1, &ref);
		check(ref.pack == 1 && ref.off == a.c[1].off,
		    "packs: img_chunk_ref names the pack");
		check(img_read_frame(r, 1, frame, &fsize, &e) == 0 &&
		    fsize == a.c[1].size && memcmp(frame, a.c[1].frame,
		    fsize) == 0, "packs: img_read_frame reads the pack's "
		    "frame %s", e.msg);
		check(img_read_chunk(r, 5, out, &dm, &e) == 0 &&
		    dm == (a.c[5].present & ~a.c[5].zero),
		    "packs: img_read_chunk %s", e.msg);
		check(img_read_frame(r, 2, frame, &fsize, &e) == 0 &&
		    fsize == 0, "packs: no frame, size 0");
		check(img_read_chunk(r, NALL, out, &dm, &e) < 0 &&
		    img_read_frame(r, NALL, frame, &fsize, &e) < 0,
		    "packs: a chunk past the end is an error: %s", e.msg);
		err_clear(&e);
		img_pack_info(r, 2, &pi);
		img_chunk_ref(r, NALL, &ref);
		check(pi.file_size == 0 && pi.refs == 0 && ref.size == 0 &&
		    ref.present == 0, "packs: a pack or chunk past the end "
		    "reads as zero");
		img_close(r);
	}
	bimg_free(&a);
	bimg_free(&b);

	/* a finder of one's own, kept for img_verify_parallel()'s readers */
	make_pair(&a, &b, 0);
	{
		char *ap = tpath("a.img"), *hp = tpath("elsewhere.img");
		char *bp = tpath("b.img");
		struct img_pack_finder f = { fixed_finder, NULL };

		rename(ap, hp);
		f.opaque = (void *)"elsewhere.img";
		open_fails("b.img", NULL, "not found", NULL,
		    "the default finder does not look elsewhere");
		r = img_open_finder(bp, &f, &e);
		check(r != NULL && img_verify_parallel(r, bp, 3, &e) == 0 &&
		    reads_as(r, &b, "own finder"),
		    "own finder: opens, img_verify_parallel's readers use it "
		    "too %s", e.msg);
		err_clear(&e);
		img_close(r);
		rename(hp, ap);
		free(ap);
		free(hp);
		free(bp);
	}
	bimg_free(&a);
	bimg_free(&b);

	make_pair(&a, &b, 1);
	all_good("b.img", &b, "v2 with a pack, own frames reversed");
	bimg_free(&a);
	bimg_free(&b);
}

static void
test_pack_errors(void)
{
	struct bimg a, b, c;
	struct img_pack_finder f = { fixed_finder, NULL };
	char *path;
	struct img_reader *r;
	struct err e = ERR_INIT;
	uint8_t *p;

	/* pack missing */
	make_pair(&a, &b, 0);
	path = tpath("a.img");
	unlink(path);
	open_fails("b.img", NULL, "pack 'a.img' (image a1a1a1a1", "not found",
	    "pack missing");
	/* another image under its name */
	bimg_init(&c, IMG_VERSION_2, 10, 0xc3);
	bimg_frames(&c);
	bimg_build(&c);
	write_file("a.img", c.buf, c.len);
	open_fails("b.img", NULL, "a.img", "its id and size",
	    "pack id mismatch (default finder)");
	write_file("c.img", c.buf, c.len);
	f.opaque = (void *)"c.img";
	open_fails("b.img", &f, "another image", "pack 1 'a.img'",
	    "pack id mismatch (a finder that does not check)");
	/* same id, other size */
	write_file("a.img", a.buf, a.len - 1);
	open_fails("b.img", NULL, "not found", NULL, "pack size mismatch");
	p = xmalloc(a.len + 100);
	memcpy(p, a.buf, a.len);
	memset(p + a.len, 0, 100);
	write_file("a2.img", p, a.len + 100);
	free(p);
	f.opaque = (void *)"a2.img";
	open_fails("b.img", &f, "pack 1", NULL,
	    "pack size mismatch (a finder that does not check)");
	/* pack in .packs of the directory above */
	{
		char *d = tpath("sub"), *pk = xasprintf("%s/../.packs", d);
		char hex[40], *pp;
		unsigned i;

		mkdir(d, 0700);
		mkdir(pk, 0700);
		for (i = 0; i < IMG_ID_SIZE; i++)
			snprintf(hex + 2 * i, 3, "%02x", a.id[i]);
		pp = xasprintf("%s/%s.img", pk, hex);
		unlink(pp);
		{
			int fd = open(pp, O_WRONLY | O_CREAT | O_TRUNC, 0600);

			if (fd < 0 || write_full(fd, a.buf, a.len) < 0)
				abort();
			close(fd);
		}
		write_file("sub/b.img", b.buf, b.len);
		r = open_name("sub/b.img", NULL, (char[1024]){ 0 }, 1024);
		check(r != NULL && reads_as(r, &b, "packs in .packs"),
		    "default finder: pack found in ../.packs/<id>.img");
		img_close(r);
		unlink(pp);
		free(pp);
		free(pk);
		free(d);
	}
	/* a pack frame corrupted: CRC error naming the pack */
	memcpy(c.buf, a.buf, 0);
	p = xmalloc(a.len);
	memcpy(p, a.buf, a.len);
	p[a.c[1].off + a.c[1].size / 2] ^= 0x40;
	write_file("a.img", p, a.len);
	free(p);
	r = open_name("b.img", NULL, (char[1024]){ 0 }, 1024);
	if (check(r != NULL, "corrupt pack frame: opens (frames are read "
	    "lazily)")) {
		uint8_t page[PAGE];
		enum img_page_state st;
		char *bp = tpath("b.img");

		check(img_read_page(r, 0, IMG_CHUNK_BYTES + 0x30 * PAGE,
		    page, &st, &e) < 0 && strstr(e.msg, "CRC") &&
		    strstr(e.msg, "pack 1 'a.img'") && strstr(e.msg, "chunk 1"),
		    "corrupt pack frame: read fails naming the pack: %s",
		    e.msg);
		err_clear(&e);
		check(img_verify(r, &e) < 0 && strstr(e.msg, "'a.img'"),
		    "corrupt pack frame: img_verify fails: %s", e.msg);
		err_clear(&e);
		check(img_check_frames(r, bp, 1, &e) < 0 &&
		    strstr(e.msg, "'a.img'"),
		    "corrupt pack frame: img_check_frames fails: %s", e.msg);
		err_clear(&e);
		check(img_verify_parallel(r, bp, 3, &e) < 0 &&
		    strstr(e.msg, "'a.img'"),
		    "corrupt pack frame: img_verify_parallel fails: %s",
		    e.msg);
		err_clear(&e);
		free(bp);
	}
	img_close(r);
	bimg_free(&c);
	bimg_free(&b);
	bimg_free(&a);
	free(path);

	/* the hash of the referring entry (and the pack's) is wrong */
	bimg_init(&a, IMG_VERSION_2, 10, 0xa1);
	bimg_frames(&a);
	a.c[0].hash[5] ^= 1;
	bimg_build(&a);
	write_file("a.img", a.buf, a.len);
	bimg_init(&b, IMG_VERSION_2, 10, 0xb2);
	bimg_frames(&b);
	bimg_share(&b, 0, 1, &a);
	bimg_add_pack(&b, &a, "a.img");
	bimg_build(&b);
	write_file("b.img", b.buf, b.len);
	r = open_name("b.img", NULL, (char[1024]){ 0 }, 1024);
	if (check(r != NULL, "wrong hash: opens")) {
		uint8_t page[PAGE];
		enum img_page_state st;

		check(img_read_page(r, 0, 0x10 * PAGE, page, &st, &e) < 0 &&
		    strstr(e.msg, hash_flag ? "does not match its hash (blake3)" :
		    "does not match its hash (sha256)") &&
		    strstr(e.msg, "'a.img'"),
		    "wrong hash: read through the reference fails: %s",
		    e.msg);
		err_clear(&e);
	}
	img_close(r);
	{
		/* the pack itself fails verify (hash of its own frame) */
		char *ap = tpath("a.img");

		r = img_open(ap, &e);
		check(r != NULL && img_verify(r, &e) < 0 &&
		    strstr(e.msg, "does not match its hash ("),
		    "wrong hash: verify of the pack checks its own hashes: "
		    "%s", e.msg);
		img_close(r);
		err_clear(&e);
		free(ap);
	}
	/* referring entry's hash differs from the pack's */
	b.c[0].hash[0] ^= 1;
	bimg_build(&b);
	build_fails(&b, "differs", "hash differs from the pack's entry");
	b.c[0].hash[0] ^= 1;
	b.c[0].crc ^= 1;
	bimg_build(&b);
	build_fails(&b, "differs", "CRC differs from the pack's entry");
	b.c[0].crc ^= 1;
	b.c[0].off += 1;
	bimg_build(&b);
	build_fails(&b, "no frame of its own", "offset names no frame");
	bimg_free(&b);
	bimg_free(&a);

	/* two hops: C names B's reference to A */
	make_pair(&a, &b, 0);
	bimg_init(&c, IMG_VERSION_2, 10, 0xc3);
	bimg_frames(&c);
	bimg_share(&c, 1, 1, &b);	/* b.c[1] is a reference to a */
	bimg_add_pack(&c, &b, "b.img");
	bimg_build(&c);
	build_fails(&c, "pack 1 'b.img'", "two-hop reference");
	bimg_free(&c);
	bimg_free(&b);
	bimg_free(&a);

	/* an image in memory cannot find its packs */
	make_pair(&a, &b, 0);
	{
		struct mem mm = { b.buf, b.len };
		struct img_io io = { mem_pread, 0, NULL };

		io.size = b.len;
		io.opaque = &mm;
		r = img_open_io(&io, &e);
		check(r == NULL && strstr(e.msg, "pack 1 'a.img'"),
		    "img_open_io: an image naming packs is refused: %s",
		    e.msg);
		img_close(r);
		err_clear(&e);
	}
	bimg_free(&b);
	bimg_free(&a);
}

static void
test_malformed(void)
{
	struct bimg a, b;
	uint8_t *p;

	make_pair(&a, &b, 0);
	/* npacks without flag 0x8 */
	b.flags &= ~IMG_F_PACKS;
	bimg_build(&b);
	build_fails(&b, "number of packs", "npacks without flag 0x8");
	b.flags |= IMG_F_PACKS;
	b.npacks_field = 2;
	bimg_build(&b);
	build_fails(&b, "pack table is truncated", "npacks beyond the table");
	b.npacks_field = 70000;
	bimg_build(&b);
	build_fails(&b, "number of packs", "npacks > 65535");
	b.npacks_field = 0;
	bimg_build(&b);
	build_fails(&b, "number of packs", "flag 0x8 with npacks 0");
	b.npacks_field = -1;
	/* names */
	snprintf(b.packs[0].hint, sizeof(b.packs[0].hint), "x/a.img");
	bimg_build(&b);
	build_fails(&b, "pack 1: bad name", "pack name with '/'");
	snprintf(b.packs[0].hint, sizeof(b.packs[0].hint), "..");
	bimg_build(&b);
	build_fails(&b, "pack 1: bad name", "pack name '..'");
	snprintf(b.packs[0].hint, sizeof(b.packs[0].hint), "a.img");
	/* ids */
	b.packs[1] = b.packs[0];
	b.npacks = 2;
	bimg_build(&b);
	build_fails(&b, "listed twice", "duplicate pack id");
	b.npacks = 1;
	memcpy(b.packs[0].id, b.id, IMG_ID_SIZE);
	bimg_build(&b);
	build_fails(&b, "bad image id", "pack id equal to the image's own");
	memcpy(b.packs[0].id, a.id, IMG_ID_SIZE);
	memset(b.id, 0, IMG_ID_SIZE);
	bimg_build(&b);
	build_fails(&b, "image id is all zero", "own id all zero");
	memset(b.id, 0xb2, IMG_ID_SIZE);
	/* entry naming a pack past the table */
	b.c[0].pack = 2;
	bimg_build(&b);
	build_fails(&b, "not in the pack table", "entry naming pack > npacks");
	b.c[0].pack = 1;
	/* entry reserved bytes */
	bimg_build(&b);
	bentry(&b, 3)[IMG_ENTRY_RESERVED3] = 1;
	fix_crcs(b.buf);
	build_fails(&b, "reserved", "entry reserved bytes");
	/* hash without a frame */
	bimg_build(&b);
	bentry(&b, 2)[IMG_ENTRY_HASH] = 1;
	fix_crcs(b.buf);
	build_fails(&b, "without a frame", "hash on a chunk without a frame");
	/* metadata reserved bytes */
	bimg_build(&b);
	b.buf[IMG_HDR_SIZE + IMG_SKIP_SIZE + IMG_META_RESERVED_V2 + 3] = 1;
	fix_crcs(b.buf);
	build_fails(&b, "reserved metadata", "metadata reserved bytes");
	/* version 2 without frame CRCs, unknown flags, v1 with flag 0x8 */
	b.flags &= ~IMG_F_FRAME_CRCS;
	bimg_build(&b);
	build_fails(&b, "without frame CRCs", "v2 without flag 0x4");
	b.flags |= IMG_F_FRAME_CRCS | 0x40;
	bimg_build(&b);
	build_fails(&b, "unknown image flags", "v2 unknown flag 0x40");
	b.flags &= ~0x40u;
	bimg_free(&b);
	bimg_free(&a);

	/* gap and overlap in the data region */
	bimg_init(&b, IMG_VERSION_2, 1, 0x11);
	b.reverse = 1;
	bimg_frames(&b);
	bimg_build(&b);
	put_le64(bentry(&b, 1) + IMG_ENTRY_FRAME_OFF, b.c[1].off + 1);
	fix_crcs(b.buf);
	build_fails(&b, "gap", "gap in the data region");
	bimg_build(&b);
	put_le64(bentry(&b, 1) + IMG_ENTRY_FRAME_OFF, b.c[1].off - 1);
	fix_crcs(b.buf);
	build_fails(&b, "overlaps", "overlap in the data region");
	bimg_build(&b);
	put_le64(bentry(&b, 0) + IMG_ENTRY_FRAME_OFF, b.c[1].off);
	fix_crcs(b.buf);
	build_fails(&b, "overlaps", "two entries, one frame offset");
	/* frame past the tail offset */
	bimg_build(&b);
	put_le32(bentry(&b, 0) + IMG_ENTRY_FRAME_SIZE, b.c[0].size + 1);
	fix_crcs(b.buf);
	build_fails(&b, "index entry 0", "last frame runs into the tail");
	/* holes (flag 0x20): gaps of junk are never read; overlap and a
	 * frame into the tail are still refused */
	b.gap = 5000;
	bimg_build(&b);
	build_fails(&b, "gap", "gaps without flag 0x20");
	b.flags |= IMG_F_HOLES;
	bimg_build(&b);
	write_file("holes.img", b.buf, b.len);
	all_good("holes.img", &b, "v2 with holes (flag 0x20)");
	put_le64(bentry(&b, 1) + IMG_ENTRY_FRAME_OFF, b.c[1].off - 5001);
	fix_crcs(b.buf);
	build_fails(&b, "overlaps", "holes: overlap still refused");
	bimg_build(&b);
	put_le32(bentry(&b, 0) + IMG_ENTRY_FRAME_SIZE, b.c[0].size + 1);
	fix_crcs(b.buf);
	build_fails(&b, "index entry 0", "holes: last frame runs into the "
	    "tail");
	b.gap = 0;
	b.flags &= ~IMG_F_HOLES;
	/* truncated, extended */
	bimg_build(&b);
	build_fails(&(struct bimg){ .buf = b.buf, .len = b.len - 1 },
	    "truncated", "truncated by one byte");
	p = xcalloc(1, b.len + 1);
	memcpy(p, b.buf, b.len);
	build_fails(&(struct bimg){ .buf = p, .len = b.len + 1 },
	    "truncated or extended", "extended by one byte");
	free(p);
	/* version 3 */
	b.version = 3;
	bimg_build(&b);
	build_fails(&b, "unsupported image version 3", "version 3");
	bimg_free(&b);
}

/* img_write_standalone(): a copy that reads the same, no packs, new id. */
static void
test_standalone(void)
{
	struct bimg a, b;
	char *bp = tpath("b.img"), *sp = tpath("s.img"), *ap = tpath("a.img");
	char *vp = tpath("v1.img"), *vs = tpath("v1s.img");
	struct img_reader *r, *s;
	struct err e = ERR_INIT;
	struct stat st;
	struct walk w1 = { 0, 0 }, w2 = { 0, 0 };

	make_pair(&a, &b, 1);
	r = img_open(bp, &e);
	unlink(sp);
	check(r != NULL && img_write_standalone(r, sp, &e) == 0,
	    "standalone: written %s", e.msg);
	check(stat(sp, &st) == 0 && (st.st_mode & 0777) == 0600,
	    "standalone: mode 0600");
	unlink(ap);			/* it must not need the pack */
	s = img_open(sp, &e);
	if (check(s != NULL, "standalone: opens without the pack %s", e.msg)) {
		const struct img_meta *m = img_meta(s);

		check(m->version == 2 && m->npacks == 0 &&
		    !(m->flags & IMG_F_PACKS) && m->shared_chunks == 0 &&
		    memcmp(m->id, b.id, IMG_ID_SIZE) != 0 &&
		    memcmp(m->id, a.id, IMG_ID_SIZE) != 0,
		    "standalone: no packs, a new id");
		check(reads_as(s, &b, "standalone"), "standalone: reads as "
		    "the original");
		check(img_verify(s, &e) == 0, "standalone: verifies %s",
		    e.msg);
		check(img_foreach_page(r, walk_fn, &w1, &e) == 0 &&
		    img_foreach_page(s, walk_fn, &w2, &e) == 0 &&
		    w1.sum == w2.sum && w1.pages == w2.pages,
		    "standalone: every page as the original's");
		check(img_meta(s)->pages == img_meta(r)->pages &&
		    img_meta(s)->zero_pages == img_meta(r)->zero_pages &&
		    img_meta(s)->chunks == img_meta(r)->chunks &&
		    strcmp(img_meta(s)->machine, img_meta(r)->machine) == 0,
		    "standalone: same metadata");
	}
	check(img_write_standalone(r, sp, &e) < 0 &&
	    strstr(e.msg, "exists"), "standalone: an existing path is "
	    "refused: %s", e.msg);
	err_clear(&e);
	img_close(s);
	img_close(r);
	bimg_free(&a);
	bimg_free(&b);

	/* from version 1 */
	bimg_init(&b, IMG_VERSION, 1, 0);
	bimg_frames(&b);
	bimg_build(&b);
	write_file("v1.img", b.buf, b.len);
	unlink(vs);
	r = img_open(vp, &e);
	check(r != NULL && img_write_standalone(r, vs, &e) == 0,
	    "standalone from v1: written %s", e.msg);
	s = img_open(vs, &e);
	check(s != NULL && img_meta(s)->version == 2 &&
	    reads_as(s, &b, "standalone v1") && img_verify(s, &e) == 0,
	    "standalone from v1: a version 2 copy that reads the same and "
	    "verifies (hashes computed) %s", e.msg);
	img_close(s);
	/* failure leaves nothing */
	{
		char *np = tpath("nodir/x.img");

		check(img_write_standalone(r, np, &e) < 0 &&
		    access(np, F_OK) < 0, "standalone: failure leaves "
		    "nothing: %s", e.msg);
		err_clear(&e);
		free(np);
	}
	img_close(r);
	bimg_free(&b);
	free(bp);
	free(sp);
	free(ap);
	free(vp);
	free(vs);
}

static void
hex32(const uint8_t *h, char *out)
{
	unsigned i;

	for (i = 0; i < IMG_HASH_SIZE; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/*
 * The chunk hashes against digests from other implementations (b3sum, the
 * BLAKE3 team's Rust code; sha256sum) of the same bytes, and
 * img_hash_pages() (runs of pages in place) against img_hash_chunk()
 * (packed) for many masks.
 */
static void
test_hash_known(void)
{
	static const char *want_b3 =
	    "cac2ff98deeb2453e389217a278102ab8afbd02f9b97fb5d7c45c3d16aab8410";
	static const char *want_sha =
	    "8b952dccdae8c14f59c473d945cbc0df2aaeb80b368045afe11c5e96340073fe";
	static const char *want_b3_empty =
	    "71e0a99173564931c0b8acc52d2685a8e39c64dc52e3d02390fdac2a12b155cb";
	static const unsigned pages[3] = { 0, 2, 63 };
	const uint64_t mask = 0x8000000000000005ull;
	uint8_t *chunk = xcalloc(1, IMG_CHUNK_BYTES);
	uint8_t *packed = xcalloc(1, IMG_CHUNK_BYTES);
	uint8_t h1[IMG_HASH_SIZE], h2[IMG_HASH_SIZE];
	char hex[2 * IMG_HASH_SIZE + 1];
	struct img_hasher *b3 = img_hasher_new(IMG_HASH_BLAKE3);
	struct img_hasher *sha = img_hasher_new(IMG_HASH_SHA256);
	uint64_t m, seed = 0x9e3779b97f4a7c15ull;
	size_t i, j, n;
	int k, same;

	if (!check(b3 != NULL && sha != NULL, "hashers"))
		goto out;
	for (i = 0; i < 3; i++)
		for (j = 0; j < PAGE; j++)
			packed[i * PAGE + j] = (uint8_t)(j * 31 + pages[i]);
	img_hash_chunk(b3, mask, packed, 3 * PAGE, h1);
	hex32(h1, hex);
	check(strcmp(hex, want_b3) == 0, "BLAKE3(content || le64(mask)) is "
	    "b3sum's: %s", hex);
	img_hash_chunk(sha, mask, packed, 3 * PAGE, h1);
	hex32(h1, hex);
	check(strcmp(hex, want_sha) == 0, "SHA-256(le64(mask) || content) "
	    "is sha256sum's: %s", hex);
	img_hash_pages(b3, 0, chunk, h1);
	hex32(h1, hex);
	check(strcmp(hex, want_b3_empty) == 0, "BLAKE3 of an empty mask: %s",
	    hex);

	for (i = 0; i < IMG_CHUNK_BYTES; i++)
		chunk[i] = (uint8_t)(i * 2654435761u >> 13);
	same = 1;
	for (k = 0; k < 400; k++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		m = k == 0 ? ~0ull : k == 1 ? 1ull << 63 : k == 2 ? 1 :
		    k < 200 ? seed : seed & (seed >> 7) & (seed << 3);
		for (n = 0, j = 0; j < 64; j++)
			if (m >> j & 1)
				memcpy(packed + n++ * PAGE, chunk + j * PAGE,
				    PAGE);
		img_hash_pages(b3, m, chunk, h1);
		img_hash_chunk(b3, m, packed, n * PAGE, h2);
		same &= memcmp(h1, h2, IMG_HASH_SIZE) == 0;
		img_hash_pages(sha, m, chunk, h1);
		img_hash_chunk(sha, m, packed, n * PAGE, h2);
		same &= memcmp(h1, h2, IMG_HASH_SIZE) == 0;
	}
	check(same, "img_hash_pages equals img_hash_chunk of the packed pages "
	    "for 400 masks, both algorithms");
out:
	img_hasher_free(b3);
	img_hasher_free(sha);
	free(chunk);
	free(packed);
}

/*
 * Hash algorithms do not mix: a BLAKE3 image naming a SHA-256 pack (or the
 * other way round) is refused, whatever the entries say; version 1 knows
 * no flag 0x10.
 */
static void
test_hash_mixed(void)
{
	struct bimg a, b;
	char want[100], what[100];
	uint32_t pack_flag;
	int k;

	for (k = 0; k < 2; k++) {
		pack_flag = k == 0 ? 0 : IMG_F_BLAKE3;
		hash_flag = pack_flag;
		bimg_init(&a, IMG_VERSION_2, 10, 0xa1);
		bimg_frames(&a);
		bimg_build(&a);
		write_file("a.img", a.buf, a.len);
		hash_flag = pack_flag ^ IMG_F_BLAKE3;
		bimg_init(&b, IMG_VERSION_2, 10, 0xb2);
		bimg_frames(&b);
		bimg_share(&b, 0, 1, &a);
		bimg_add_pack(&b, &a, "a.img");
		bimg_build(&b);
		snprintf(want, sizeof(want), "its chunk hashes are %s, the "
		    "image's %s", k == 0 ? "sha256" : "blake3",
		    k == 0 ? "blake3" : "sha256");
		snprintf(what, sizeof(what), "a %s image naming a %s pack",
		    k == 0 ? "BLAKE3" : "SHA-256", k == 0 ? "SHA-256" : "BLAKE3");
		build_fails(&b, want, what);
		bimg_free(&a);
		bimg_free(&b);
	}

	bimg_init(&b, IMG_VERSION, 1, 0);
	b.flags |= IMG_F_BLAKE3;
	bimg_frames(&b);
	bimg_build(&b);
	build_fails(&b, "unknown image flags", "v1 with flag 0x10");
	bimg_free(&b);
}

static void
rm_tree(const char *dir)
{
	char *cmd = xasprintf("rm -rf '%s'", dir);

	if (system(cmd) != 0)
		note("cannot remove %s", dir);
	free(cmd);
}

int
main(void)
{
	char tmpl[] = "/tmp/snapctl-imgv2.XXXXXX";

	if ((tmpdir = mkdtemp(tmpl)) == NULL)
		return 1;
	test_hash_known();
	for (hash_flag = IMG_F_BLAKE3;; hash_flag = 0) {
		note("version 2 images with %s chunk hashes",
		    img_hash_name(img_hash_algo_of(hash_flag)));
		test_self_contained();
		test_packs();
		test_pack_errors();
		test_malformed();
		test_standalone();
		if (hash_flag == 0)
			break;
	}
	test_hash_mixed();
	rm_tree(tmpdir);
	return tap_done();
}
