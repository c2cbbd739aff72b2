/*
 * imgfmt.h - the on-disk format of the compact memory image, named once:
 * every magic, limit, flag and byte offset that the writer (save.c), the
 * reader (imgread.c), the checks (imgcheck.c), the fuzzers and the tests
 * use.  The spec is man/snapctl-image.5; the names follow its tables.
 * All integers are little-endian; offsets are bytes.
 */
#ifndef SNAPCTL_IMGFMT_H
#define SNAPCTL_IMGFMT_H

#include <stdint.h>

#include <zstd.h>

/* Geometry: guest RAM is cut into chunks of IMG_CHUNK_PAGES pages. */
#define IMG_PAGE_SIZE		4096u
#define IMG_CHUNK_PAGES		64u
#define IMG_CHUNK_BYTES		(IMG_PAGE_SIZE * IMG_CHUNK_PAGES)

/* Layout: the zstd frame type of each region. */
#define IMG_SKIP_HDR		0x184D2A53u	/* header, skippable frame */
#define IMG_SKIP_META		0x184D2A54u	/* metadata, skippable frame */
#define IMG_SKIP_INDEX		0x184D2A55u	/* index, skippable frame */
#define IMG_SKIP_SIZE		8u	/* a skippable frame's magic, length */
#define IMG_ZSTD_MAGIC		0xFD2FB528u	/* data and tail frames */

/* Header: IMG_HDR_SIZE bytes at offset 0. */
#define IMG_HDR_SIZE		128u
#define IMG_HDR_SKIP_MAGIC	0	/* 4: IMG_SKIP_HDR */
#define IMG_HDR_SKIP_LEN	4	/* 4: IMG_HDR_SIZE - 8 */
#define IMG_HDR_MAGIC		8	/* 8: IMG_MAGIC and a zero byte */
#define IMG_HDR_VERSION		16	/* 4: IMG_VERSION */
#define IMG_HDR_FLAGS		20	/* 4: IMG_F_* */
#define IMG_HDR_PAGE_SIZE	24	/* 4: IMG_PAGE_SIZE */
#define IMG_HDR_CHUNK_PAGES	28	/* 4: IMG_CHUNK_PAGES */
#define IMG_HDR_FILE_SIZE	32	/* 8 */
#define IMG_HDR_META_OFF	40	/* 8 */
#define IMG_HDR_META_SIZE	48	/* 8 */
#define IMG_HDR_DATA_OFF	56	/* 8 */
#define IMG_HDR_DATA_SIZE	64	/* 8 */
#define IMG_HDR_TAIL_OFF	72	/* 8 */
#define IMG_HDR_TAIL_SIZE	80	/* 8 */
#define IMG_HDR_INDEX_OFF	88	/* 8 */
#define IMG_HDR_INDEX_SIZE	96	/* 8 */
#define IMG_HDR_META_CRC	104	/* 4: CRC-32C of the metadata region */
#define IMG_HDR_INDEX_CRC	108	/* 4: CRC-32C of the index region */
#define IMG_HDR_TAIL_CRC	112	/* 4: with IMG_F_FRAME_CRCS, else 0 */
#define IMG_HDR_RESERVED	116	/* 8: reserved */
#define IMG_HDR_CRC		124	/* 4: CRC-32C of bytes 0 to 123 */

#define IMG_MAGIC		"SNAPIMG"	/* 8 bytes with its NUL */
#define IMG_MAGIC_LEN		8u
#define IMG_VERSION		1u
#define IMG_VERSION_2		2u	/* shared frames, any order */

/* Header flags.  Other bits are reserved. */
#define IMG_F_SWITCHOVER_START	0x1u	/* source sent COMMAND 11 */
#define IMG_F_NO_END		0x2u	/* source sent no ram END */
#define IMG_F_FRAME_CRCS	0x4u	/* index and header hold frame CRCs */
#define IMG_F_ALL		(IMG_F_SWITCHOVER_START | IMG_F_NO_END | \
				    IMG_F_FRAME_CRCS)
#define IMG_F_PACKS		0x8u	/* v2: entries may name packs */
#define IMG_F_BLAKE3		0x10u	/* v2: chunk hashes are BLAKE3 */
#define IMG_F_HOLES		0x20u	/* v2: own frames may leave gaps */
#define IMG_F_ALL_V2		(IMG_F_ALL | IMG_F_PACKS | IMG_F_BLAKE3 | \
				    IMG_F_HOLES)

/* Metadata: the fixed part, offsets from the payload (after 8 bytes). */
#define IMG_META_FIXED		64u
#define IMG_META_RAM_SECTION	0	/* 4: RAM section id */
#define IMG_META_NBLOCKS	4	/* 4: number of blocks */
#define IMG_META_MACHINE_LEN	8	/* 4: machine type length */
#define IMG_META_CONFIG_LEN	12	/* 4: configuration length */
#define IMG_META_RAM_BYTES	16	/* 8: sum of used lengths */
#define IMG_META_CHUNKS		24	/* 8: index entries */
#define IMG_META_FRAMES		32	/* 8: chunks that hold a frame */
#define IMG_META_PAGES		40	/* 8: pages the source sent */
#define IMG_META_ZERO_PAGES	48	/* 8: of those, zero pages */
#define IMG_META_TAIL_LEN	56	/* 8: device state, uncompressed */

/* Version 2: the fixed part is longer (image id, packs). */
#define IMG_META_FIXED_V2	96u
#define IMG_META_IMAGE_ID	64	/* 16: random, never all zero */
#define IMG_META_NPACKS		80	/* 4: 0 without IMG_F_PACKS */
#define IMG_META_RESERVED_V2	84	/* 12: reserved */
#define IMG_ID_SIZE		16u

/* Version 2: a pack table entry (after the block table), then its name. */
#define IMG_PACK_FIXED		28u
#define IMG_PACK_ID		0	/* 16: the pack's image id */
#define IMG_PACK_FILE_SIZE	16	/* 8: the pack's file size */
#define IMG_PACK_NAME_LEN	24	/* 2: 0 to 255 */
#define IMG_PACK_RESERVED	26	/* 2: reserved */
#define IMG_MAX_PACKS		65535u

/* A block table entry: IMG_BLOCK_FIXED bytes, then the name. */
#define IMG_BLOCK_FIXED		24u
#define IMG_BLOCK_USED_LEN	0	/* 8 */
#define IMG_BLOCK_MR_ADDR	8	/* 8 */
#define IMG_BLOCK_FLAGS		16	/* 4: IMG_BLK_F_* */
#define IMG_BLOCK_NAME_LEN	20	/* 2 */
#define IMG_BLOCK_RESERVED	22	/* 2 */
#define IMG_BLK_F_MR_ADDR	0x1u	/* the stream carried an mr_addr */

/* An index entry, one per chunk, after the index's 8-byte frame header. */
#define IMG_ENTRY_SIZE		32u
#define IMG_ENTRY_FRAME_OFF	0	/* 8: 0 when no frame */
#define IMG_ENTRY_FRAME_SIZE	8	/* 4: 0 when no frame */
#define IMG_ENTRY_FRAME_CRC	12	/* 4: with IMG_F_FRAME_CRCS */
#define IMG_ENTRY_PRESENT	16	/* 8: bit i: page i sent */
#define IMG_ENTRY_ZERO		24	/* 8: bit i: page i zero */

/* Version 2: an index entry is longer (pack, hash). */
#define IMG_ENTRY2_SIZE		80u
#define IMG_ENTRY_PACK		32	/* 2: 0 this image, else pack number */
#define IMG_ENTRY_RESERVED2	34	/* 6: reserved */
#define IMG_ENTRY_HASH		40	/* 32: BLAKE3 or SHA-256, imghash.h */
#define IMG_ENTRY_RESERVED3	72	/* 8: reserved */
#define IMG_HASH_SIZE		32u

/* Limits. */
#define IMG_MAX_BLOCKS		65535u
#define IMG_MAX_MACHINE		255u
#define IMG_MAX_CONFIG		(1u << 20)
#define IMG_MAX_USED_LEN	(1ull << 50)
#define IMG_MAX_META		(32u << 20)	/* snapctl's own limit */
#define IMG_FRAME_MAX		ZSTD_COMPRESSBOUND(IMG_CHUNK_BYTES)

/* Chunks of a block of used_length bytes. */
static inline uint64_t
img_chunks_of(uint64_t used_length)
{
	return (used_length + IMG_CHUNK_BYTES - 1) / IMG_CHUNK_BYTES;
}

/* The pages chunk k of a block of used_length bytes has, as a mask. */
static inline uint64_t
img_valid_mask(uint64_t used_length, uint64_t k)
{
	uint64_t n = (used_length - k * IMG_CHUNK_BYTES) / IMG_PAGE_SIZE;

	return n >= 64 ? ~0ull : (1ull << n) - 1;
}

/* Pages in a chunk's mask (present, zero, data). */
static inline unsigned
img_mask_count(uint64_t mask)
{
	return (unsigned)__builtin_popcountll(mask);
}

#endif
