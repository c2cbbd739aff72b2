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
	/* Version 2 (all zero for version 1). */
	uint8_t id[IMG_ID_SIZE];	/* this image's id */
	size_t npacks;			/* pack table entries */
	uint64_t own_bytes;		/* frames in this file (pack 0) */
	uint64_t shared_bytes;		/* frames read from packs */
	uint64_t shared_chunks;		/* entries that name a pack */
};

enum img_page_state { IMG_PAGE_ABSENT = 0, IMG_PAGE_ZERO, IMG_PAGE_DATA };

struct img_reader;

/* An image id as 32 lowercase hex digits and a NUL (IMG_ID_HEX bytes). */
#define IMG_ID_HEX		(2 * IMG_ID_SIZE + 1)
void img_id_hex(const uint8_t id[IMG_ID_SIZE], char out[IMG_ID_HEX]);

/*
 * Version 2 packs (man/snapctl-image.5): where the reader finds the image
 * called id, of file_size bytes, that the image at image_path names hint.
 * Returns a descriptor opened O_RDONLY|O_NOFOLLOW|O_CLOEXEC (the reader
 * owns it), or -1 with e filled (ERR_FAIL, naming hint).  The reader then
 * checks the file's header, metadata and index and that its id and size
 * are the ones asked for.  A NULL finder means img_pack_find_beside().
 */
struct img_pack_finder {
	int (*open)(void *opaque, const char *image_path,
	    const uint8_t id[IMG_ID_SIZE], uint64_t file_size,
	    const char *hint, struct err *e);
	void *opaque;
};

/* The default finder: the file called hint in image_path's directory. */
int img_pack_find_beside(void *opaque, const char *image_path,
    const uint8_t id[IMG_ID_SIZE], uint64_t file_size, const char *hint,
    struct err *e);

/*
 * img_open() with a finder for its packs.  Every pack that an index entry
 * names is found and checked at open (a missing pack fails the open:
 * "pack 'c1' (image 0123abcd...) of 'x': ..."); packs no entry names are
 * not looked for.  A frame read from a pack is checked against the
 * referring entry's size, CRC and hash.  The finder is kept (borrowed) for
 * the readers img_verify_parallel() opens on the same path.
 */
struct img_reader *img_open_finder(const char *path,
    const struct img_pack_finder *finder, struct err *e);

/*
 * Chunk ci (0 to img_nchunks() - 1, in index order) as its entry says:
 * masks, frame (where: pack 0 is r's own file, else 1..npacks), CRC and
 * hash (version 2; has_hash 0 for version 1 and for a chunk without a
 * frame).  Pure: threads may call it on a shared reader.  A ci past the
 * end gives an all-zero ref.
 */
struct img_chunk_ref {
	uint64_t present, zero;
	uint64_t off;
	uint32_t size, crc;
	uint32_t pack;
	int has_hash;
	uint8_t hash[IMG_HASH_SIZE];
};
uint64_t img_nchunks(const struct img_reader *r);
void img_chunk_ref(const struct img_reader *r, uint64_t ci,
    struct img_chunk_ref *out);

/*
 * Pack p (1 to npacks) of the pack table: id, file size, name hint (all
 * zero for another p).
 */
struct img_pack_info {
	uint8_t id[IMG_ID_SIZE];
	uint64_t file_size;
	char hint[256];
	uint64_t refs;			/* entries of r that name it */
};
void img_pack_info(const struct img_reader *r, uint32_t p,
    struct img_pack_info *out);

/*
 * The raw bytes of chunk ci's frame (wherever it lives) into buf
 * (IMG_FRAME_MAX bytes), checked as a lazy read checks it (CRC, size);
 * a frame in a pack is also decoded and checked against this entry's
 * hash (the frame is another image's: export --standalone copies it).
 * *size its length (0 for a chunk without a frame).  0 or -1.
 */
int img_read_frame(struct img_reader *r, uint64_t ci, uint8_t *buf,
    uint32_t *size, struct err *e);

/*
 * Chunk ci's data pages, decoded and packed in page order, into out
 * (IMG_CHUNK_BYTES); *datamask which pages they are.  0 or -1.
 */
int img_read_chunk(struct img_reader *r, uint64_t ci, uint8_t *out,
    uint64_t *datamask, struct err *e);

/*
 * Write a self-contained copy of r (wherever its frames live) at path:
 * version 2 without packs and with a new id, its frames copied, not
 * recompressed; created 0600 with O_EXCL|O_NOFOLLOW beside path, fsynced,
 * renamed into place; an existing path is an error ("'x' already
 * exists").  A version 1 r is copied as version 2 (its chunks decoded once
 * to hash them).  0 or -1 with e filled (nothing left at path).
 */
int img_write_standalone(struct img_reader *r, const char *path,
    struct err *e);

/*
 * Open and check header, metadata and index (checksums, bounds, that frames
 * lie inside the file and do not overlap).  Frames are checked lazily, as
 * they are read (their CRC too, with IMG_F_FRAME_CRCS), or all at once by
 * img_verify() or img_check_frames() (imgcheck.h).  NULL with e filled
 * (ERR_FAIL, "'x': not a snapctl image" / "index checksum mismatch").
 * img_open() keeps its file open until img_close(); img_open_io() copies
 * *io, whose opaque must outlive the reader.  img_open() is
 * img_open_finder(path, NULL, e); img_open_io() refuses an image whose
 * entries name packs (there is no file to find them beside).
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
