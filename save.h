/*
 * save.h - snapctl's compact memory image (format: man/snapctl-image.5).
 *
 * The writer receives what the stream parser finds and keeps only the newest
 * copy of every page: guest RAM is cut into chunks of 64 pages, each stored
 * as an independent zstd frame of its non-zero pages behind an index; zero
 * pages and chunks are flags.  Memory use is a fixed chunk cache plus a few
 * bits per page; compression runs on a thread pool.  The image appears under
 * its final name only when complete (temporary name, fsync, rename).
 *
 * The reader decodes any page by decoding only its chunk.  Never prints,
 * never exits.
 *
 * Threads: a writer belongs to one thread at a time (its sink callbacks
 * run on the parser's thread); inside, it runs opts.threads compression
 * threads of its own, joined by img_writer_free().  A reader is not
 * thread-safe (it caches the last decoded chunk): use one per thread.
 */
#ifndef SNAPCTL_SAVE_H
#define SNAPCTL_SAVE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "stream.h"

#define IMG_CHUNK_PAGES 64u

/* Image-wide flags (header). */
#define IMG_F_SWITCHOVER_START	0x1u	/* source sent COMMAND 11 */
#define IMG_F_NO_END		0x2u	/* source sent no ram END (background) */
#define IMG_F_FRAME_CRCS	0x4u	/* index and header hold frame CRCs */

struct img_opts {
	int level;		/* zstd level; 0 means the default (1) */
	int threads;		/* compression threads; 0 means online CPUs */
	size_t cache_bytes;	/* chunk cache; 0 means the default (192 MiB) */
};
#define IMG_OPTS_INIT { 0, 0, 0 }

struct img_stats {
	uint64_t ram_bytes;	/* sum of block used_lengths */
	uint64_t pages;		/* pages present (sent by the source) */
	uint64_t zero_pages;	/* of those, zero */
	uint64_t data_bytes;	/* compressed bytes of page frames */
	uint64_t file_bytes;	/* size of the image file */
	uint64_t tail_bytes;	/* device tail, uncompressed */
	uint64_t recompressions;/* chunks compressed more than once */
};

struct img_writer;

/*
 * Start an image that will be named path once committed.  The data goes to
 * a temporary file beside it, created 0600 with O_EXCL|O_NOFOLLOW; an
 * existing path is an error (ERR_FAIL).  Returns NULL with e filled.
 */
struct img_writer *img_writer_new(const char *path, const struct img_opts *o,
    struct err *e);

/*
 * A stream_sink that feeds this writer: config, blocks, page, switchover,
 * tail (section is used to count passes).  opaque must be the writer.
 */
const struct stream_sink *img_writer_sink(void);

/* Finish: flush the cache, write index and header, fsync, rename, fsync
 * the directory.  Fills st if not NULL.  After it, free the writer. */
int img_writer_commit(struct img_writer *w, struct img_stats *st,
    struct err *e);

/* Counters so far (pages, zero pages, data bytes written). */
void img_writer_stats(const struct img_writer *w, struct img_stats *st);

/*
 * Free; if not committed, removes every temporary file.  NULL is fine, and
 * so is any state: after a failed callback or commit, or half-way.
 */
void img_writer_free(struct img_writer *w);

/*
 * The reader.  It reads through an I/O interface so tests and fuzzers can
 * feed it memory.  pread returns bytes read (short only at end) or -1.
 */
struct img_io {
	ssize_t (*pread)(void *opaque, void *buf, size_t len, uint64_t off);
	uint64_t size;
	void *opaque;
};

/* What the header and metadata say. */
struct img_meta {
	uint32_t version;
	uint32_t flags;			/* IMG_F_* */
	char machine[256];
	const uint8_t *config;		/* raw configuration section */
	size_t config_len;
	uint32_t ram_section_id;
	const struct stream_block *blocks;
	size_t nblocks;
	uint64_t ram_bytes;
	uint64_t pages;
	uint64_t zero_pages;
	uint64_t data_bytes;		/* compressed page frames */
	uint64_t tail_bytes;		/* device tail, uncompressed */
	uint64_t file_bytes;
	uint64_t chunks;		/* chunks holding a frame */
};

enum img_page_state { IMG_PAGE_ABSENT = 0, IMG_PAGE_ZERO, IMG_PAGE_DATA };

struct img_reader;

/*
 * Open and check header, metadata and index (checksums, bounds, that frames
 * lie inside the file and do not overlap).  Frames are checked lazily, as
 * they are read (their CRC too, with IMG_F_FRAME_CRCS), or all at once by
 * img_verify() or img_check_frames().  NULL with e filled
 * (ERR_FAIL, "'x': not a snapctl image" / "index checksum mismatch").
 */
struct img_reader *img_open(const char *path, struct err *e);
struct img_reader *img_open_io(const struct img_io *io, struct err *e);
const struct img_meta *img_meta(const struct img_reader *r);

/*
 * Read one page: *state tells whether the source sent it and whether it is
 * zero; out (4096 bytes) receives the contents (zeros unless DATA).
 */
int img_read_page(struct img_reader *r, uint32_t block, uint64_t offset,
    uint8_t *out, enum img_page_state *state, struct err *e);

/* Read len raw guest bytes of a block at offset (absent pages read as 0). */
int img_read_at(struct img_reader *r, uint32_t block, uint64_t offset,
    size_t len, uint8_t *out, struct err *e);

/*
 * Call fn for every present page in (block, offset) order, decoding each
 * chunk once; data is NULL for zero pages, else borrowed until fn returns.
 * fn returns 0 or -1 to stop; it must not use r.
 */
typedef int (*img_page_fn)(void *opaque, uint32_t block, uint64_t offset,
    const uint8_t *data, struct err *e);
int img_foreach_page(struct img_reader *r, img_page_fn fn, void *opaque,
    struct err *e);

/*
 * The same, with the frames decoded ahead by nthreads threads, the caller
 * one of them (<= 0: the CPUs this process may run on, at most 4), into a
 * ring of 4 chunks (1 MiB) per thread.  fn runs on the calling thread with
 * the same arguments in the same order, and the error is the same (fn's,
 * or the first bad chunk in order).  The other threads share r's file and
 * block all signals; r from img_open_io(), or one thread, means plain
 * img_foreach_page().
 */
int img_foreach_page_parallel(struct img_reader *r, int nthreads,
    img_page_fn fn, void *opaque, struct err *e);

/* The device tail, decompressed, into *out (caller frees with free()). */
int img_read_tail(struct img_reader *r, uint8_t **out, size_t *len,
    struct err *e);

/*
 * Check every checksum and structure: header, metadata, index, every frame
 * (decoded, checksum, size) and the tail.  0, or -1 with e naming the first
 * bad part ("chunk 17 (block 'pc.ram' offset 0x440000): ...").
 */
int img_verify(struct img_reader *r, struct err *e);

/*
 * The same, the chunks shared among nthreads threads, each with a reader
 * of its own opened on path (r's file); r does the first share and the
 * tail; nthreads <= 0: the online CPUs, at most 8.  The error names the
 * first bad chunk in file order.
 */
int img_verify_parallel(struct img_reader *r, const char *path, int nthreads,
    struct err *e);

/*
 * The quick check before an image is trusted, at the speed of reading the
 * file: with frame CRCs (IMG_F_FRAME_CRCS, every image the writer makes),
 * the CRC-32C and zstd frame header of every frame and of the tail, read
 * in large sequential reads and not decoded, on nthreads threads (<= 0:
 * the CPUs this process may run on, at most 8) that share r's file when r
 * comes from img_open() (else on this thread alone).  What img_open()
 * checked was checked already.  Without frame CRCs, img_verify_parallel()
 * on path, or img_verify() when path is NULL.  0, or -1 with e naming the
 * first bad part as img_verify() does.  img_verify() is still the stronger
 * check: it also decodes.
 */
int img_check_frames(struct img_reader *r, const char *path, int nthreads,
    struct err *e);

void img_close(struct img_reader *r);

#endif
