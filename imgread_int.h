/*
 * imgread_int.h - what the reader (imgread.c) shares with the checks
 * (imgcheck.c), the standalone copy (imgcopy.c) and the pack finder
 * (imgpack.c) and no one else: the reader's fields and its frame
 * primitives.  Not a public header.
 */
#ifndef SNAPCTL_IMGREAD_INT_H
#define SNAPCTL_IMGREAD_INT_H

#include <stddef.h>
#include <stdint.h>

#include <zstd.h>

#include "err.h"
#include "imghash.h"
#include "imgread.h"

/* An index entry, as read and checked. */
struct rentry {
	uint64_t off;
	uint64_t present;
	uint64_t zero;
	uint32_t size;
	uint32_t block;
	uint32_t crc;		/* of the frame, with IMG_F_FRAME_CRCS */
	uint32_t pack;		/* version 2: 0 this file, else 1..npacks */
};

/* A pack table entry (version 2) and, when an entry names it, its reader. */
struct rpack {
	uint8_t id[IMG_ID_SIZE];
	uint64_t file_size;
	char hint[256];
	uint64_t refs;		/* entries that name it */
	struct img_reader *r;	/* opened at open when refs > 0 */
};

struct img_reader {
	struct img_io io;
	int fd;
	struct img_meta meta;
	struct stream_block *blocks;
	uint8_t *config;
	uint64_t *bfirst;		/* nblocks + 1 */
	struct rentry *idx;
	uint64_t nchunks;
	uint8_t *hashes;		/* version 2: 32 bytes per chunk */
	uint64_t *byoff;		/* own framed chunks by frame offset */
	uint64_t nown;			/* ... how many */
	struct rpack *packs;		/* version 2: npacks */
	struct img_pack_finder finder;	/* open NULL: the default */
	struct img_hasher *hasher;	/* version 2 */
	uint64_t data_off, data_size, tail_off, tail_size;
	uint64_t index_off, index_size;
	uint32_t tail_crc;		/* with IMG_F_FRAME_CRCS */
	ZSTD_DCtx *dctx;
	uint8_t *zbuf;			/* IMG_FRAME_MAX */
	uint8_t *cbuf;			/* decoded chunk, data pages packed */
	uint64_t cached;		/* chunk in cbuf, or UINT64_MAX */
};

/*
 * Read len bytes at off into buf; what names them in the error ("%s is
 * truncated", "%s lies past the end of the file").  0 or -1.  Only reads
 * r: threads may share it (with a thread-safe io).
 */
int imgr_pread(const struct img_reader *r, void *buf, size_t len,
    uint64_t off, const char *what, struct err *e);

/*
 * Check size bytes of a frame at zbuf without decoding it: its CRC (with
 * frame CRCs), then that its zstd header declares want bytes, a checksum
 * and no dictionary, and that its blocks end exactly at size.  0 or -1.
 */
int imgr_frame_sane(const struct img_reader *r, const uint8_t *zbuf,
    size_t size, size_t want, uint32_t crc, struct err *e);

/* Read a frame of size bytes at off into zbuf and imgr_frame_sane() it. */
int imgr_frame_check(const struct img_reader *r, uint64_t off, size_t size,
    uint8_t *zbuf, size_t want, uint32_t crc, struct err *e);

/* Prefix e with "chunk CI (block 'NAME' offset 0xOFF): ". */
void imgr_chunk_prefix(const struct img_reader *r, uint64_t ci,
    struct err *e);

/*
 * Decode chunk ci's frame (wherever it lives) into r->cbuf (no-op when it
 * is there); a frame from a pack is checked against the entry's hash too.
 */
int imgr_load_chunk(struct img_reader *r, uint64_t ci, struct err *e);

/* The same, never cached, and every version 2 frame's hash checked. */
int imgr_verify_chunk(struct img_reader *r, uint64_t ci, struct err *e);

/* The reader that holds chunk ci's frame: r, or the pack's. */
const struct img_reader *imgr_frame_home(const struct img_reader *r,
    uint64_t ci);

/* Prefix e with "pack P 'HINT' (image HEX): " when chunk ci names a pack. */
void imgr_pack_prefix(const struct img_reader *r, uint64_t ci,
    struct err *e);

#endif
