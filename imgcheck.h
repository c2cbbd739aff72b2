/*
 * imgcheck.h - checks of a whole compact memory image beyond what
 * img_open() checks: decoding every frame (img_verify), on threads
 * (img_verify_parallel), or at the speed of reading the file with frame
 * CRCs (img_check_frames).  Never prints, never exits.
 */
#ifndef SNAPCTL_IMGCHECK_H
#define SNAPCTL_IMGCHECK_H

#include "err.h"
#include "imgread.h"

/*
 * Check every checksum and structure: header, metadata, index, every frame
 * (decoded, checksum, size; version 2: its hash too) wherever it lives,
 * r's file or a pack, and the tail.  0, or -1 with e naming the first bad
 * part ("chunk 17 (block 'pc.ram' offset 0x440000): ...", with "pack 1
 * 'c1' (image 0123...): " after it for a frame read from a pack).
 */
int img_verify(struct img_reader *r, struct err *e);

/*
 * The same, the chunks shared among nthreads threads, each with a reader
 * of its own opened on path (r's file, its packs found with r's finder);
 * r does the first share and the tail; nthreads <= 0: the online CPUs, at
 * most 8.  The error names the first bad chunk in file order.
 */
int img_verify_parallel(struct img_reader *r, const char *path, int nthreads,
    struct err *e);

/*
 * The quick check before an image is trusted, at the speed of reading the
 * file: with frame CRCs (IMG_F_FRAME_CRCS, every image the writer makes),
 * the CRC-32C and zstd frame header of every frame and of the tail, read
 * in large sequential reads and not decoded, on nthreads threads (<= 0:
 * the CPUs this process may run on, at most 8) that share r's file when r
 * comes from img_open() (else on this thread alone); then the frames r's
 * entries take from packs, against those entries' CRCs.  What img_open()
 * checked was checked already.  Without frame CRCs, img_verify_parallel()
 * on path, or img_verify() when path is NULL.  0, or -1 with e naming the
 * first bad part as img_verify() does.  img_verify() is still the stronger
 * check: it also decodes.
 */
int img_check_frames(struct img_reader *r, const char *path, int nthreads,
    struct err *e);

#endif
