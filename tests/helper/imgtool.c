/*
 * imgtool - test helper for the image writer and reader (save.c).
 *
 *   imgtool synth [--ram-mib N] [--passes N] [--seed N] [--threads N]
 *                 [--cache-mib N] [--level N] [--final-ram FILE] IMAGE
 *       Feed the writer directly (no stream parser) with synthstream's
 *       page mix: every page of pc.ram sent --passes times, ~30% zero,
 *       ~20% random, ~50% text-like; print ingest time, throughput, CPU
 *       time and peak RSS, one "key value" per line.
 *   imgtool seeds DIR
 *       Write small images, valid and damaged, as fuzz seeds; one of them,
 *       holes, with holes in its data region (flag 0x20).
 *   imgtool nocrc IMAGE OUT
 *       Write IMAGE as an image from before frame CRCs: flag 0x4 clear,
 *       the CRC fields zero, the header and index CRCs made right again.
 *       IMAGE must be version 1 (version 2 requires the flag): make one
 *       with helper-imgv1.
 *   imgtool dump IMAGE
 *       Print what the header, metadata and index say.
 *   imgtool refs IMAGE
 *       One line per chunk whose frame lives in another image: "CHUNK
 *       HINT ID OFFSET SIZE" (ID in hex; the image opened with its packs).
 *   imgtool check IMAGE [THREADS]
 *       Time img_check_frames() and img_verify_parallel() on IMAGE (one
 *       reader, THREADS as they take it, default 0), one "key value" line
 *       each, in milliseconds; exit 1 if either fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "save.h"
#include "util.h"

#define PAGE IMG_PAGE_SIZE
#define POOL_PAGES 16384u

static uint64_t
xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static uint64_t
mix(uint64_t a, uint64_t b)
{
	uint64_t s = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull);

	s ^= s >> 31;
	s *= 0xbf58476d1ce4e5b9ull;
	s ^= s >> 29;
	return s ? s : 1;
}

static void
fill_text(uint8_t *p, uint64_t seed)
{
	static const char *const words[] = {
		"the ", "guest ", "kernel ", "page ", "cache ", "memory ",
		"dirty ", "buffer ", "inode ", "block ", "socket ", "thread ",
		"0x7f3a", "ffff", "\n", "\t", "struct ", "{ ", "} ", "= ",
		"return ", "NULL", "error ", "status ", "json ", "value ",
	};
	size_t n = 0, w, len;
	uint64_t s = seed, v;

	while (n < PAGE) {
		w = xorshift(&s) % ARRAY_SIZE(words);
		len = strlen(words[w]);
		if (len > PAGE - n)
			len = PAGE - n;
		memcpy(p + n, words[w], len);
		n += len;
		if ((xorshift(&s) & 15) == 0 && n + 8 <= PAGE) {
			v = xorshift(&s);
			memcpy(p + n, &v, 8);
			n += 8;
		}
	}
}

static const uint8_t config[] = "\x07\x00\x00\x00\x0apc-q35-7.2";

static double
cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int
synth(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ram-mib", required_argument, NULL, 'r' },
		{ "passes", required_argument, NULL, 'p' },
		{ "seed", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "cache-mib", required_argument, NULL, 'c' },
		{ "level", required_argument, NULL, 'l' },
		{ "final-ram", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	const struct stream_sink *sink = img_writer_sink();
	uint64_t ram_mib = 1024, passes = 3, seed = 1, threads = 0, cache = 0;
	uint64_t level = 0, npages, pass, i, r, sel, rs, bytes = 0;
	struct img_opts o = IMG_OPTS_INIT;
	struct stream_block blocks[3];
	struct img_writer *w = NULL;
	struct img_stats st;
	struct err e = ERR_INIT;
	struct rusage ru;
	uint8_t *pool, *page, tail[41];
	const char *final_path = NULL, *why;
	double t0, t1, c0, c1;
	int ch, final_fd = -1;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		uint64_t *dst = ch == 'r' ? &ram_mib : ch == 'p' ? &passes :
		    ch == 's' ? &seed : ch == 't' ? &threads :
		    ch == 'c' ? &cache : ch == 'l' ? &level : NULL;
		if (ch == 'f') {
			final_path = optarg;
			continue;
		}
		if (dst == NULL || parse_u64(optarg, 0, 1u << 30, dst,
		    &why) < 0) {
			fprintf(stderr, "imgtool synth: bad option\n");
			return 2;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "usage: imgtool synth [options] IMAGE\n");
		return 2;
	}
	if (final_path != NULL && (final_fd = open(final_path, O_WRONLY |
	    O_CREAT | O_TRUNC, 0600)) < 0) {
		perror(final_path);
		return 1;
	}
	o.threads = (int)threads;
	o.cache_bytes = (size_t)cache << 20;
	o.level = (int)level;
	memset(blocks, 0, sizeof(blocks));
	snprintf(blocks[0].name, sizeof(blocks[0].name), "pc.ram");
	blocks[0].used_length = ram_mib << 20;
	snprintf(blocks[1].name, sizeof(blocks[1].name),
	    "0000:00:01.0/vga.vram");
	blocks[1].used_length = 16u << 20;
	snprintf(blocks[2].name, sizeof(blocks[2].name), "pc.bios");
	blocks[2].used_length = 256u << 10;
	npages = blocks[0].used_length / PAGE;
	pool = xmalloc((size_t)POOL_PAGES * PAGE);
	for (i = 0; i < POOL_PAGES; i++)
		fill_text(pool + i * PAGE, mix(seed, i));
	page = xmalloc(PAGE);

	t0 = (double)now_mono_ns() / 1e9;
	c0 = cpu_seconds();
	if ((w = img_writer_new(argv[optind], &o, &e)) == NULL)
		goto fail;
	if (sink->config(w, config, sizeof(config) - 1, "pc-q35-7.2", &e) < 0 ||
	    sink->blocks(w, blocks, 3, 2, &e) < 0)
		goto fail;
	for (pass = 0; pass < passes; pass++) {
		rs = mix(seed, 1000 + pass);
		if (sink->section(w, pass ? 2 : 1, &e) < 0)
			goto fail;
		for (i = 0; i < npages; i++) {
			r = mix(i, pass + seed) % 100;
			bytes += PAGE;
			if (r < 30) {
				if (sink->page(w, 0, i * PAGE, NULL, &e) < 0)
					goto fail;
				if (pass + 1 == passes && final_fd >= 0) {
					memset(page, 0, PAGE);
					if (write_full(final_fd, page, PAGE) < 0)
						goto fail_final;
				}
				continue;
			}
			if (r < 50) {
				uint64_t *q = (uint64_t *)page;
				size_t k;

				for (k = 0; k < PAGE / 8; k++)
					q[k] = xorshift(&rs);
			} else {
				sel = mix(i * 31 + pass, seed) % POOL_PAGES;
				memcpy(page, pool + sel * PAGE, PAGE);
				memcpy(page, &i, sizeof(i));
				memcpy(page + 8, &pass, sizeof(pass));
			}
			if (sink->page(w, 0, i * PAGE, page, &e) < 0)
				goto fail;
			if (pass + 1 == passes && final_fd >= 0 &&
			    write_full(final_fd, page, PAGE) < 0)
				goto fail_final;
		}
		if (pass == 0) {
			for (i = 0; i < blocks[1].used_length / PAGE; i++)
				if (sink->page(w, 1, i * PAGE, NULL, &e) < 0)
					goto fail;
			fill_text(page, seed);
			for (i = 0; i < blocks[2].used_length / PAGE; i++)
				if (sink->page(w, 2, i * PAGE, page, &e) < 0)
					goto fail;
		}
	}
	memset(tail, 0, sizeof(tail));
	tail[0] = 0x04;
	if (sink->section(w, 3, &e) < 0 ||
	    sink->tail(w, tail, sizeof(tail), &e) < 0)
		goto fail;
	if (img_writer_commit(w, &st, &e) < 0)
		goto fail;
	t1 = (double)now_mono_ns() / 1e9;
	c1 = cpu_seconds();
	img_writer_free(w);
	getrusage(RUSAGE_SELF, &ru);
	printf("page_bytes %llu\n", (unsigned long long)bytes);
	printf("seconds %.2f\n", t1 - t0);
	printf("cpu_seconds %.2f\n", c1 - c0);
	printf("gb_per_s %.2f\n", (double)bytes / 1e9 / (t1 - t0));
	printf("peak_rss_mib %.1f\n", ru.ru_maxrss / 1024.0);
	printf("generator_pool_mib %u\n", POOL_PAGES * PAGE >> 20);
	printf("image_bytes %llu\n", (unsigned long long)st.file_bytes);
	printf("data_bytes %llu\n", (unsigned long long)st.data_bytes);
	printf("pages %llu\nzero_pages %llu\nrecompressions %llu\n",
	    (unsigned long long)st.pages, (unsigned long long)st.zero_pages,
	    (unsigned long long)st.recompressions);
	free(pool);
	free(page);
	if (final_fd >= 0 && close(final_fd) < 0)
		goto fail_final;
	return 0;
fail_final:
	perror(final_path);
	img_writer_free(w);
	return 1;
fail:
	fprintf(stderr, "imgtool synth: %s\n", e.msg);
	img_writer_free(w);
	return 1;
}

/*
 * One small image: blocks of the given page counts, a mix of pages.  With
 * holes, a cache of one chunk and slide_max 1: frames replaced by later
 * passes leave holes in the data region (flag 0x20).
 */
static int
seed_image_holes(const char *path, const uint64_t *npages, size_t nblocks,
    int passes, int switchover, int end, uint64_t seed, int holes,
    struct err *e)
{
	const struct stream_sink *sink = img_writer_sink();
	struct stream_block blocks[4];
	struct img_opts o = IMG_OPTS_INIT;
	struct img_writer *w;
	uint8_t page[PAGE], tail[200];
	uint64_t i, r, s = seed | 1;
	size_t b;
	int p, rc = -1;

	memset(blocks, 0, sizeof(blocks));
	for (b = 0; b < nblocks; b++) {
		snprintf(blocks[b].name, sizeof(blocks[b].name), "%s",
		    b == 0 ? "pc.ram" : b == 1 ? "vga.vram" : "pc.bios");
		blocks[b].used_length = npages[b] * PAGE;
	}
	if (nblocks > 1) {
		blocks[1].has_mr_addr = 1;
		blocks[1].mr_addr = 0xfd000000;
	}
	o.threads = 1;
	if (holes) {
		o.cache_bytes = IMG_CHUNK_BYTES;
		o.slide_max = 1;
	}
	unlink(path);
	if ((w = img_writer_new(path, &o, e)) == NULL)
		return -1;
	if (sink->config(w, config, sizeof(config) - 1, "pc-q35-7.2", e) < 0 ||
	    sink->blocks(w, blocks, nblocks, 2, e) < 0)
		goto out;
	for (p = 0; p < passes; p++)
		for (b = 0; b < nblocks; b++)
			for (i = 0; i < npages[b]; i++) {
				r = xorshift(&s) % 10;
				if (r == 0)
					continue;	/* absent */
				if (r < 4) {
					if (sink->page(w, (uint32_t)b, i * PAGE,
					    NULL, e) < 0)
						goto out;
					continue;
				}
				if (r < 6)
					memset(page, (int)r, PAGE);
				else
					fill_text(page, xorshift(&s));
				if (sink->page(w, (uint32_t)b, i * PAGE, page,
				    e) < 0)
					goto out;
			}
	for (i = 0; i < sizeof(tail); i++)
		tail[i] = (uint8_t)(i % 7);
	if ((switchover && sink->switchover(w, e) < 0) ||
	    (end && sink->section(w, 3, e) < 0) ||
	    sink->tail(w, tail, sizeof(tail), e) < 0 ||
	    img_writer_commit(w, NULL, e) < 0)
		goto out;
	rc = 0;
out:
	img_writer_free(w);
	return rc;
}

static int
seed_image(const char *path, const uint64_t *npages, size_t nblocks,
    int passes, int switchover, int end, uint64_t seed, struct err *e)
{
	return seed_image_holes(path, npages, nblocks, passes, switchover, end,
	    seed, 0, e);
}

/*
 * Clear flag 0x4 and what it adds; fix the CRCs over index and header.
 * -1 (EINVAL) for anything but version 1.
 */
static int
drop_frame_crcs(uint8_t *p, size_t n)
{
	uint64_t ioff, isize, k;

	if (n < IMG_HDR_SIZE || get_le32(p + IMG_HDR_VERSION) != IMG_VERSION) {
		errno = EINVAL;
		return -1;
	}
	ioff = get_le64(p + IMG_HDR_INDEX_OFF);
	isize = get_le64(p + IMG_HDR_INDEX_SIZE);
	if (ioff > n || isize > n - ioff || isize < IMG_SKIP_SIZE)
		return 0;
	put_le32(p + IMG_HDR_FLAGS, get_le32(p + IMG_HDR_FLAGS) &
	    ~IMG_F_FRAME_CRCS);
	put_le32(p + IMG_HDR_TAIL_CRC, 0);
	for (k = ioff + IMG_SKIP_SIZE; k + IMG_ENTRY_SIZE <= ioff + isize;
	    k += IMG_ENTRY_SIZE)
		put_le32(p + k + IMG_ENTRY_FRAME_CRC, 0);
	put_le32(p + IMG_HDR_INDEX_CRC, crc32c(0, p + ioff, (size_t)isize));
	put_le32(p + IMG_HDR_CRC, crc32c(0, p, IMG_HDR_CRC));
	return 0;
}

/* Copy src to dst with byte off XORed with x, cut at cut (0: whole). */
static int
damage(const char *src, const char *dst, uint64_t off, uint8_t x,
    uint64_t cut, int nocrc)
{
	uint8_t *buf = NULL;
	struct stat st;
	int fd = -1, rc = -1;

	if ((fd = open(src, O_RDONLY)) < 0 || fstat(fd, &st) < 0)
		goto out;
	buf = xmalloc((size_t)st.st_size);
	if (read_full(fd, buf, (size_t)st.st_size) != st.st_size)
		goto out;
	close(fd);
	fd = -1;
	if (nocrc && drop_frame_crcs(buf, (size_t)st.st_size) < 0)
		goto out;
	if (off < (uint64_t)st.st_size)
		buf[off] ^= x;
	if (cut == 0 || cut > (uint64_t)st.st_size)
		cut = (uint64_t)st.st_size;
	if ((fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0 ||
	    write_full(fd, buf, (size_t)cut) < 0)
		goto out;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

static int
seeds(const char *dir)
{
	static const uint64_t one[] = { 64 };
	static const uint64_t three[] = { 130, 3, 17 };
	static const uint64_t odd[] = { 65, 1 };
	struct err e = ERR_INIT;
	char *p[5], *d;
	int i, rc = 1;
	uint64_t data_off;
	uint8_t h[IMG_HDR_SIZE];
	int fd;

	for (i = 0; i < 5; i++)
		p[i] = xasprintf("%s/%s", dir, i == 0 ? "one-chunk" :
		    i == 1 ? "three-blocks" : i == 2 ? "odd-switchover" :
		    i == 3 ? "no-end-passes" : "holes");
	if (seed_image(p[0], one, 1, 1, 0, 1, 1, &e) < 0 ||
	    seed_image(p[1], three, 3, 1, 0, 1, 2, &e) < 0 ||
	    seed_image(p[2], odd, 2, 2, 1, 1, 3, &e) < 0 ||
	    seed_image(p[3], one, 1, 3, 0, 0, 4, &e) < 0 ||
	    seed_image_holes(p[4], three, 3, 3, 0, 1, 5, 1, &e) < 0) {
		fprintf(stderr, "imgtool seeds: %s\n", e.msg);
		goto out;
	}
	/* Damaged copies of the three-block image. */
	if ((fd = open(p[1], O_RDONLY)) < 0 || read_full(fd, h, IMG_HDR_SIZE) !=
	    IMG_HDR_SIZE) {
		perror(p[1]);
		goto out;
	}
	close(fd);
	data_off = get_le64(h + IMG_HDR_DATA_OFF);
	d = xasprintf("%s/bad-frame", dir);
	damage(p[1], d, data_off + 100, 0x20, 0, 0);
	free(d);
	d = xasprintf("%s/bad-header", dir);
	damage(p[1], d, IMG_HDR_META_OFF, 0x01, 0, 0);
	free(d);
	d = xasprintf("%s/bad-index", dir);
	damage(p[1], d, get_le64(h + IMG_HDR_INDEX_OFF) + 30, 0x80, 0, 0);
	free(d);
	d = xasprintf("%s/cut", dir);
	damage(p[1], d, 0, 0, get_le64(h + IMG_HDR_TAIL_OFF) + 3, 0);
	free(d);
	/* The same as written before frame CRCs, whole and damaged. */
	d = xasprintf("%s/nocrc-three-blocks", dir);
	damage(p[1], d, 0, 0, 0, 1);
	free(d);
	d = xasprintf("%s/nocrc-bad-frame", dir);
	damage(p[1], d, data_off + 100, 0x20, 0, 1);
	free(d);
	d = xasprintf("%s/nocrc-odd-switchover", dir);
	damage(p[2], d, 0, 0, 0, 1);
	free(d);
	rc = 0;
out:
	for (i = 0; i < 5; i++)
		free(p[i]);
	return rc;
}

static int
dump(const char *path)
{
	struct err e = ERR_INIT;
	struct img_reader *r;
	const struct img_meta *m;
	size_t i;

	if ((r = img_open(path, &e)) == NULL) {
		fprintf(stderr, "imgtool dump: %s\n", e.msg);
		return 1;
	}
	m = img_meta(r);
	printf("version %u\nflags 0x%x\nmachine %s\nconfig_len %zu\n"
	    "ram_section_id %u\n", m->version, m->flags, m->machine,
	    m->config_len, m->ram_section_id);
	for (i = 0; i < m->nblocks; i++)
		printf("block %zu %s %llu%s\n", i, m->blocks[i].name,
		    (unsigned long long)m->blocks[i].used_length,
		    m->blocks[i].has_mr_addr ? " mr_addr" : "");
	printf("ram_bytes %llu\npages %llu\nzero_pages %llu\nchunks %llu\n"
	    "data_bytes %llu\ntail_bytes %llu\nfile_bytes %llu\n",
	    (unsigned long long)m->ram_bytes, (unsigned long long)m->pages,
	    (unsigned long long)m->zero_pages, (unsigned long long)m->chunks,
	    (unsigned long long)m->data_bytes,
	    (unsigned long long)m->tail_bytes,
	    (unsigned long long)m->file_bytes);
	if (m->version >= 2) {
		printf("id ");
		for (i = 0; i < IMG_ID_SIZE; i++)
			printf("%02x", m->id[i]);
		printf("\nnpacks %zu\nown_bytes %llu\nshared_bytes %llu\n"
		    "shared_chunks %llu\n", m->npacks,
		    (unsigned long long)m->own_bytes,
		    (unsigned long long)m->shared_bytes,
		    (unsigned long long)m->shared_chunks);
	}
	img_close(r);
	return 0;
}

static int
refs(const char *path)
{
	struct err e = ERR_INIT;
	struct img_reader *r;
	struct img_chunk_ref cr;
	struct img_pack_info pi;
	uint64_t ci;
	unsigned k;

	if ((r = img_open(path, &e)) == NULL) {
		fprintf(stderr, "imgtool refs: %s\n", e.msg);
		return 1;
	}
	for (ci = 0; ci < img_nchunks(r); ci++) {
		img_chunk_ref(r, ci, &cr);
		if (cr.pack == 0)
			continue;
		img_pack_info(r, cr.pack, &pi);
		printf("%llu %s ", (unsigned long long)ci, pi.hint);
		for (k = 0; k < IMG_ID_SIZE; k++)
			printf("%02x", pi.id[k]);
		printf(" %llu %u\n", (unsigned long long)cr.off, cr.size);
	}
	img_close(r);
	return 0;
}

static int
check_image(int argc, char **argv)
{
	struct err e = ERR_INIT;
	struct img_reader *r;
	uint64_t t0, t1, t2;
	const char *why;
	uint64_t nt = 0;
	int a, b;

	if (argc > 3 && parse_u64(argv[3], 0, 64, &nt, &why) < 0) {
		fprintf(stderr, "imgtool check: threads '%s': %s\n", argv[3],
		    why);
		return 2;
	}
	if ((r = img_open(argv[2], &e)) == NULL) {
		fprintf(stderr, "imgtool check: %s\n", e.msg);
		return 1;
	}
	t0 = now_mono_ns();
	a = img_check_frames(r, argv[2], (int)nt, &e);
	t1 = now_mono_ns();
	if (a < 0)
		fprintf(stderr, "imgtool check: check_frames: %s\n", e.msg);
	err_clear(&e);
	b = img_verify_parallel(r, argv[2], (int)nt, &e);
	t2 = now_mono_ns();
	if (b < 0)
		fprintf(stderr, "imgtool check: verify_parallel: %s\n", e.msg);
	printf("frame_crcs %d\ncheck_frames_ms %.2f\nverify_parallel_ms "
	    "%.2f\n", (img_meta(r)->flags & IMG_F_FRAME_CRCS) != 0,
	    (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6);
	img_close(r);
	return a < 0 || b < 0;
}

int
main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "synth") == 0)
		return synth(argc - 1, argv + 1);
	if (argc == 3 && strcmp(argv[1], "seeds") == 0)
		return seeds(argv[2]);
	if (argc == 3 && strcmp(argv[1], "dump") == 0)
		return dump(argv[2]);
	if (argc == 3 && strcmp(argv[1], "refs") == 0)
		return refs(argv[2]);
	if ((argc == 3 || argc == 4) && strcmp(argv[1], "check") == 0)
		return check_image(argc, argv);
	if (argc == 4 && strcmp(argv[1], "nocrc") == 0) {
		if (damage(argv[2], argv[3], 0, 0, 0, 1) == 0)
			return 0;
		perror("imgtool nocrc");
		return 1;
	}
	fprintf(stderr, "usage: imgtool synth [options] IMAGE | seeds DIR | "
	    "dump IMAGE | refs IMAGE | check IMAGE [THREADS] | nocrc IMAGE OUT\n");
	return 2;
}
