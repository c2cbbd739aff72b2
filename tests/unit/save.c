/*
 * tests/unit/save.c - the compact image: a model-based round trip through
 * writer and reader (evictions, merges, redirtied and rezeroed pages),
 * compaction, corruption of every region, crash safety and a full disk.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgcheck.h"
#include "save.h"
#include "util.h"
#include "tap.h"

#define PAGE IMG_PAGE_SIZE


static uint64_t
rnd(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Page contents from a seed: text-like, random or one fill byte. */
static void
fill(uint8_t *p, uint64_t seed)
{
	static const char *const words[] = {
		"guest ", "kernel ", "page ", "dirty ", "inode ", "0x7f3a",
		"\n", "struct ", "return ", "NULL ",
	};
	uint64_t s = seed * 0x9e3779b97f4a7c15ull | 1;
	size_t n = 0, len;
	const char *w;

	switch (seed % 5) {
	case 0:
		for (n = 0; n < PAGE; n += 8) {
			uint64_t v = rnd(&s);
			memcpy(p + n, &v, 8);
		}
		break;
	case 1:
		memset(p, (int)(seed % 255) + 1, PAGE);
		break;
	default:
		while (n < PAGE) {
			w = words[rnd(&s) % ARRAY_SIZE(words)];
			len = strlen(w);
			if (len > PAGE - n)
				len = PAGE - n;
			memcpy(p + n, w, len);
			n += len;
		}
	}
}

static char *tmpdir;

static char *
tpath(const char *name)
{
	return xasprintf("%s/%s", tmpdir, name);
}

/* Names in tmpdir (not "." or ".."). */
static int
dir_count(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..")
		    != 0)
			n++;
	closedir(d);
	return n;
}

static void
rm_rf_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char *p;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' && (de->d_name[1] == '\0' ||
		    (de->d_name[1] == '.' && de->d_name[2] == '\0')))
			continue;
		p = xasprintf("%s/%s", dir, de->d_name);
		unlink(p);
		free(p);
	}
	closedir(d);
}

/*
 * The model: per page its state and the seed of its contents; pages are
 * regenerated from seeds when compared.
 */
struct model {
	struct stream_block *blocks;
	size_t nblocks;
	uint64_t *first;	/* first page of each block */
	uint64_t npages;
	uint8_t *state;		/* enum img_page_state */
	uint64_t *seed;
};

static void
model_init(struct model *m, const uint64_t *lens, const char *const *names,
    size_t n)
{
	size_t i;

	memset(m, 0, sizeof(*m));
	m->blocks = xcalloc(n, sizeof(*m->blocks));
	m->first = xcalloc(n + 1, sizeof(*m->first));
	m->nblocks = n;
	for (i = 0; i < n; i++) {
		snprintf(m->blocks[i].name, sizeof(m->blocks[i].name), "%s",
		    names[i]);
		m->blocks[i].used_length = lens[i];
		if (i == 1) {
			m->blocks[i].has_mr_addr = 1;
			m->blocks[i].mr_addr = 0xfd000000;
		}
		m->first[i] = m->npages;
		m->npages += lens[i] / PAGE;
	}
	m->first[n] = m->npages;
	m->state = xcalloc(m->npages, 1);
	m->seed = xcalloc(m->npages, sizeof(*m->seed));
}

static void
model_free(struct model *m)
{
	free(m->blocks);
	free(m->first);
	free(m->state);
	free(m->seed);
}

static uint32_t
model_block(const struct model *m, uint64_t pg)
{
	uint32_t b = 0;

	while (pg >= m->first[b + 1])
		b++;
	return b;
}

/* Send page pg: zero (maybe as an all-zero data page) or new contents. */
static int
model_send(struct model *m, struct img_writer *w, uint64_t pg, uint64_t *rs,
    struct err *e)
{
	const struct stream_sink *sink = img_writer_sink();
	uint8_t buf[PAGE];
	uint32_t b = model_block(m, pg);
	uint64_t off = (pg - m->first[b]) * PAGE, r = rnd(rs);

	if (r % 10 < 3) {
		m->state[pg] = IMG_PAGE_ZERO;
		if (r % 20 == 1) {
			memset(buf, 0, PAGE);
			return sink->page(w, b, off, buf, e);
		}
		return sink->page(w, b, off, NULL, e);
	}
	m->state[pg] = IMG_PAGE_DATA;
	m->seed[pg] = rnd(rs);
	fill(buf, m->seed[pg]);
	return sink->page(w, b, off, buf, e);
}

static const uint8_t config_bytes[] = {
	0x07, 0, 0, 0, 0, 13, 'c', 'o', 'n', 'f', 'i', 'g', 'u', 'r', 'a', 't',
	'i', 'o', 'n', 0, 0, 0, 0, 0, 0, 0, 0, 10, 'p', 'c', '-', 'q', '3', '5',
	'-', '7', '.', '2',
};

static int
send_head(struct img_writer *w, const struct model *m, struct err *e)
{
	const struct stream_sink *sink = img_writer_sink();

	if (sink->config(w, config_bytes, sizeof(config_bytes), "pc-q35-7.2",
	    e) < 0)
		return -1;
	if (sink->blocks(w, m->blocks, m->nblocks, 2, e) < 0)
		return -1;
	return sink->section(w, 1, e);
}

static uint8_t tail_bytes[3000];

static int
send_end(struct img_writer *w, int switchover, struct err *e)
{
	const struct stream_sink *sink = img_writer_sink();
	size_t i;

	for (i = 0; i < sizeof(tail_bytes); i++)
		tail_bytes[i] = (uint8_t)(i * 7 + i / 100);
	if (switchover && sink->switchover(w, e) < 0)
		return -1;
	if (sink->section(w, 3, e) < 0)
		return -1;
	return sink->tail(w, tail_bytes, sizeof(tail_bytes), e);
}

/* Feed the model's passes to a new writer at path; commit. */
static int
model_run(struct model *m, const char *path, const struct img_opts *o,
    uint64_t seed, struct img_stats *st, struct err *e)
{
	struct img_writer *w;
	uint64_t rs = seed | 1, pg, i;
	int rc = -1, pass;

	if ((w = img_writer_new(path, o, e)) == NULL)
		return -1;
	if (send_head(w, m, e) < 0)
		goto out;
	/* Pass 1: every page but a few, in order. */
	for (pg = 0; pg < m->npages; pg++)
		if (rnd(&rs) % 20 != 0 && model_send(m, w, pg, &rs, e) < 0)
			goto out;
	/* Passes 2, 3: a random half, in order (QEMU's dirty bitmap walk). */
	for (pass = 0; pass < 2; pass++) {
		if (img_writer_sink()->section(w, 2, e) < 0)
			goto out;
		for (pg = 0; pg < m->npages; pg++)
			if (rnd(&rs) % 2 == 0 &&
			    model_send(m, w, pg, &rs, e) < 0)
				goto out;
	}
	/* Then random redirties, in random order, some of them twice. */
	for (i = 0; i < m->npages; i++) {
		pg = rnd(&rs) % m->npages;
		if (model_send(m, w, pg, &rs, e) < 0)
			goto out;
	}
	if (send_end(w, 1, e) < 0)
		goto out;
	if (img_writer_commit(w, st, e) < 0)
		goto out;
	rc = 0;
out:
	img_writer_free(w);
	return rc;
}

struct walk {
	const struct model *m;
	uint64_t next;		/* next present page expected */
	int bad;
};

static int
walk_fn(void *opaque, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct walk *wk = opaque;
	const struct model *m = wk->m;
	uint8_t want[PAGE];
	uint64_t pg = m->first[block] + offset / PAGE;

	while (wk->next < m->npages && m->state[wk->next] == IMG_PAGE_ABSENT)
		wk->next++;
	if (pg != wk->next) {
		if (!wk->bad)
			note("foreach: page %llu, expected %llu",
			    (unsigned long long)pg,
			    (unsigned long long)wk->next);
		wk->bad = 1;
		return 0;
	}
	wk->next++;
	if ((data == NULL) != (m->state[pg] == IMG_PAGE_ZERO)) {
		wk->bad = 1;
		return 0;
	}
	if (data != NULL) {
		fill(want, m->seed[pg]);
		if (memcmp(want, data, PAGE) != 0)
			wk->bad = 1;
	}
	return 0;
}

static void
model_check(struct model *m, const char *path, const char *what)
{
	struct err e = ERR_INIT;
	struct img_reader *r;
	const struct img_meta *mt;
	enum img_page_state state;
	uint8_t got[PAGE], want[PAGE], *tail = NULL, *rbuf, *wbuf;
	uint64_t pg, npresent = 0, nzero = 0, rs = 7, off, len;
	uint32_t b;
	size_t i, tlen = 0;
	int bad = 0;
	struct walk wk;

	r = img_open(path, &e);
	check(r != NULL, "%s: image opens (%s)", what, e.msg);
	if (r == NULL)
		return;
	mt = img_meta(r);
	check(mt->version == IMG_VERSION_2 &&
	    mt->flags == (IMG_F_SWITCHOVER_START | IMG_F_FRAME_CRCS |
	    IMG_F_BLAKE3) &&
	    strcmp(mt->machine, "pc-q35-7.2") == 0 && mt->ram_section_id == 2,
	    "%s: version, flags, machine, section id", what);
	check(mt->config_len == sizeof(config_bytes) &&
	    memcmp(mt->config, config_bytes, sizeof(config_bytes)) == 0,
	    "%s: configuration section round-trips", what);
	bad = mt->nblocks != m->nblocks;
	for (i = 0; !bad && i < m->nblocks; i++)
		bad = strcmp(mt->blocks[i].name, m->blocks[i].name) != 0 ||
		    mt->blocks[i].used_length != m->blocks[i].used_length ||
		    mt->blocks[i].has_mr_addr != m->blocks[i].has_mr_addr ||
		    mt->blocks[i].mr_addr != m->blocks[i].mr_addr;
	check(!bad, "%s: block table round-trips", what);
	for (pg = 0; pg < m->npages; pg++) {
		npresent += m->state[pg] != IMG_PAGE_ABSENT;
		nzero += m->state[pg] == IMG_PAGE_ZERO;
	}
	check(mt->pages == npresent && mt->zero_pages == nzero,
	    "%s: %llu pages, %llu zero, as the model", what,
	    (unsigned long long)mt->pages, (unsigned long long)mt->zero_pages);

	bad = 0;
	for (pg = 0; pg < m->npages && !bad; pg++) {
		b = model_block(m, pg);
		memset(got, 0xee, PAGE);
		if (img_read_page(r, b, (pg - m->first[b]) * PAGE, got, &state,
		    &e) < 0) {
			note("page %llu: %s", (unsigned long long)pg, e.msg);
			bad = 1;
			break;
		}
		if (state != m->state[pg]) {
			note("page %llu: state %d, model %d",
			    (unsigned long long)pg, state, m->state[pg]);
			bad = 1;
		}
		if (m->state[pg] == IMG_PAGE_DATA)
			fill(want, m->seed[pg]);
		else
			memset(want, 0, PAGE);
		if (memcmp(got, want, PAGE) != 0) {
			note("page %llu: contents differ",
			    (unsigned long long)pg);
			bad = 1;
		}
	}
	check(!bad, "%s: every page's state and contents equal the model's "
	    "newest", what);

	wk.m = m;
	wk.next = 0;
	wk.bad = 0;
	check(img_foreach_page(r, walk_fn, &wk, &e) == 0 && !wk.bad,
	    "%s: foreach visits exactly the present pages in order", what);
	while (wk.next < m->npages && m->state[wk.next] == IMG_PAGE_ABSENT)
		wk.next++;
	check(wk.next == m->npages, "%s: foreach reaches the end", what);
	for (i = 2; i <= 4; i++) {
		wk.next = 0;
		wk.bad = 0;
		check(img_foreach_page_parallel(r, (int)i, walk_fn, &wk, &e) ==
		    0 && !wk.bad, "%s: foreach on %zu threads visits exactly "
		    "the present pages in order (%s)", what, i, e.msg);
	}

	/* Random byte ranges across page and chunk boundaries. */
	bad = 0;
	rbuf = xmalloc(3 * 262144);
	wbuf = xmalloc(3 * 262144);
	for (i = 0; i < 40 && !bad; i++) {
		b = (uint32_t)(rnd(&rs) % m->nblocks);
		off = rnd(&rs) % m->blocks[b].used_length;
		len = rnd(&rs) % (3 * 262144);
		if (len > m->blocks[b].used_length - off)
			len = m->blocks[b].used_length - off;
		for (pg = 0; pg < len; ) {
			uint64_t a = off + pg, p = m->first[b] + a / PAGE;
			uint64_t n = PAGE - a % PAGE;

			if (n > len - pg)
				n = len - pg;
			if (m->state[p] == IMG_PAGE_DATA)
				fill(want, m->seed[p]);
			else
				memset(want, 0, PAGE);
			memcpy(wbuf + pg, want + a % PAGE, n);
			pg += n;
		}
		if (img_read_at(r, b, off, (size_t)len, rbuf, &e) < 0 ||
		    memcmp(rbuf, wbuf, (size_t)len) != 0)
			bad = 1;
	}
	free(rbuf);
	free(wbuf);
	check(!bad, "%s: img_read_at returns the model's bytes", what);
	check(img_read_at(r, 0, m->blocks[0].used_length - 10, 11, got, &e)
	    < 0, "%s: img_read_at refuses a range past the block", what);
	err_clear(&e);

	check(img_read_tail(r, &tail, &tlen, &e) == 0 &&
	    tlen == sizeof(tail_bytes) && memcmp(tail, tail_bytes, tlen) == 0,
	    "%s: device tail round-trips", what);
	free(tail);
	check(img_verify(r, &e) == 0, "%s: verify passes (%s)", what, e.msg);
	check(img_check_frames(r, path, 2, &e) == 0,
	    "%s: the frame check passes (%s)", what, e.msg);
	img_close(r);
}

static const uint64_t mlens[] = {
	9 * 262144 + 3 * PAGE,	/* odd: a short last chunk */
	262144,
	2 * PAGE,
	5 * 262144 + 63 * PAGE,
};
static const char *const mnames[] = { "pc.ram", "vga.vram", "tiny", "odd" };

static void
test_model(void)
{
	static const struct {
		size_t cache;
		int threads;
	} cfg[] = {
		{ 4 * 262144, 2 },
		{ 1, 1 },		/* one slot: evict on every chunk */
		{ 4 * 262144, 4 },
		{ 0, 0 },		/* defaults: everything fits */
	};
	struct img_opts o = IMG_OPTS_INIT;
	struct img_stats st;
	struct err e = ERR_INIT;
	struct model m;
	char *path, what[64];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cfg); i++) {
		model_init(&m, mlens, mnames, ARRAY_SIZE(mlens));
		o.cache_bytes = cfg[i].cache;
		o.threads = cfg[i].threads;
		path = tpath("model.img");
		snprintf(what, sizeof(what), "model %zu (cache %zu, %d thr)",
		    i, cfg[i].cache, cfg[i].threads);
		err_clear(&e);
		check(model_run(&m, path, &o, 1000 + i, &st, &e) == 0,
		    "%s: written and committed (%s)", what, e.msg);
		check(dir_count(tmpdir) == 1, "%s: only the image is left",
		    what);
		model_check(&m, path, what);
		unlink(path);
		free(path);
		model_free(&m);
	}
}

/* An image of one block of n pages, each sent passes times. */
static int
make_image(const char *path, uint64_t npages, int passes, uint64_t zero_mod,
    const struct img_opts *o, struct img_stats *st, struct err *e)
{
	struct stream_block blk;
	struct img_writer *w;
	struct model m;
	uint8_t buf[PAGE];
	uint64_t pg;
	int rc = -1, p;

	memset(&blk, 0, sizeof(blk));
	snprintf(blk.name, sizeof(blk.name), "pc.ram");
	blk.used_length = npages * PAGE;
	m.blocks = &blk;
	m.nblocks = 1;
	if ((w = img_writer_new(path, o, e)) == NULL)
		return -1;
	if (send_head(w, &m, e) < 0)
		goto out;
	for (p = passes - 1; p >= 0; p--) {
		for (pg = 0; pg < npages; pg++) {
			fill(buf, pg * 5 + 2 + (uint64_t)p * 1000003 * 5);
			if (zero_mod && pg % zero_mod == 0)
				memset(buf, 0, PAGE);
			if (img_writer_sink()->page(w, 0, pg * PAGE, buf, e)
			    < 0)
				goto out;
		}
	}
	if (send_end(w, 0, e) < 0 || img_writer_commit(w, st, e) < 0)
		goto out;
	rc = 0;
out:
	img_writer_free(w);
	return rc;
}

static void
test_compaction(void)
{
	struct img_opts o = IMG_OPTS_INIT;
	struct img_stats s1, s3;
	struct err e = ERR_INIT;
	char *p1 = tpath("once.img"), *p3 = tpath("thrice.img");
	struct stat st1, st3;

	o.cache_bytes = 8 * 262144;
	o.threads = 2;
	check(make_image(p1, 4096, 1, 3, &o, &s1, &e) == 0,
	    "compaction: 16 MiB sent once (%s)", e.msg);
	check(make_image(p3, 4096, 3, 3, &o, &s3, &e) == 0,
	    "compaction: 16 MiB sent three times (%s)", e.msg);
	if (stat(p1, &st1) < 0 || stat(p3, &st3) < 0) {
		check(0, "compaction: images exist");
		goto out;
	}
	note("once: %lld bytes, thrice: %lld bytes, data %llu, "
	    "recompressions %llu", (long long)st1.st_size,
	    (long long)st3.st_size, (unsigned long long)s3.data_bytes,
	    (unsigned long long)s3.recompressions);
	check(st3.st_size <= st1.st_size + st1.st_size / 100,
	    "compaction: three passes cost no more than one");
	check(s3.file_bytes == (uint64_t)st3.st_size && s3.pages == 4096 &&
	    s3.zero_pages == 4096 / 3 + 1, "compaction: stats are right");
	check(s3.recompressions >= 4096 / 64 * 2,
	    "compaction: earlier passes were compressed too (%llu)",
	    (unsigned long long)s3.recompressions);
	check((uint64_t)st3.st_blocks * 512 <= s3.data_bytes + 64 * 1024 +
	    4096 / 64 * 32 + 8192,
	    "compaction: allocated %llu bytes, near the %llu live bytes",
	    (unsigned long long)st3.st_blocks * 512,
	    (unsigned long long)s3.data_bytes);
out:
	unlink(p1);
	unlink(p3);
	free(p1);
	free(p3);
}

/*
 * The log (the image's temporary file: frames land there as they are
 * done, replaced ones punched in batches of 16 MiB) stays near the live
 * size: look at it through /proc.  Six passes over 64 MiB write about
 * six times the live size, far past the bound without punching.  Then
 * the image verifies: no batch punched a live frame.  slide_max 1: the
 * commit leaves the holes (flag 0x20).
 */
static void
test_scratch_bounded(uint64_t slide_max)
{
	struct img_opts o = IMG_OPTS_INIT;
	struct img_stats st;
	struct err e = ERR_INIT;
	struct img_writer *w;
	struct stream_block blk;
	struct model m;
	uint8_t buf[PAGE];
	char *path = tpath("scratch.img"), link[512], *fp;
	uint64_t pg, scratch_alloc = 0;
	struct stat sst;
	struct img_reader *r;
	DIR *d;
	struct dirent *de;
	int p;
	ssize_t n;

	memset(&blk, 0, sizeof(blk));
	snprintf(blk.name, sizeof(blk.name), "pc.ram");
	blk.used_length = 16384 * PAGE;
	m.blocks = &blk;
	m.nblocks = 1;
	o.cache_bytes = 2 * 262144;
	o.threads = 2;
	o.slide_max = slide_max;
	note("scratch: slide_max %llu", (unsigned long long)slide_max);
	w = img_writer_new(path, &o, &e);
	check(w != NULL && send_head(w, &m, &e) == 0, "scratch: writer");
	if (w == NULL)
		goto out;
	for (p = 0; p < 6; p++)
		for (pg = 0; pg < 16384; pg++) {
			fill(buf, pg * 5 + 2 + (uint64_t)p * 5 * 77777);
			img_writer_sink()->page(w, 0, pg * PAGE, buf, &e);
		}
	img_writer_stats(w, &st);
	d = opendir("/proc/self/fd");
	while (d != NULL && (de = readdir(d)) != NULL) {
		fp = xasprintf("/proc/self/fd/%s", de->d_name);
		n = readlink(fp, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			if (strncmp(link, tmpdir, strlen(tmpdir)) == 0 &&
			    stat(fp, &sst) == 0 &&
			    (uint64_t)sst.st_blocks * 512 > scratch_alloc)
				scratch_alloc = (uint64_t)sst.st_blocks * 512;
		}
		free(fp);
	}
	if (d != NULL)
		closedir(d);
	note("scratch: %llu allocated, %llu live compressed",
	    (unsigned long long)scratch_alloc,
	    (unsigned long long)st.data_bytes);
	check(scratch_alloc > 0 && scratch_alloc < st.data_bytes * 2 +
	    (16u << 20) + (2 + 10) * 262144 + 32 * 4096 &&
	    st.data_bytes * 6 > st.data_bytes * 2 + (16u << 20) +
	    (2 + 10) * 262144 + 32 * 4096,
	    "scratch: six passes keep scratch near the live size (+ a "
	    "punch batch)");
	check(send_end(w, 0, &e) == 0 && img_writer_commit(w, &st, &e) == 0,
	    "scratch: commit (%s)", e.msg);
	img_writer_free(w);
	r = img_open(path, &e);
	check(r != NULL && img_verify(r, &e) == 0, "scratch: the image "
	    "verifies (%s)", e.msg);
	check(r != NULL && ((img_meta(r)->flags & IMG_F_HOLES) != 0) ==
	    (slide_max == 1) && (st.hole_bytes > 0) == (slide_max == 1),
	    "scratch: holes (flag 0x20) exactly when slide_max is 1");
	img_close(r);
out:
	unlink(path);
	free(path);
}

/* The reader over memory. */
struct mem {
	uint8_t *p;
	size_t len;
};

static ssize_t
mem_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	struct mem *m = opaque;

	if (off >= m->len)
		return 0;
	if (len > m->len - off)
		len = (size_t)(m->len - off);
	memcpy(buf, m->p + off, len);
	return (ssize_t)len;
}

static struct img_reader *
open_mem(struct mem *m, struct err *e)
{
	struct img_io io = { mem_pread, 0, NULL };

	io.size = m->len;
	io.opaque = m;
	return img_open_io(&io, e);
}

static uint8_t *
slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *p;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0)
		return NULL;
	p = xmalloc((size_t)st.st_size);
	if (read_full(fd, p, (size_t)st.st_size) != st.st_size) {
		free(p);
		p = NULL;
	}
	*len = (size_t)st.st_size;
	close(fd);
	return p;
}

static void
test_corruption(void)
{
	struct img_opts o = IMG_OPTS_INIT;
	struct img_stats st;
	struct err e = ERR_INIT;
	char *path = tpath("base.img");
	uint8_t *img, page[PAGE], hdr[IMG_HDR_SIZE];
	size_t len, off, cut, i;
	struct mem m;
	struct img_reader *r;
	uint64_t data_off, tail_off, index_off;
	enum img_page_state state;
	int opened_bad = 0, verify_bad = 0, crashy = 0, named = 0, pagefail = 0;
	int tried = 0, harmless = 0, quick = 0;
	char vmsg[ERR_MSG_MAX];
	uint8_t *expect, *got;
	int n;

	o.threads = 2;
	check(make_image(path, 200, 2, 4, &o, &st, &e) == 0,
	    "corruption: base image (%s)", e.msg);
	img = slurp(path, &len);
	if (img == NULL) {
		check(0, "corruption: base image read");
		goto out;
	}
	m.p = img;
	m.len = len;
	r = open_mem(&m, &e);
	check(r != NULL && img_verify(r, &e) == 0,
	    "corruption: the base image verifies from memory (%s)", e.msg);
	img_close(r);
	data_off = get_le64(img + IMG_HDR_DATA_OFF);
	tail_off = get_le64(img + IMG_HDR_TAIL_OFF);
	index_off = get_le64(img + IMG_HDR_INDEX_OFF);

	/* Every bit of the header, and bytes of metadata and index. */
	for (off = 0; off < len; off++) {
		if (off >= data_off && off < index_off)
			continue;
		if (off >= IMG_HDR_SIZE && off % 3 != 0)
			continue;
		for (i = 0; i < (off < IMG_HDR_SIZE ? 8 : 1); i++) {
			img[off] ^= (uint8_t)(1u << (off < IMG_HDR_SIZE ? i :
			    off % 8));
			err_clear(&e);
			r = open_mem(&m, &e);
			if (r != NULL) {
				opened_bad++;
				note("opened with a flip at %zu", off);
				img_close(r);
			} else if (e.msg[0] == '\0') {
				crashy++;
			}
			img[off] ^= (uint8_t)(1u << (off < IMG_HDR_SIZE ? i :
			    off % 8));
		}
	}
	check(opened_bad == 0 && crashy == 0,
	    "corruption: every flip in header, metadata, index is refused at "
	    "open with a message");

	/*
	 * Frames: open succeeds, and verify names the chunk, or the flip hit
	 * a bit zstd ignores and every page still reads as before.
	 */
	opened_bad = 0;
	expect = xmalloc(200 * PAGE);
	got = xmalloc(200 * PAGE);
	r = open_mem(&m, &e);
	for (i = 0; r != NULL && i < 200; i++)
		img_read_page(r, 0, i * PAGE, expect + i * PAGE, &state, &e);
	img_close(r);
	for (off = data_off; off < tail_off; off += 37) {
		tried++;
		img[off] ^= 0x10;
		err_clear(&e);
		r = open_mem(&m, &e);
		if (r == NULL) {
			opened_bad++;
		} else if (img_verify(r, &e) == 0) {
			for (i = 0; i < 200; i++)
				if (img_read_page(r, 0, i * PAGE,
				    got + i * PAGE, &state, &e) < 0)
					break;
			if (i == 200 && memcmp(got, expect, 200 * PAGE) == 0)
				harmless++;
			else
				verify_bad++;
		} else {
			if (strncmp(e.msg, "chunk ", 6) == 0 &&
			    strstr(e.msg, "(block 'pc.ram' offset 0x") != NULL)
				named++;
			else
				note("verify says: %s", e.msg);
			snprintf(vmsg, sizeof(vmsg), "%s", e.msg);
			err_clear(&e);
			if (img_check_frames(r, NULL, 1, &e) < 0 &&
			    strcmp(e.msg, vmsg) == 0)
				quick++;
			else
				note("check_frames says: %s", e.msg);
			err_clear(&e);
			n = 0;
			for (i = 1; i < 200; i += 64) {
				if (img_read_page(r, 0, i * PAGE, page, &state,
				    &e) < 0)
					n++;
				err_clear(&e);
			}
			pagefail += n > 0;
		}
		img_close(r);
		img[off] ^= 0x10;
	}
	free(expect);
	free(got);
	check(opened_bad == 0 && verify_bad == 0,
	    "corruption: flips in frames open, and verify catches all that "
	    "change a page");
	check(named == tried && harmless == 0, "corruption: verify names the "
	    "chunk for every flip, the CRC catches those zstd ignores (%d of "
	    "%d; %d missed)", named, tried, harmless);
	check(quick == named, "corruption: the frame check catches them too, "
	    "with the same message, without decoding (%d of %d)", quick,
	    named);
	check(pagefail == named, "corruption: reading a damaged chunk fails");
	img[data_off + 40] ^= 1;
	r = open_mem(&m, &e);
	if (r != NULL && img_verify(r, &e) < 0)
		note("example: %s", e.msg);
	img_close(r);
	img[data_off + 40] ^= 1;
	err_clear(&e);

	/* The tail. */
	verify_bad = 0;
	for (off = tail_off; off < index_off; off++) {
		img[off] ^= 0x04;
		r = open_mem(&m, &e);
		if (r == NULL || img_verify(r, &e) == 0 ||
		    strstr(e.msg, "device state") == NULL)
			verify_bad++;
		err_clear(&e);
		if (r != NULL && (img_check_frames(r, NULL, 1, &e) == 0 ||
		    strncmp(e.msg, "device state: ", 14) != 0))
			verify_bad++;
		err_clear(&e);
		img_close(r);
		img[off] ^= 0x04;
	}
	check(verify_bad == 0, "corruption: every flip in the tail fails "
	    "verify and the frame check as 'device state'");

	/* Truncation at every length. */
	opened_bad = 0;
	for (cut = 0; cut < len; cut++) {
		m.len = cut;
		r = open_mem(&m, &e);
		if (r != NULL)
			opened_bad++;
		img_close(r);
		err_clear(&e);
	}
	m.len = len;
	check(opened_bad == 0, "corruption: truncation at each of %zu lengths "
	    "is refused", len);
	/* Appended bytes, too. */
	{
		uint8_t *big = xmalloc(len + 1);
		struct mem mb = { big, len + 1 };

		memcpy(big, img, len);
		big[len] = 0;
		r = open_mem(&mb, &e);
		check(r == NULL && strstr(e.msg, "truncated or extended"),
		    "corruption: an extended image is refused (%s)", e.msg);
		err_clear(&e);
		free(big);
	}

	/* Valid header CRC over lying offsets. */
	memcpy(hdr, img, IMG_HDR_SIZE);
	for (i = IMG_HDR_FILE_SIZE; i < IMG_HDR_META_CRC; i += 8) {
		uint64_t v = get_le64(img + i);
		uint64_t lies[] = { v + 1, v - 1, 0, ~0ull, v + 4096, v << 1 };
		size_t k;

		for (k = 0; k < ARRAY_SIZE(lies); k++) {
			put_le64(img + i, lies[k]);
			put_le32(img + IMG_HDR_CRC, crc32c(0, img,
			    IMG_HDR_CRC));
			r = open_mem(&m, &e);
			if (r != NULL) {
				opened_bad++;
				img_close(r);
			}
			err_clear(&e);
			memcpy(img, hdr, IMG_HDR_SIZE);
		}
	}
	check(opened_bad == 0, "corruption: lying offsets with a good header "
	    "CRC are refused");
	free(img);
out:
	unlink(path);
	free(path);
}

/* Write len bytes to path; 0 or -1. */
static int
spit(const char *path, const uint8_t *p, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int rc;

	if (fd < 0)
		return -1;
	rc = write_full(fd, p, len);
	close(fd);
	return rc;
}

/* verify's answer for the image bytes p, with nthreads (0: serial). */
static int
verify_bytes(const uint8_t *p, size_t len, int nthreads, char *msg,
    size_t msglen)
{
	char *path = tpath("par.img");
	struct img_reader *r;
	struct err e = ERR_INIT;
	int rc = -1;

	if (spit(path, p, len) < 0) {
		snprintf(msg, msglen, "cannot write %s", path);
		free(path);
		return -2;
	}
	r = img_open(path, &e);
	if (r != NULL)
		rc = nthreads == 0 ? img_verify(r, &e) :
		    img_verify_parallel(r, path, nthreads, &e);
	snprintf(msg, msglen, "%s", e.msg);
	img_close(r);
	free(path);
	return rc;
}

static void
test_verify_parallel(void)
{
	struct img_opts o = IMG_OPTS_INIT;
	struct img_stats st;
	struct err e = ERR_INIT;
	char *path = tpath("pbase.img");
	char serial[ERR_MSG_MAX], par[ERR_MSG_MAX];
	uint8_t *img;
	size_t len;
	uint64_t data_off, tail_off;
	int k;

	o.threads = 2;
	check(make_image(path, 1000, 1, 5, &o, &st, &e) == 0,
	    "verify_parallel: base image of 16 chunks (%s)", e.msg);
	img = slurp(path, &len);
	if (img == NULL) {
		check(0, "verify_parallel: base image read");
		goto out;
	}
	data_off = get_le64(img + IMG_HDR_DATA_OFF);
	tail_off = get_le64(img + IMG_HDR_TAIL_OFF);
	for (k = 2; k <= 5; k++)
		check(verify_bytes(img, len, k, par, sizeof(par)) == 0,
		    "verify_parallel: %d threads pass a good image (%s)", k,
		    par);

	/* The last frame damaged: both name the same chunk. */
	img[tail_off - 20] ^= 0x40;
	check(verify_bytes(img, len, 0, serial, sizeof(serial)) == -1 &&
	    verify_bytes(img, len, 3, par, sizeof(par)) == -1 &&
	    strcmp(serial, par) == 0 && strncmp(par, "chunk ", 6) == 0,
	    "verify_parallel: a bad last frame, the same message as serial "
	    "('%s' / '%s')", serial, par);
	/* And the first one too: the same one is named (version 2: the
	 * first in file order need not be chunk 0). */
	img[data_off + 20] ^= 0x40;
	verify_bytes(img, len, 0, serial, sizeof(serial));
	check(verify_bytes(img, len, 4, par, sizeof(par)) == -1 &&
	    strcmp(serial, par) == 0 && strncmp(par, "chunk ", 6) == 0,
	    "verify_parallel: two bad frames, the first is named ('%s' / "
	    "'%s')", serial, par);
	free(img);
out:
	unlink(path);
	free(path);
	path = tpath("par.img");
	unlink(path);
	free(path);
}

/* The CRCs over index and header again, after an edit. */
static void
fix_crcs(uint8_t *img)
{
	uint64_t ioff = get_le64(img + IMG_HDR_INDEX_OFF);
	uint64_t isize = get_le64(img + IMG_HDR_INDEX_SIZE);

	put_le32(img + IMG_HDR_INDEX_CRC, crc32c(0, img + ioff, (size_t)isize));
	put_le32(img + IMG_HDR_CRC, crc32c(0, img, IMG_HDR_CRC));
}

/* Rewrite a writer's image as one without frame CRCs (before the flag). */
static void
drop_frame_crcs(uint8_t *img)
{
	uint64_t ioff = get_le64(img + IMG_HDR_INDEX_OFF);
	uint64_t isize = get_le64(img + IMG_HDR_INDEX_SIZE), k;

	put_le32(img + IMG_HDR_FLAGS, get_le32(img + IMG_HDR_FLAGS) &
	    ~IMG_F_FRAME_CRCS);
	put_le32(img + IMG_HDR_TAIL_CRC, 0);
	for (k = ioff + IMG_SKIP_SIZE; k < ioff + isize; k += IMG_ENTRY_SIZE)
		put_le32(img + k + IMG_ENTRY_FRAME_CRC, 0);
	fix_crcs(img);
}

/* The message of img_check_frames() on the bytes p (path), and its rc. */
static int
check_bytes(const uint8_t *p, size_t len, int nthreads, char *msg,
    size_t msglen)
{
	char *path = tpath("chk.img");
	struct img_reader *r;
	struct err e = ERR_INIT;
	int rc = -1;

	msg[0] = '\0';
	if (spit(path, p, len) < 0) {
		free(path);
		return -2;
	}
	r = img_open(path, &e);
	if (r != NULL)
		rc = img_check_frames(r, path, nthreads, &e);
	snprintf(msg, msglen, "%s", e.msg);
	img_close(r);
	unlink(path);
	free(path);
	return rc;
}

/* An image of 3500 random pages (14 MiB of frames): room for threads. */
static int
make_random_image(const char *path, struct err *e)
{
	struct img_opts o = IMG_OPTS_INIT;
	struct stream_block blk[2];
	struct img_writer *w;
	struct model m;
	uint8_t buf[PAGE];
	uint64_t pg, s = 77;
	size_t k;
	int rc = -1;

	memset(blk, 0, sizeof(blk));
	snprintf(blk[0].name, sizeof(blk[0].name), "pc.ram");
	blk[0].used_length = 3500 * PAGE;
	snprintf(blk[1].name, sizeof(blk[1].name), "vga.vram");
	blk[1].used_length = 3 * 262144;
	m.blocks = blk;
	m.nblocks = 2;
	o.threads = 2;
	if ((w = img_writer_new(path, &o, e)) == NULL)
		return -1;
	if (send_head(w, &m, e) < 0)
		goto out;
	for (pg = 0; pg < 3500; pg++) {
		for (k = 0; k < PAGE; k += 8) {
			uint64_t v = rnd(&s);
			memcpy(buf + k, &v, 8);
		}
		if (img_writer_sink()->page(w, 0, pg * PAGE, buf, e) < 0)
			goto out;
	}
	/* vga.vram: chunk 0 zero pages only, chunk 1 one data page, chunk 2
	 * never sent: two chunks without a frame. */
	memset(buf, 0, PAGE);
	if (img_writer_sink()->page(w, 1, 0, buf, e) < 0 ||
	    img_writer_sink()->page(w, 1, PAGE, NULL, e) < 0)
		goto out;
	fill(buf, 3);
	if (img_writer_sink()->page(w, 1, 262144 + 5 * PAGE, buf, e) < 0)
		goto out;
	if (send_end(w, 0, e) < 0 || img_writer_commit(w, NULL, e) < 0)
		goto out;
	rc = 0;
out:
	img_writer_free(w);
	return rc;
}

static void
test_frame_crcs(void)
{
	struct err e = ERR_INIT;
	char *path = tpath("crc.img"), vmsg[ERR_MSG_MAX], cmsg[ERR_MSG_MAX];
	uint8_t *img = NULL, *old = NULL;
	uint64_t ioff, isize, doff, toff, tsize, k, off, ci, nframes = 0;
	uint64_t last = 0, nchunks;
	uint32_t size;
	struct img_reader *r;
	struct mem m;
	size_t len;
	int bad = 0, nt;

	check(make_random_image(path, &e) == 0, "frame crcs: an image of "
	    "14 MiB of frames (%s)", e.msg);
	img = slurp(path, &len);
	if (img == NULL) {
		check(0, "frame crcs: image read");
		goto out;
	}
	/* Version 2, as written: flag 0x4 and a CRC in every 80-byte entry.
	 * The rest runs on its version 1 copy (frames in index order, and
	 * an image without frame CRCs is version 1 only). */
	ioff = get_le64(img + IMG_HDR_INDEX_OFF);
	isize = get_le64(img + IMG_HDR_INDEX_SIZE);
	check(get_le32(img + IMG_HDR_VERSION) == IMG_VERSION_2 &&
	    get_le32(img + IMG_HDR_FLAGS) == (IMG_F_FRAME_CRCS |
	    IMG_F_BLAKE3), "frame crcs: the writer writes version 2 with "
	    "flags 0x4 and 0x10 (flags 0x%x)",
	    get_le32(img + IMG_HDR_FLAGS));
	for (k = ioff + IMG_SKIP_SIZE; k < ioff + isize; k += IMG_ENTRY2_SIZE) {
		off = get_le64(img + k + IMG_ENTRY_FRAME_OFF);
		size = get_le32(img + k + IMG_ENTRY_FRAME_SIZE);
		bad |= size == 0 ? get_le32(img + k + IMG_ENTRY_FRAME_CRC) != 0 :
		    get_le32(img + k + IMG_ENTRY_FRAME_CRC) !=
		    crc32c(0, img + off, size);
	}
	check(!bad, "frame crcs: each version 2 entry holds its frame's CRC");
	free(img);
	img = NULL;
	{
		char *v1 = tpath("crc-v1.img"), *cmd;

		cmd = xasprintf("build/helper-imgv1 '%s' '%s'", path, v1);
		if (!check(system(cmd) == 0, "frame crcs: a version 1 copy "
		    "(build/helper-imgv1)")) {
			free(cmd);
			free(v1);
			goto out;
		}
		free(cmd);
		unlink(path);
		rename(v1, path);
		free(v1);
	}
	img = slurp(path, &len);
	if (img == NULL) {
		check(0, "frame crcs: image read");
		goto out;
	}
	doff = get_le64(img + IMG_HDR_DATA_OFF);
	toff = get_le64(img + IMG_HDR_TAIL_OFF);
	tsize = get_le64(img + IMG_HDR_TAIL_SIZE);
	ioff = get_le64(img + IMG_HDR_INDEX_OFF);
	isize = get_le64(img + IMG_HDR_INDEX_SIZE);

	/* What the man page says, checked from the bytes. */
	check(get_le32(img + IMG_HDR_FLAGS) == IMG_F_FRAME_CRCS, "frame crcs: "
	    "the writer sets flag 0x4 (flags 0x%x)",
	    get_le32(img + IMG_HDR_FLAGS));
	check(get_le32(img + IMG_HDR_TAIL_CRC) == crc32c(0, img + toff,
	    (size_t)tsize) &&
	    get_le64(img + IMG_HDR_RESERVED) == 0,
	    "frame crcs: header bytes 112-115 are the tail frame's CRC, "
	    "116-123 zero");
	for (k = ioff + IMG_SKIP_SIZE; k < ioff + isize; k += IMG_ENTRY_SIZE) {
		off = get_le64(img + k + IMG_ENTRY_FRAME_OFF);
		size = get_le32(img + k + IMG_ENTRY_FRAME_SIZE);
		if (size == 0) {
			bad |= get_le32(img + k + IMG_ENTRY_FRAME_CRC) != 0;
			continue;
		}
		nframes++;
		last = (k - ioff - IMG_SKIP_SIZE) / IMG_ENTRY_SIZE;
		bad |= get_le32(img + k + IMG_ENTRY_FRAME_CRC) !=
		    crc32c(0, img + off, size);
	}
	nchunks = (isize - IMG_SKIP_SIZE) / IMG_ENTRY_SIZE;
	check(!bad && nframes > 3 && nchunks - nframes == 2,
	    "frame crcs: each index entry holds its frame's CRC, 0 for the "
	    "%llu chunks without one", (unsigned long long)(nchunks -
	    nframes));

	for (nt = 0; nt <= 4; nt++)
		check(check_bytes(img, len, nt, cmsg, sizeof(cmsg)) == 0,
		    "frame crcs: %d threads pass a good image (%s)", nt, cmsg);

	/* Damage, in the last frame and then the first, with threads. */
	img[toff - 100] ^= 0x01;
	verify_bytes(img, len, 0, vmsg, sizeof(vmsg));
	for (nt = 1; nt <= 3; nt++)
		check(check_bytes(img, len, nt, cmsg, sizeof(cmsg)) == -1 &&
		    strcmp(cmsg, vmsg) == 0 && strstr(cmsg, "CRC-32C") &&
		    strtoull(cmsg + 6, NULL, 10) == last,
		    "frame crcs: a flip in the last frame, %d threads: '%s'",
		    nt, cmsg);
	img[doff + 4000] ^= 0x80;
	verify_bytes(img, len, 0, vmsg, sizeof(vmsg));
	check(check_bytes(img, len, 3, cmsg, sizeof(cmsg)) == -1 &&
	    strcmp(cmsg, vmsg) == 0 && strncmp(cmsg, "chunk 0 (block 'pc.ram' "
	    "offset 0x0): frame CRC-32C mismatch", 53) == 0,
	    "frame crcs: two bad frames, the first in file order is named, "
	    "as verify does ('%s')", cmsg);
	img[doff + 4000] ^= 0x80;
	img[toff - 100] ^= 0x01;
	img[toff + tsize / 2] ^= 0x08;
	check(check_bytes(img, len, 2, cmsg, sizeof(cmsg)) == -1 &&
	    strcmp(cmsg, "device state: frame CRC-32C mismatch") == 0,
	    "frame crcs: a flip in the tail: '%s'", cmsg);
	img[toff + tsize / 2] ^= 0x08;

	/* A wrong CRC in an index that is otherwise consistent. */
	m.p = img;
	m.len = len;
	ci = 3;
	k = ioff + IMG_SKIP_SIZE + ci * IMG_ENTRY_SIZE + IMG_ENTRY_FRAME_CRC;
	put_le32(img + k, get_le32(img + k) ^ 1);
	fix_crcs(img);
	r = open_mem(&m, &e);
	check(r != NULL, "frame crcs: a wrong frame CRC opens (%s)", e.msg);
	if (r != NULL) {
		uint8_t page[PAGE];
		enum img_page_state st;

		check(img_read_page(r, 0, ci * 262144 + PAGE, page, &st, &e)
		    < 0 && strcmp(e.msg, "chunk 3 (block 'pc.ram' offset "
		    "0xc0000): frame CRC-32C mismatch") == 0,
		    "frame crcs: reading the chunk checks its CRC: %s", e.msg);
		err_clear(&e);
		check(img_read_page(r, 0, 2 * 262144, page, &st, &e) == 0,
		    "frame crcs: other chunks still read (%s)", e.msg);
		img_close(r);
	}
	k = ioff + IMG_SKIP_SIZE + ci * IMG_ENTRY_SIZE + IMG_ENTRY_FRAME_CRC;
	put_le32(img + k, get_le32(img + k) ^ 1);
	/* A CRC on a chunk without a frame; reserved header bytes. */
	k = ioff + isize - IMG_ENTRY_SIZE + IMG_ENTRY_FRAME_CRC; /* last */
	put_le32(img + k, 1);
	fix_crcs(img);
	r = open_mem(&m, &e);
	check(r == NULL && strstr(e.msg, "index entry"), "frame crcs: a CRC "
	    "for a chunk without a frame is refused: %s", e.msg);
	img_close(r);
	err_clear(&e);
	put_le32(img + k, 0);
	img[IMG_HDR_RESERVED + 4] = 1;
	fix_crcs(img);
	r = open_mem(&m, &e);
	check(r == NULL && strstr(e.msg, "reserved header bytes"),
	    "frame crcs: bytes 116-123 stay reserved: %s", e.msg);
	img_close(r);
	err_clear(&e);
	img[IMG_HDR_RESERVED + 4] = 0;
	fix_crcs(img);

	/* The same image as one written before frame CRCs. */
	old = xmalloc(len);
	memcpy(old, img, len);
	drop_frame_crcs(old);
	m.p = old;
	r = open_mem(&m, &e);
	check(r != NULL && !(img_meta(r)->flags & IMG_F_FRAME_CRCS) &&
	    img_verify(r, &e) == 0, "frame crcs: an image without them opens "
	    "and verifies (%s)", e.msg);
	img_close(r);
	check(check_bytes(old, len, 2, cmsg, sizeof(cmsg)) == 0 &&
	    verify_bytes(old, len, 2, vmsg, sizeof(vmsg)) == 0,
	    "frame crcs: ... and passes the frame check (a full decode) and "
	    "verify_parallel (%s)", cmsg);
	old[doff + 5000] ^= 0x10;
	verify_bytes(old, len, 0, vmsg, sizeof(vmsg));
	check(check_bytes(old, len, 2, cmsg, sizeof(cmsg)) == -1 &&
	    strcmp(cmsg, vmsg) == 0 && strncmp(cmsg, "chunk 0 ", 8) == 0,
	    "frame crcs: without them, a bad frame is still named: '%s'",
	    cmsg);
	old[doff + 5000] ^= 0x10;
	put_le32(old + IMG_HDR_TAIL_CRC, 1);
	fix_crcs(old);
	r = open_mem(&m, &e);
	check(r == NULL && strstr(e.msg, "reserved header bytes"),
	    "frame crcs: without the flag, bytes 112-115 are reserved: %s",
	    e.msg);
	img_close(r);
	err_clear(&e);
	put_le32(old + IMG_HDR_TAIL_CRC, 0);
	k = ioff + IMG_SKIP_SIZE + IMG_ENTRY_FRAME_CRC;	/* entry 0 */
	put_le32(old + k, get_le32(img + k));
	fix_crcs(old);
	r = open_mem(&m, &e);
	check(r == NULL && strstr(e.msg, "index entry 0 is bad"),
	    "frame crcs: without the flag, an entry's CRC field is reserved: "
	    "%s", e.msg);
	img_close(r);
	err_clear(&e);
out:
	free(img);
	free(old);
	unlink(path);
	free(path);
	path = tpath("par.img");
	unlink(path);
	free(path);
}

/* What img_foreach_page*() hand fn, folded into a CRC; stop after n. */
struct trace {
	uint32_t crc;
	uint64_t calls, stop_after;
};

static int
trace_fn(void *opaque, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct trace *t = opaque;
	uint8_t key[13];

	put_le32(key, block);
	put_le64(key + 4, offset);
	key[12] = data == NULL;
	t->crc = crc32c(t->crc, key, sizeof(key));
	if (data != NULL)
		t->crc = crc32c(t->crc, data, PAGE);
	if (++t->calls == t->stop_after)
		return err_set(e, ERR_INTR, "stop here");
	return 0;
}

/* A foreach over the image at path: its rc, message and trace. */
static int
trace_path(const char *path, int nthreads, struct trace *t, char *msg,
    size_t msglen)
{
	struct err e = ERR_INIT;
	struct img_reader *r = img_open(path, &e);
	int rc = -2;

	t->crc = 0;
	t->calls = 0;
	if (r != NULL)
		rc = nthreads == 0 ? img_foreach_page(r, trace_fn, t, &e) :
		    img_foreach_page_parallel(r, nthreads, trace_fn, t, &e);
	snprintf(msg, msglen, "%s", e.msg);
	img_close(r);
	return rc;
}

static void
test_foreach_parallel(void)
{
	struct err e = ERR_INIT;
	char *path = tpath("ahead.img"), m0[ERR_MSG_MAX], m1[ERR_MSG_MAX];
	struct trace t0 = { 0, 0, 0 }, t1 = { 0, 0, 0 };
	uint64_t doff, toff;
	uint8_t *img = NULL;
	size_t len;
	int nt, rc0, rc1, bad = 0;

	check(make_random_image(path, &e) == 0, "foreach parallel: an image "
	    "of 58 chunks (%s)", e.msg);
	rc0 = trace_path(path, 0, &t0, m0, sizeof(m0));
	for (nt = 1; nt <= 5; nt++) {
		rc1 = trace_path(path, nt, &t1, m1, sizeof(m1));
		if (rc0 != 0 || rc1 != 0 || t1.crc != t0.crc ||
		    t1.calls != t0.calls) {
			note("%d threads: rc %d, %llu calls (serial %d, %llu)",
			    nt, rc1, (unsigned long long)t1.calls, rc0,
			    (unsigned long long)t0.calls);
			bad = 1;
		}
	}
	check(!bad, "foreach parallel: 1 to 5 threads hand fn what the "
	    "serial walk does (%llu pages)", (unsigned long long)t0.calls);

	/* fn stops the walk: its error, nothing after. */
	t0.stop_after = t1.stop_after = 2000;
	rc0 = trace_path(path, 0, &t0, m0, sizeof(m0));
	rc1 = trace_path(path, 3, &t1, m1, sizeof(m1));
	check(rc0 == -1 && rc1 == -1 && t1.calls == 2000 &&
	    t1.crc == t0.crc && strcmp(m1, "stop here") == 0,
	    "foreach parallel: fn's error stops it at once (%s)", m1);
	t0.stop_after = t1.stop_after = 0;

	/* A bad frame: the pages before it, then the same message. */
	img = slurp(path, &len);
	if (img == NULL) {
		check(0, "foreach parallel: image read");
		goto out;
	}
	doff = get_le64(img + IMG_HDR_DATA_OFF);
	toff = get_le64(img + IMG_HDR_TAIL_OFF);
	img[doff + (toff - doff) / 2] ^= 0x20;
	img[toff - 10] ^= 0x20;
	unlink(path);
	spit(path, img, len);
	rc0 = trace_path(path, 0, &t0, m0, sizeof(m0));
	bad = 0;
	for (nt = 2; nt <= 4; nt++) {
		rc1 = trace_path(path, nt, &t1, m1, sizeof(m1));
		if (rc1 != -1 || t1.calls != t0.calls || t1.crc != t0.crc ||
		    strcmp(m1, m0) != 0) {
			note("%d threads: %s after %llu calls", nt, m1,
			    (unsigned long long)t1.calls);
			bad = 1;
		}
	}
	check(rc0 == -1 && !bad && strncmp(m0, "chunk ", 6) == 0,
	    "foreach parallel: two bad frames, the pages before the first "
	    "and its message, as serial: '%s' after %llu pages", m0,
	    (unsigned long long)t0.calls);
out:
	free(img);
	unlink(path);
	free(path);
}

static void
test_garbage(void)
{
	struct err e = ERR_INIT;
	struct img_reader *r;
	uint8_t buf[65536];
	uint64_t s = 99;
	struct mem m = { buf, 0 };
	char *p = tpath("empty.img");
	size_t i;
	int fd;

	r = open_mem(&m, &e);
	check(r == NULL && strstr(e.msg, "not a snapctl image"),
	    "garbage: zero-length input: %s", e.msg);
	err_clear(&e);
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rnd(&s);
	m.len = sizeof(buf);
	r = open_mem(&m, &e);
	check(r == NULL && strstr(e.msg, "not a snapctl image"),
	    "garbage: random bytes: %s", e.msg);
	err_clear(&e);
	/* Only the magic right. */
	put_le32(buf + IMG_HDR_SKIP_MAGIC, IMG_SKIP_HDR);
	put_le32(buf + IMG_HDR_SKIP_LEN, IMG_HDR_SIZE - IMG_SKIP_SIZE);
	memcpy(buf + IMG_HDR_MAGIC, IMG_MAGIC, IMG_MAGIC_LEN);
	r = open_mem(&m, &e);
	check(r == NULL && e.msg[0] != '\0', "garbage: right magic, random "
	    "rest: %s", e.msg);
	err_clear(&e);
	fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	close(fd);
	r = img_open(p, &e);
	check(r == NULL && strstr(e.msg, "not a snapctl image") &&
	    strstr(e.msg, p), "garbage: img_open of an empty file: %s", e.msg);
	err_clear(&e);
	unlink(p);
	r = img_open(p, &e);
	check(r == NULL && e.sys_errno == ENOENT,
	    "garbage: a missing file: %s", e.msg);
	free(p);
}

static void
test_crash_safety(void)
{
	struct img_opts o = IMG_OPTS_INIT;
	struct err e = ERR_INIT;
	struct img_writer *w;
	struct model m;
	char *path = tpath("crash.img");
	struct stat st;
	uint64_t rs = 5, pg;
	int fd, bad = 0;

	model_init(&m, mlens, mnames, ARRAY_SIZE(mlens));
	o.cache_bytes = 262144;
	w = img_writer_new(path, &o, &e);
	check(w != NULL, "crash: writer starts (%s)", e.msg);
	if (w == NULL)
		goto out;
	send_head(w, &m, &e);
	for (pg = 0; pg < m.npages; pg++) {
		model_send(&m, w, pg, &rs, &e);
		if (pg % 500 == 0 && lstat(path, &st) == 0)
			bad = 1;
	}
	check(!bad && lstat(path, &st) < 0,
	    "crash: the final name does not exist before commit");
	check(dir_count(tmpdir) == 1, "crash: one temporary file meanwhile "
	    "(the scratch is unlinked)");
	img_writer_free(w);
	check(dir_count(tmpdir) == 0, "crash: free without commit leaves "
	    "nothing");

	/* A commit that fails (no device state) leaves nothing either. */
	w = img_writer_new(path, &o, &e);
	send_head(w, &m, &e);
	for (pg = 0; pg < m.npages; pg++)
		model_send(&m, w, pg, &rs, &e);
	check(img_writer_commit(w, NULL, &e) < 0 &&
	    strstr(e.msg, "device state") != NULL,
	    "crash: commit without a device state fails: %s", e.msg);
	err_clear(&e);
	img_writer_free(w);
	check(dir_count(tmpdir) == 0, "crash: ... and leaves nothing");

	/* Sink errors: a page outside its block. */
	w = img_writer_new(path, &o, &e);
	send_head(w, &m, &e);
	check(img_writer_sink()->page(w, 2, 2 * PAGE, NULL, &e) < 0 &&
	    strstr(e.msg, "outside RAM block 'tiny'"),
	    "crash: a page past its block is refused: %s", e.msg);
	err_clear(&e);
	check(img_writer_sink()->page(w, 9, 0, NULL, &e) < 0,
	    "crash: a page of an unknown block is refused: %s", e.msg);
	err_clear(&e);
	img_writer_free(w);

	/* An existing path is refused and kept. */
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	close(fd);
	w = img_writer_new(path, &o, &e);
	check(w == NULL && e.kind == ERR_FAIL && strstr(e.msg, "exists"),
	    "crash: an existing path is refused: %s", e.msg);
	err_clear(&e);
	check(dir_count(tmpdir) == 1 && lstat(path, &st) == 0 &&
	    st.st_size == 0, "crash: ... and left as it was");
	unlink(path);
	/* Commit refuses to replace a path created meanwhile. */
	w = img_writer_new(path, &o, &e);
	send_head(w, &m, &e);
	send_end(w, 0, &e);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	close(fd);
	check(img_writer_commit(w, NULL, &e) < 0 && strstr(e.msg, "exists"),
	    "crash: commit does not replace a file created meanwhile: %s",
	    e.msg);
	err_clear(&e);
	img_writer_free(w);
	check(dir_count(tmpdir) == 1, "crash: ... and removes its temporary "
	    "file");
	unlink(path);
	img_writer_free(NULL);
out:
	model_free(&m);
	free(path);
}

/* Fill a writer with random pages until it fails; 0 if it did. */
static int
fill_until_error(const char *path, uint64_t npages, struct err *e)
{
	struct img_opts o = IMG_OPTS_INIT;
	struct stream_block blk;
	struct img_writer *w;
	struct model m;
	uint8_t buf[PAGE];
	uint64_t pg;
	int rc = -1;

	memset(&blk, 0, sizeof(blk));
	snprintf(blk.name, sizeof(blk.name), "pc.ram");
	blk.used_length = npages * PAGE;
	m.blocks = &blk;
	m.nblocks = 1;
	o.cache_bytes = 4 * 262144;
	o.threads = 2;
	if ((w = img_writer_new(path, &o, e)) == NULL)
		return 0;
	if (send_head(w, &m, e) < 0)
		goto fail;
	for (pg = 0; pg < npages; pg++) {
		fill(buf, pg * 5);	/* random pages */
		if (img_writer_sink()->page(w, 0, pg * PAGE, buf, e) < 0)
			goto fail;
	}
	if (send_end(w, 0, e) < 0 || img_writer_commit(w, NULL, e) < 0)
		goto fail;
	goto out;
fail:
	rc = 0;
out:
	img_writer_free(w);
	return rc;
}

static void
test_nospc(void)
{
	struct err e = ERR_INIT;
	char *mnt = tpath("tiny"), *path;
	struct rlimit old, lim;

	mkdir(mnt, 0700);
	path = xasprintf("%s/full.img", mnt);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") == 0) {
		check(fill_until_error(path, 2048, &e) == 0 &&
		    e.kind == ERR_NOSPC, "nospc: a full file system is "
		    "ERR_NOSPC: %s", e.msg);
		check(dir_count(mnt) == 0, "nospc: nothing left behind");
		umount(mnt);
	} else {
		printf("ok %d - nospc: full tmpfs # SKIP cannot mount (%s)\n",
		    ++tap_n, strerror(errno));
	}
	err_clear(&e);
	/* File size limit: EFBIG instead of a signal. */
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = 512 * 1024;
	setrlimit(RLIMIT_FSIZE, &lim);
	check(fill_until_error(path, 2048, &e) == 0 && e.sys_errno == EFBIG,
	    "nospc: a file size limit fails cleanly: %s", e.msg);
	setrlimit(RLIMIT_FSIZE, &old);
	check(dir_count(mnt) == 0, "nospc: nothing left behind");
	rmdir(mnt);
	free(mnt);
	free(path);
}

int
main(void)
{
	char tmpl[] = "/tmp/unit-save.XXXXXX";
	const char *base = getenv("TMPDIR");
	char *t;

	t = xasprintf("%s/unit-save.XXXXXX", base ? base : "/tmp");
	tmpdir = mkdtemp(t);
	if (tmpdir == NULL)
		tmpdir = mkdtemp(tmpl);
	if (tmpdir == NULL) {
		printf("not ok 1 - cannot create a temporary directory\n");
		return 1;
	}
	check(crc32c(0, "123456789", 9) == 0xe3069283u,
	    "crc32c check value, as the man page says");
	test_model();
	test_compaction();
	test_scratch_bounded(0);
	test_scratch_bounded(1);
	test_corruption();
	test_verify_parallel();
	test_frame_crcs();
	test_foreach_parallel();
	test_garbage();
	test_crash_safety();
	test_nospc();
	rm_rf_files(tmpdir);
	rmdir(tmpdir);
	if (tmpdir != tmpl)
		free(t);
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}
