/*
 * tests/unit/share.c - image version 2's writer with a base (issue 13):
 * synthetic guests compacted twice, the second time with the first image as
 * base; unchanged chunks name the base's frame (pack 1, never compressed),
 * changed ones have their own; every page read back equals the guest's
 * newest; a chain of three names the first image's frames in one hop; a
 * base with another block table, or of version 1, shares nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>

#include "imgfmt.h"
#include "save.h"
#include "util.h"
#include "tap.h"

#include "synthguest.h"

/*
 * Compact g at path (base: NULL or an open image, hint its file name):
 * pass 1 sends an older version of every page (stale seeds), pass 2 and 3
 * send the final contents, so that a small cache evicts chunks whose
 * frames are replaced later (dead frames, merges through the base).
 */
static int
compact(const struct guest *g, const char *path, struct img_reader *base,
    const char *hint, struct img_stats *st, struct err *e)
{
	struct img_writer *w;
	size_t pg;
	int rc = -1;

	if ((w = guest_writer(g, path, base, hint, 2, 3, e)) == NULL)
		return -1;
	/* Pass 1: the final pages of the even chunks, stale odd ones. */
	for (pg = 0; pg < NPAGES; pg++)
		if (send_page(w, g, pg, (pg / CPAGES) % 2 ? g->seed[pg] ^ 0x55 :
		    g->seed[pg], e) < 0)
			goto out;
	/* Pass 2: half of every chunk's pages (a chunk shared in pass 1
	 * merges the rest from the base), pass 3 the odd chunks' all. */
	for (pg = 0; pg < NPAGES; pg++)
		if (pg % 2 && send_page(w, g, pg, g->seed[pg], e) < 0)
			goto out;
	for (pg = 0; pg < NPAGES; pg++)
		if ((pg / CPAGES) % 2 && send_page(w, g, pg, g->seed[pg], e) < 0)
			goto out;
	rc = guest_writer_end(w, 2000, 0x5a, st, e);
out:
	img_writer_free(w);
	return rc;
}


/* Every page of path, read through the reader (packs found beside). */
static int
same_pages(const struct guest *g, const char *path, const char *what)
{
	struct err e = ERR_INIT;
	struct img_reader *r = img_open_finder(path, NULL, &e);
	enum img_page_state state;
	uint8_t got[PAGE], want[PAGE];
	size_t pg;
	uint32_t b;
	int bad = 0;

	if (!check(r != NULL, "%s: opens with its packs (%s)", what, e.msg))
		return 0;
	for (pg = 0; pg < NPAGES && !bad; pg++) {
		b = pg < NCHUNK * CPAGES ? 0 : 1;
		if (b == 1 && (pg - NCHUNK * CPAGES) * PAGE >= g->vga_len)
			break;
		if (img_read_page(r, b, (pg - (b ? NCHUNK * CPAGES : 0)) *
		    PAGE, got, &state, &e) < 0) {
			note("page %zu: %s", pg, e.msg);
			bad = 1;
			break;
		}
		if (g->seed[pg] == 0) {
			memset(want, 0, PAGE);
			bad = state != IMG_PAGE_ZERO;
		} else {
			fill(want, g->seed[pg]);
			bad = state != IMG_PAGE_DATA;
		}
		if (memcmp(got, want, PAGE) != 0)
			bad = 1;
		if (bad)
			note("page %zu differs (state %d)", pg, state);
	}
	check(!bad, "%s: every page equals the guest's newest", what);
	if (!bad) {
		err_clear(&e);
		check(img_verify(r, &e) == 0, "%s: verifies (%s)", what,
		    e.msg);
	}
	img_close(r);
	return !bad;
}

/* Chunks of g with a frame. */
static unsigned
framed(const struct guest *g)
{
	unsigned n = 0, c, i;

	for (c = 0; c < NPAGES / CPAGES; c++) {
		for (i = 0; i < CPAGES && g->seed[c * CPAGES + i] == 0; i++)
			;
		n += i < CPAGES;
	}
	return n;
}

static void
test_share(void)
{
	struct err e = ERR_INIT;
	struct guest *g = xcalloc(1, sizeof(*g));
	struct img_stats st;
	struct img_reader *a = NULL, *b = NULL, *c = NULL;
	struct img_chunk_ref ref;
	struct img_pack_info pi;
	const struct img_meta *m;
	char *pa = tpath("a.img"), *pb = tpath("b.img"), *pc = tpath("c.img");
	static const uint8_t zero[IMG_ID_SIZE];
	uint8_t ida[IMG_ID_SIZE], idb[IMG_ID_SIZE];
	unsigned n, ci, bad, touched_b[] = { 1, 2, 9 }, touched_c[] = { 3, 9 };
	size_t i;

	guest_init(g, 11);
	n = framed(g);
	check(compact(g, pa, NULL, NULL, &st, &e) == 0, "full image (%s)",
	    e.msg);
	check(st.shared_chunks == 0 && st.hashed_only == 0 &&
	    st.moved_bytes > 0, "no base: nothing shared; dead frames slid "
	    "over (%llu bytes)", (unsigned long long)st.moved_bytes);
	a = img_open(pa, &e);
	if (!check(a != NULL, "full image opens (%s)", e.msg))
		goto out;
	m = img_meta(a);
	check(m->version == IMG_VERSION_2 && (m->flags & IMG_F_FRAME_CRCS) &&
	    !(m->flags & IMG_F_PACKS) && m->npacks == 0 &&
	    memcmp(m->id, zero, IMG_ID_SIZE) != 0, "version 2, CRCs, no "
	    "packs, a non-zero id");
	memcpy(ida, m->id, IMG_ID_SIZE);
	bad = 0;
	for (ci = 0; ci < img_nchunks(a); ci++) {
		img_chunk_ref(a, ci, &ref);
		bad += ref.pack != 0 || (ref.size != 0) != ref.has_hash;
	}
	check(bad == 0 && m->chunks == n, "every frame (%u) has a hash, "
	    "pack 0", n);
	same_pages(g, pa, "full image");

	/* Second: a few chunks changed, the base is the first. */
	for (i = 0; i < ARRAY_SIZE(touched_b); i++)
		guest_touch(g, touched_b[i], 100 + i);
	memset(&st, 0, sizeof(st));
	check(compact(g, pb, a, "a.img", &st, &e) == 0, "image with a base "
	    "(%s)", e.msg);
	check(st.shared_chunks == n - ARRAY_SIZE(touched_b) &&
	    st.hashed_only >= st.shared_chunks, "%llu of %u chunks shared, "
	    "%llu hashed only", (unsigned long long)st.shared_chunks, n,
	    (unsigned long long)st.hashed_only);
	b = img_open_finder(pb, NULL, &e);
	if (!check(b != NULL, "it opens, its base found beside (%s)", e.msg))
		goto out;
	m = img_meta(b);
	memcpy(idb, m->id, IMG_ID_SIZE);
	check(m->version == IMG_VERSION_2 && (m->flags & IMG_F_PACKS) &&
	    m->npacks == 1 && memcmp(idb, ida, IMG_ID_SIZE) != 0,
	    "flag packs, one pack, its own id");
	img_pack_info(b, 1, &pi);
	check(memcmp(pi.id, ida, IMG_ID_SIZE) == 0 &&
	    strcmp(pi.hint, "a.img") == 0 && pi.refs == st.shared_chunks,
	    "pack 1 is the base, named a.img, %llu references",
	    (unsigned long long)pi.refs);
	bad = 0;
	for (ci = 0; ci < img_nchunks(b); ci++) {
		struct img_chunk_ref ra;
		int touched = ci == 1 || ci == 2 || ci == 9;

		img_chunk_ref(b, ci, &ref);
		img_chunk_ref(a, ci, &ra);
		if (ref.size == 0)
			continue;
		if (touched)
			bad += ref.pack != 0;
		else
			bad += ref.pack != 1 || ref.off != ra.off ||
			    ref.size != ra.size || ref.crc != ra.crc ||
			    memcmp(ref.hash, ra.hash, IMG_HASH_SIZE) != 0;
	}
	check(bad == 0, "changed chunks have their own frame, the others name "
	    "the base's");
	check(st.data_bytes < m->data_bytes + 1 && st.data_bytes <
	    (uint64_t)ARRAY_SIZE(touched_b) * IMG_FRAME_MAX, "own frames: "
	    "the changed chunks' only (%llu bytes)",
	    (unsigned long long)st.data_bytes);
	same_pages(g, pb, "image with a base");

	/* Third: its base the second; chunks the first holds stay there. */
	for (i = 0; i < ARRAY_SIZE(touched_c); i++)
		guest_touch(g, touched_c[i], 200 + i);
	memset(&st, 0, sizeof(st));
	check(compact(g, pc, b, "b.img", &st, &e) == 0, "third image of "
	    "the chain (%s)", e.msg);
	c = img_open_finder(pc, NULL, &e);
	if (!check(c != NULL, "it opens with both packs (%s)", e.msg))
		goto out;
	m = img_meta(c);
	check(m->npacks == 2, "its pack table lists the base and the base's "
	    "pack");
	img_pack_info(c, 1, &pi);
	check(memcmp(pi.id, idb, IMG_ID_SIZE) == 0 &&
	    strcmp(pi.hint, "b.img") == 0, "pack 1: the second image");
	img_pack_info(c, 2, &pi);
	check(memcmp(pi.id, ida, IMG_ID_SIZE) == 0 &&
	    strcmp(pi.hint, "a.img") == 0, "pack 2: the first image");
	bad = 0;
	for (ci = 0; ci < img_nchunks(c); ci++) {
		img_chunk_ref(c, ci, &ref);
		if (ref.size == 0)
			continue;
		if (ci == 3 || ci == 9)
			bad += ref.pack != 0;
		else if (ci == 1 || ci == 2)
			bad += ref.pack != 1;	/* the second's own */
		else
			bad += ref.pack != 2;	/* the first's, one hop */
	}
	check(bad == 0, "chain: changed own, the second's frames pack 1, the "
	    "first's pack 2 (one hop)");
	check(st.shared_chunks == n - 2, "%llu chunks shared",
	    (unsigned long long)st.shared_chunks);
	same_pages(g, pc, "third image");

	/* Nothing changed since the third: nothing compressed, no own
	 * frame; in one pass nothing is moved at the commit either. */
	{
		char *pd = tpath("d.img"), *pe = tpath("e.img");

		memset(&st, 0, sizeof(st));
		check(one_pass(g, pd, c, "c.img", &st, &e) == 0 &&
		    st.shared_chunks == n && st.hashed_only == n &&
		    st.data_bytes == 0 && st.moved_bytes == 0, "unchanged "
		    "guest: all %u chunks shared, none compressed (%s)", n,
		    e.msg);
		same_pages(g, pd, "unchanged guest");
		memset(&st, 0, sizeof(st));
		check(one_pass(g, pe, NULL, NULL, &st, &e) == 0 &&
		    st.moved_bytes == 0 && st.data_bytes > 0, "one pass, no "
		    "base: frames stay where they landed (%s)", e.msg);
		same_pages(g, pe, "one pass");
		free(pd);
		free(pe);
	}
out:
	img_close(a);
	img_close(b);
	img_close(c);
	free(pa);
	free(pb);
	free(pc);
	free(g);
}

/* Bases that share nothing: another block table, version 1; a base whose
 * every chunk changed (the pack table dropped again). */
static void
test_no_share(void)
{
	struct err e = ERR_INIT;
	struct guest *g = xcalloc(1, sizeof(*g));
	struct img_stats st;
	struct img_reader *a = NULL, *r = NULL;
	char *pa = tpath("n-a.img"), *pd = tpath("n-d.img");
	char *pv1 = tpath("n-v1.img"), *pe = tpath("n-e.img");
	char *pf = tpath("n-f.img"), *cmd = NULL;
	size_t i;

	guest_init(g, 21);
	check(compact(g, pa, NULL, NULL, &st, &e) == 0, "base (%s)", e.msg);
	a = img_open(pa, &e);
	if (a == NULL)
		goto out;

	g->vga_len = CPAGES * PAGE;	/* another block table */
	for (i = NCHUNK * CPAGES + CPAGES; i < NPAGES; i++)
		g->seed[i] = 0;
	check(compact(g, pd, a, "n-a.img", &st, &e) == 0 &&
	    st.shared_chunks == 0 && st.hashed_only == 0, "another block "
	    "table: nothing shared (%s)", e.msg);
	r = img_open(pd, &e);
	check(r != NULL && img_meta(r)->npacks == 0 &&
	    !(img_meta(r)->flags & IMG_F_PACKS), "... no pack table");
	img_close(r);
	r = NULL;
	g->vga_len = 2 * CPAGES * PAGE;

	/* Every chunk changed: a table was reserved, the frames slide. */
	guest_init(g, 22);
	check(compact(g, pf, a, "n-a.img", &st, &e) == 0 &&
	    st.shared_chunks == 0, "every chunk changed: nothing shared (%s)",
	    e.msg);
	r = img_open(pf, &e);
	check(r != NULL && img_meta(r)->npacks == 0, "... no pack table "
	    "(%s)", e.msg);
	img_close(r);
	r = NULL;
	same_pages(g, pf, "every chunk changed");

	guest_init(g, 21);
	if (access("build/helper-imgv1", X_OK) != 0) {
		note("skip: no build/helper-imgv1 (make helpers)");
		goto out;
	}
	cmd = xasprintf("build/helper-imgv1 '%s' '%s'", pa, pv1);
	if (!check(system(cmd) == 0, "a version 1 copy of the base"))
		goto out;
	img_close(a);
	a = img_open(pv1, &e);
	check(a != NULL && img_meta(a)->version == 1, "it reads as version 1");
	if (a == NULL)
		goto out;
	check(compact(g, pe, a, "n-v1.img", &st, &e) == 0 &&
	    st.shared_chunks == 0 && st.hashed_only == 0, "version 1 base: "
	    "nothing shared (%s)", e.msg);
	same_pages(g, pe, "after a version 1 base");
out:
	img_close(a);
	free(pa);
	free(pd);
	free(pv1);
	free(pe);
	free(pf);
	free(cmd);
	free(g);
}

/*
 * Set chunk ci's frame CRC in image path to crc (index and header CRCs
 * made right again); with flip, first flip a byte in the middle of its
 * frame and take the frame's new CRC.  The new CRC, or 0 on failure.
 */
static uint32_t
patch_entry(const char *path, uint64_t ci, int flip, uint32_t crc)
{
	uint8_t hdr[IMG_HDR_SIZE], *idx = NULL, *ent, *fr = NULL;
	uint64_t ioff, isize, off;
	uint32_t size;
	int fd;

	if ((fd = open(path, O_RDWR)) < 0)
		return 0;
	if (pread_full(fd, hdr, sizeof(hdr), 0) != sizeof(hdr))
		goto fail;
	ioff = get_le64(hdr + IMG_HDR_INDEX_OFF);
	isize = get_le64(hdr + IMG_HDR_INDEX_SIZE);
	idx = xmalloc(isize);
	if (pread_full(fd, idx, isize, (off_t)ioff) != (ssize_t)isize)
		goto fail;
	ent = idx + IMG_SKIP_SIZE + ci * IMG_ENTRY2_SIZE;
	if (flip) {
		off = get_le64(ent + IMG_ENTRY_FRAME_OFF);
		size = get_le32(ent + IMG_ENTRY_FRAME_SIZE);
		fr = xmalloc(size);
		if (pread_full(fd, fr, size, (off_t)off) != (ssize_t)size)
			goto fail;
		fr[size / 2] ^= 0x5a;
		crc = crc32c(0, fr, size);
		if (pwrite_full(fd, fr, size, (off_t)off) < 0)
			goto fail;
	}
	put_le32(ent + IMG_ENTRY_FRAME_CRC, crc);
	put_le32(hdr + IMG_HDR_INDEX_CRC, crc32c(0, idx, isize));
	put_le32(hdr + IMG_HDR_CRC, crc32c(0, hdr, IMG_HDR_CRC));
	if (pwrite_full(fd, idx, isize, (off_t)ioff) < 0 ||
	    pwrite_full(fd, hdr, sizeof(hdr), 0) < 0)
		goto fail;
	free(idx);
	free(fr);
	close(fd);
	return crc;
fail:
	free(idx);
	free(fr);
	close(fd);
	return 0;
}

/*
 * img_read_frame() of an entry naming a pack checks the frame against the
 * entry's hash (export --standalone copies such frames): copies of the
 * chain where a frame of the 1st changed (its CRC, and the 5th entry's,
 * made right again, its hash not) fail there; the 5th's own frames read.
 */
static void
frame_hash_case(void)
{
	struct err e = ERR_INIT;
	struct img_reader *r;
	struct img_chunk_ref ref;
	uint8_t *frame = xmalloc(IMG_FRAME_MAX);
	uint64_t ci, nc, shared = UINT64_MAX, own = UINT64_MAX;
	char *d = tpath("fh"), *cmd, *p5 = tpath("fh/chain5.img");
	char *p1 = tpath("fh/chain1.img");
	uint32_t size, crc = 0;

	cmd = xasprintf("mkdir -p '%s' && cd '%s' && cp ../chain1.img "
	    "../chain4.img ../chain5.img .", d, d);
	check(system(cmd) == 0, "frame hash: copies of the chain");
	free(cmd);
	r = img_open_finder(p5, NULL, &e);
	if (!check(r != NULL, "frame hash: the copy opens (%s)", e.msg))
		goto out;
	nc = img_nchunks(r);
	for (ci = 0; ci < nc; ci++) {
		img_chunk_ref(r, ci, &ref);
		if (ref.size != 0 && ref.pack == 2 && shared == UINT64_MAX)
			shared = ci;
		if (ref.size != 0 && ref.pack == 0 && own == UINT64_MAX)
			own = ci;
	}
	img_close(r);
	if (!check(shared != UINT64_MAX, "frame hash: an entry names the 1st"))
		goto out;
	crc = patch_entry(p1, shared, 1, 0);
	check(crc != 0 && patch_entry(p5, shared, 0, crc) == crc,
	    "frame hash: a frame of the 1st changed, CRCs made right");
	r = img_open_finder(p5, NULL, &e);
	if (!check(r != NULL, "frame hash: the changed copy opens (%s)",
	    e.msg))
		goto out;
	err_clear(&e);
	check(img_read_frame(r, shared, frame, &size, &e) == -1,
	    "frame hash: img_read_frame of the pack entry fails (%s)", e.msg);
	err_clear(&e);
	check(own == UINT64_MAX || (img_read_frame(r, own, frame, &size, &e)
	    == 0 && size > 0), "frame hash: its own frames read (%s)", e.msg);
	img_close(r);
out:
	free(frame);
	free(d);
	free(p1);
	free(p5);
}

/*
 * A chain of 5 images, each on the one before: 2 to 4 change chunk 1, the
 * 5th nothing.  The 5th names the 4th (chunk 1) and the 1st (the rest):
 * its pack table lists those two, not every generation's (the table grew
 * by one per generation and sharing stopped after 65534).
 */
static void
test_chain(void)
{
	struct err e = ERR_INIT;
	struct guest *g = xcalloc(1, sizeof(*g));
	struct img_stats st;
	struct img_reader *base = NULL, *r;
	struct img_pack_info pi;
	const struct img_meta *m;
	char name[32], hint[32], *path;
	uint32_t k, named;
	int i, ok = 1;

	guest_init(g, 23);
	for (i = 1; i <= 5; i++) {
		snprintf(name, sizeof(name), "chain%d.img", i);
		path = tpath(name);
		if (i >= 2 && i <= 4)
			guest_touch(g, 1, 100 + (uint64_t)i);
		if (one_pass(g, path, base, base ? hint : NULL, &st, &e) < 0)
			ok = 0;
		img_close(base);
		base = img_open_finder(path, NULL, &e);
		if (base == NULL)
			ok = 0;
		memcpy(hint, name, sizeof(hint));
		free(path);
		if (!ok)
			break;
	}
	if (!check(ok, "chain of 5 images written (%s)", e.msg)) {
		img_close(base);
		free(g);
		return;
	}
	r = base;
	m = img_meta(r);
	named = 0;
	for (k = 1; k <= m->npacks; k++) {
		img_pack_info(r, k, &pi);
		note("5th: pack %u '%s' refs %llu", k, pi.hint,
		    (unsigned long long)pi.refs);
		named += pi.refs > 0;
	}
	check(m->npacks == 2 && named == m->npacks, "the 5th's pack table "
	    "holds only the packs its entries name (%u packs, %u named)",
	    (unsigned)m->npacks, named);
	img_close(r);
	path = tpath("chain5.img");
	same_pages(g, path, "5th of a chain");
	frame_hash_case();
	free(path);
	free(g);
}

/*
 * The early check (a chunk whose pages all arrived is hashed in its slot
 * at once, and freed when unchanged): right after each chunk's last page,
 * while its check is likely still running, some chunks get a page
 * rewritten, one turned zero, and chunks already changed from the base
 * (their check finds them changed and keeps the hash) a page rewritten,
 * which must drop the kept hash; then every
 * chunk's first page again (a freed chunk merges the rest from the base).
 * The image must hold the newest pages, verify, and name the base's frame
 * for the chunks never changed.
 */
static void
test_check(void)
{
	struct err e = ERR_INIT;
	struct guest *g = xcalloc(1, sizeof(*g));
	struct img_writer *w = NULL;
	struct img_reader *a = NULL, *r = NULL;
	struct img_chunk_ref ref, ra;
	struct img_stats st;
	char *pa = tpath("k-a.img"), *pk = tpath("k-b.img");
	size_t pg, ci, nch = NPAGES / CPAGES;
	unsigned bad = 0, kept = 0;
	int ok = 0;

	guest_init(g, 23);
	if (!check(one_pass(g, pa, NULL, NULL, &st, &e) == 0, "check: base "
	    "(%s)", e.msg) || (a = img_open(pa, &e)) == NULL)
		goto out;
	if ((w = guest_writer(g, pk, a, "k-a.img", 2, 2, &e)) == NULL)
		goto sent;
	for (ci = 3; ci < nch; ci += 4)	/* changed before they are sent */
		g->seed[ci * CPAGES + 9] = 2000 + ci;
	for (pg = 0; pg < NPAGES; pg++) {
		if (send_page(w, g, pg, g->seed[pg], &e) < 0)
			goto sent;
		if (pg % CPAGES != CPAGES - 1)
			continue;
		ci = pg / CPAGES;
		if (ci % 4 == 1)	/* rewritten under its check */
			g->seed[ci * CPAGES + 5] = 1000 + ci;
		else if (ci % 4 == 2)	/* zeroed under its check */
			g->seed[ci * CPAGES + 7] = 0;
		else if (ci % 4 == 3)	/* found changed, then rewritten */
			g->seed[ci * CPAGES + 5] = 3000 + ci;
		else
			continue;
		if (send_page(w, g, ci * CPAGES + (ci % 4 == 2 ? 7 : 5),
		    g->seed[ci * CPAGES + (ci % 4 == 2 ? 7 : 5)], &e) < 0)
			goto sent;
	}
	/* Not the found-changed ones: their version with the kept hash (or
	 * not) must be the one the image keeps. */
	for (pg = 0; pg < NPAGES; pg += CPAGES)
		if ((pg / CPAGES) % 4 != 3 &&
		    send_page(w, g, pg, g->seed[pg], &e) < 0)
			goto sent;
	if (guest_writer_end(w, 100, 0x44, &st, &e) < 0)
		goto sent;
	ok = 1;
sent:
	img_writer_free(w);
	if (!check(ok, "check: pages rewritten under checks, committed (%s)",
	    e.msg))
		goto out;
	same_pages(g, pk, "check");
	if (!check((r = img_open_finder(pk, NULL, &e)) != NULL, "check: "
	    "opens (%s)", e.msg))
		goto out;
	for (ci = 0; ci < nch; ci++) {
		img_chunk_ref(r, ci, &ref);
		img_chunk_ref(a, ci, &ra);
		if (ra.size == 0)
			continue;
		if (ci % 4 == 1 || ci % 4 == 3 || (ci % 4 == 2 &&
		    (ra.present & ~ra.zero) != (1ull << 7))) {
			bad += ref.pack != 0;	/* changed: its own frame */
		} else if (ci % 4 != 2) {
			kept++;
			bad += ref.pack != 1 || memcmp(ref.hash, ra.hash,
			    IMG_HASH_SIZE) != 0;
		}
	}
	check(bad == 0 && kept > 0 && st.shared_chunks >= kept,
	    "check: the %u chunks never changed name the base's frame, the "
	    "changed ones their own (%llu shared)", kept,
	    (unsigned long long)st.shared_chunks);
out:
	img_close(r);
	img_close(a);
	free(pa);
	free(pk);
	free(g);
}

/*
 * The early check against random traffic (written by a reviewer as a fuzz
 * test): a base, then three passes of a guest whose pages turn new, zero
 * or back to the base's, with extra rewrites of recently sent pages (some
 * under their chunk's check), through caches of 1 to 4 chunks and 1 to 3
 * threads.  Every page read back must be the newest and the image verify.
 */
static int
check_random_one(uint64_t seed, int nslots, int threads)
{
	struct err e = ERR_INIT;
	struct guest *g = xcalloc(1, sizeof(*g)), *b0 = xcalloc(1, sizeof(*g));
	struct img_writer *w = NULL;
	struct img_reader *a = NULL;
	struct img_stats st;
	char *pa = tpath("f-a.img"), *pk = tpath("f-b.img");
	uint64_t s = seed | 1, r, t;
	size_t pg, k, n, q;
	int ok = 0, pass;

	guest_init(g, seed);
	if (one_pass(g, pa, NULL, NULL, &st, &e) != 0 ||
	    (a = img_open(pa, &e)) == NULL)
		goto sent;
	*b0 = *g;
	if ((w = guest_writer(g, pk, a, "f-a.img", threads, (unsigned)nslots,
	    &e)) == NULL)
		goto sent;
	for (pass = 0; pass < 3; pass++) {
		for (pg = 0; pg < NPAGES; pg++) {
			r = rnd(&s);
			if (pass > 0 && r % 4 != 0)
				continue;
			if (r % 13 == 1)
				g->seed[pg] = rnd(&s) | 1;
			else if (r % 13 == 2)
				g->seed[pg] = 0;
			else if (r % 13 == 3)
				g->seed[pg] = b0->seed[pg];
			if (send_page(w, g, pg, g->seed[pg], &e) < 0)
				goto sent;
			if (r % 5 != 0)
				continue;
			n = 1 + rnd(&s) % 3;
			for (k = 0; k < n; k++) {
				q = pg >= 200 ? pg - rnd(&s) % 200 :
				    rnd(&s) % (pg + 1);
				t = rnd(&s) % 4;
				g->seed[q] = t == 0 ? rnd(&s) | 1 : t == 1 ? 0 :
				    b0->seed[q];
				if (send_page(w, g, q, g->seed[q], &e) < 0)
					goto sent;
			}
		}
	}
	if (guest_writer_end(w, 100, 0x44, &st, &e) < 0)
		goto sent;
	ok = 1;
sent:
	img_writer_free(w);
	if (!ok)
		note("seed %llu: %s", (unsigned long long)seed, e.msg);
	else
		ok = same_pages(g, pk, "check, random");
	img_close(a);
	unlink(pa);
	unlink(pk);
	free(pa);
	free(pk);
	free(g);
	free(b0);
	return ok;
}

static void
test_check_random(void)
{
	unsigned i, bad = 0;

	for (i = 1; i <= 12; i++)
		bad += !check_random_one(i * 7919, 1 + (int)(i % 4),
		    1 + (int)(i % 3));
	check(bad == 0, "check, random: 12 runs of three passes with "
	    "rewrites, caches of 1 to 4 chunks, 1 to 3 threads (%u bad)", bad);
}

/*
 * Chunks whose content moved: a chunk found in none of the parent's same
 * places names the frame of the parent's chunk that holds its content
 * (shared_elsewhere), through the cache's eviction and through the early
 * check; a grandchild keeps one hop.
 */
static void
test_moved(void)
{
	struct err e = ERR_INIT;
	struct guest *g = xcalloc(1, sizeof(*g));
	struct img_stats st;
	struct img_reader *a = NULL, *b = NULL, *c = NULL;
	struct img_chunk_ref ra, rb;
	char *pa = tpath("m-a.img"), *pb = tpath("m-b.img");
	char *pc = tpath("m-c.img");
	uint64_t tmp[CPAGES];
	unsigned bad = 0, k, src;
	int rc;

	guest_init(g, 41);
	rc = one_pass(g, pa, NULL, NULL, &st, &e);
	a = rc == 0 ? img_open(pa, &e) : NULL;
	if (!check(a != NULL, "moved: parent (%s)", e.msg))
		goto out;
	/* Chunk 9 takes the content of src, the first chunk from 5 on with
	 * a frame (src keeps it); 3 and 4 swap. */
	for (src = 5; src < NCHUNK; src++) {
		img_chunk_ref(a, src, &ra);
		if (src != 9 && ra.size != 0)
			break;
	}
	img_chunk_ref(a, 3, &ra);
	img_chunk_ref(a, 4, &rb);
	if (!check(src < NCHUNK && ra.size != 0 && rb.size != 0,
	    "moved: chunks 3, 4 and %u have frames", src))
		goto out;
	memcpy(&g->seed[9 * CPAGES], &g->seed[src * CPAGES], sizeof(tmp));
	memcpy(tmp, &g->seed[3 * CPAGES], sizeof(tmp));
	memcpy(&g->seed[3 * CPAGES], &g->seed[4 * CPAGES], sizeof(tmp));
	memcpy(&g->seed[4 * CPAGES], tmp, sizeof(tmp));
	memset(&st, 0, sizeof(st));
	rc = compact(g, pb, a, "m-a.img", &st, &e);
	check(rc == 0 && st.shared_elsewhere == 3, "moved: 3 chunks name "
	    "the frame of another chunk of the parent (%llu; %llu shared) %s",
	    (unsigned long long)st.shared_elsewhere,
	    (unsigned long long)st.shared_chunks, e.msg);
	b = img_open_finder(pb, NULL, &e);
	if (!check(b != NULL, "moved: child opens (%s)", e.msg))
		goto out;
	for (k = 0; k < 3; k++) {
		unsigned to = k == 0 ? 9 : k == 1 ? 3 : 4;
		unsigned from = k == 0 ? src : k == 1 ? 4 : 3;

		img_chunk_ref(b, to, &rb);
		img_chunk_ref(a, from, &ra);
		bad += rb.pack != 1 || rb.off != ra.off || rb.size != ra.size ||
		    memcmp(rb.hash, ra.hash, IMG_HASH_SIZE) != 0;
		note("moved: chunk %u: pack %u off %llu size %u; parent chunk "
		    "%u off %llu size %u", to, rb.pack,
		    (unsigned long long)rb.off, rb.size, from,
		    (unsigned long long)ra.off, ra.size);
	}
	check(bad == 0, "moved: chunks 9, 3 and 4 name the parent's frames "
	    "of chunks %u, 4 and 3", src);
	check(img_verify(b, &e) == 0, "moved: the child verifies (%s)", e.msg);
	same_pages(g, pb, "moved: child");
	/* The grandchild: nothing changed; what the child names stays one
	 * hop (the parent's own frames, pack 2 or whatever its number). */
	rc = compact(g, pc, b, "m-b.img", &st, &e);
	c = rc == 0 ? img_open_finder(pc, NULL, &e) : NULL;
	check(c != NULL && img_verify(c, &e) == 0 && st.data_bytes == 0,
	    "moved: a grandchild of nothing new verifies (%s)", e.msg);
	same_pages(g, pc, "moved: grandchild");
out:
	img_close(a);
	img_close(b);
	img_close(c);
	free(pa);
	free(pb);
	free(pc);
	free(g);
}

/*
 * The commit leaves the holes when sliding would move more than
 * slide_max (here 1 byte): flag 0x20, nothing moved, the dead frames'
 * blocks punched; the image reads, verifies and is a base like any other.
 */
static void
test_holes(void)
{
	struct err e = ERR_INIT;
	struct guest *g = xcalloc(1, sizeof(*g));
	struct img_stats st, sl;
	struct img_reader *a = NULL, *b = NULL;
	char *pa = tpath("h-a.img"), *pb = tpath("h-b.img");
	char *ps = tpath("h-slid.img"), *pv = tpath("h-v1.img");
	struct stat sa;
	int rc;

	guest_init(g, 31);
	memset(&sl, 0, sizeof(sl));
	memset(&sa, 0, sizeof(sa));
	rc = compact(g, ps, NULL, NULL, &sl, &e);
	check(rc == 0 && sl.moved_bytes > 0 && sl.hole_bytes == 0,
	    "holes: by default the commit slides (%llu bytes) %s",
	    (unsigned long long)sl.moved_bytes, e.msg);
	writer_slide_max = 1;
	rc = compact(g, pa, NULL, NULL, &st, &e);
	check(rc == 0, "holes: image (%s)", e.msg);
	check(st.moved_bytes == 0 && st.hole_bytes > 0 &&
	    st.data_bytes == sl.data_bytes, "holes: nothing moved, %llu "
	    "bytes of holes, the same %llu live bytes",
	    (unsigned long long)st.hole_bytes,
	    (unsigned long long)st.data_bytes);
	a = img_open(pa, &e);
	if (!check(a != NULL, "holes: opens (%s)", e.msg))
		goto out;
	check((img_meta(a)->flags & IMG_F_HOLES) &&
	    img_meta(a)->data_bytes == st.data_bytes,
	    "holes: flag 0x20, data_bytes counts the frames only");
	rc = stat(pa, &sa);
	check(rc == 0 && (uint64_t)sa.st_blocks * 512 < (uint64_t)sa.st_size,
	    "holes: the file is sparse (%lld allocated of %lld)",
	    (long long)sa.st_blocks * 512, (long long)sa.st_size);
	check(img_verify(a, &e) == 0 && img_check_frames(a, pa, 2, &e) == 0,
	    "holes: verifies, quick check passes (%s)", e.msg);
	same_pages(g, pa, "holes");
	if (access("build/helper-imgv1", X_OK) == 0) {
		char *cmd = xasprintf("build/helper-imgv1 '%s' '%s'", pa, pv);

		rc = system(cmd);
		free(cmd);
		check(rc == 0, "holes: a version 1 copy (dense)");
		same_pages(g, pv, "holes: its version 1 copy");
	}
	guest_touch(g, 3, 32);
	guest_touch(g, 7, 33);
	rc = compact(g, pb, a, "h-a.img", &st, &e);
	check(rc == 0 && st.shared_chunks > 0, "holes: a child shares %llu "
	    "chunks with it (%s)", (unsigned long long)st.shared_chunks,
	    e.msg);
	b = img_open(pb, &e);
	check(b != NULL && img_verify(b, &e) == 0, "holes: the child "
	    "verifies (%s)", e.msg);
	same_pages(g, pb, "holes: child");
out:
	writer_slide_max = 0;
	img_close(a);
	img_close(b);
	free(pa);
	free(pb);
	free(ps);
	free(pv);
	free(g);
}

int
main(void)
{
	const char *base = getenv("TMPDIR");
	char *t = xasprintf("%s/unit-share.XXXXXX", base ? base : "/tmp");

	tmpdir = mkdtemp(t);
	if (tmpdir == NULL) {
		printf("not ok 1 - cannot create a temporary directory\n");
		return 1;
	}
	test_share();
	test_no_share();
	test_chain();
	test_check();
	test_check_random();
	test_holes();
	test_moved();
	if (tap_failed == 0) {
		char *cmd = xasprintf("rm -rf '%s'", tmpdir);

		if (system(cmd) != 0)
			note("cannot remove %s", tmpdir);
		free(cmd);
	}
	free(t);
	return tap_done();
}
