/*
 * imgread.h - the compact memory image's reader (format:
 * man/snapctl-image.5, constants in imgfmt.h): it checks header, metadata
 * and index at open and decodes any page by decoding only its chunk.
 * Never prints, never exits.
 *
 * Threads: a reader is not thread-safe (it caches the last decoded
 * chunk): use one per thread.
 */
#ifndef SNAPCTL_IMGREAD_H
#define SNAPCTL_IMGREAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "imgfmt.h"
#include "stream.h"

/*
 * How the reader reads: tests and fuzzers feed it memory.  pread returns
 * bytes read (short only at end) or -1.
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
 * img_verify() or img_check_frames() (imgcheck.h).  NULL with e filled
 * (ERR_FAIL, "'x': not a snapctl image" / "index checksum mismatch").
 * img_open() keeps its file open until img_close(); img_open_io() copies
 * *io, whose opaque must outlive the reader.
 */
struct img_reader *img_open(const char *path, struct err *e);
struct img_reader *img_open_io(const struct img_io *io, struct err *e);

/* What the image says (borrowed: valid until img_close()). */
const struct img_meta *img_meta(const struct img_reader *r);

/*
 * The number of the RAM block called name in *index: 0, or -1 when m has
 * no block of that name (*index untouched).
 */
int img_find_block(const struct img_meta *m, const char *name,
    uint32_t *index);

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

/* Close r and its file.  NULL is fine. */
void img_close(struct img_reader *r);


#endif
