/*
 * save.h - snapctl's compact memory image, the writer (format:
 * man/snapctl-image.5, its constants in imgfmt.h).
 *
 * The writer receives what the stream parser finds and keeps only the newest
 * copy of every page: guest RAM is cut into chunks of 64 pages, each stored
 * as an independent zstd frame of its non-zero pages behind an index; zero
 * pages and chunks are flags.  Memory use is a fixed chunk cache plus a few
 * bits per page; compression runs on a thread pool.  The image appears under
 * its final name only when complete (temporary name, fsync, rename).
 * Never prints, never exits.
 *
 * Threads: a writer belongs to one thread at a time (its sink callbacks
 * run on the parser's thread); inside, it runs opts.threads compression
 * threads of its own, joined by img_writer_free().
 *
 * The reader is imgread.h and the checks imgcheck.h; this header brings
 * both in too, for the callers that write, read and check images.
 */
#ifndef SNAPCTL_SAVE_H
#define SNAPCTL_SAVE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "imgcheck.h"
#include "imgfmt.h"
#include "imgread.h"
#include "stream.h"

struct img_opts {
	int level;		/* zstd level; 0 means the default (1) */
	int threads;		/* compression threads; 0 means online CPUs */
	size_t cache_bytes;	/* chunk cache; 0 means the default (192 MiB) */
	/*
	 * Incremental: the parent's image (borrowed, opened with its packs
	 * found; it must outlive the writer).  A chunk whose hash equals
	 * the base's entry for the same chunk is not compressed: its entry
	 * names the base's frame (pack 1 is the base, named base_hint; the
	 * base's own packs that its entries name follow it).  A base of
	 * version 1, with SHA-256 hashes (written before BLAKE3), or whose
	 * block table differs, shares nothing.
	 */
	struct img_reader *base;
	const char *base_hint;	/* the base's name for pack lookups */
	/*
	 * The most frame bytes the commit slides down over the holes that
	 * replaced frames left; past it the holes stay (punched; flag 0x20
	 * of man/snapctl-image.5).  0 means the default (256 MiB).
	 */
	uint64_t slide_max;
};
#define IMG_OPTS_INIT { 0, 0, 0, NULL, NULL, 0 }

/*
 * The most bytes of dead frames (frames a newer copy of their chunk
 * replaced) the writer holds in the file before it punches them: room
 * a capture needs beyond the live frames (ckcapture.c's room check).
 */
#define IMG_DEAD_HELD_MAX (16u << 20)

struct img_stats {
	uint64_t ram_bytes;	/* sum of block used_lengths */
	uint64_t pages;		/* pages present (sent by the source) */
	uint64_t zero_pages;	/* of those, zero */
	uint64_t data_bytes;	/* compressed bytes of page frames */
	uint64_t file_bytes;	/* size of the image file */
	uint64_t tail_bytes;	/* device tail, uncompressed */
	uint64_t recompressions;/* chunks compressed more than once */
	uint64_t shared_chunks;	/* entries naming a base's frame */
	uint64_t shared_bytes;	/* their frames' bytes */
	uint64_t shared_elsewhere; /* of those, naming the frame of another
				 * chunk of the base (same content) */
	uint64_t hashed_only;	/* chunks hashed and found unchanged,
				 * never compressed */
	uint64_t moved_bytes;	/* frame bytes the commit slid down over
				 * the holes replaced frames left */
	uint64_t hole_bytes;	/* data region bytes in no frame: holes
				 * the commit left (flag 0x20) */
	double cpu_s;		/* CPU seconds of the writer's threads and
				 * its commit (not the thread that fed it) */
	double receive_cpu_s;	/* ingest: of the thread draining the fd
				 * (0 when direct: the feeder read it) */
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

#endif
