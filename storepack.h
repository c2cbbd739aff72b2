/*
 * storepack.h - memory images the store keeps as packs (man/snapctl-image.5,
 * VERSION 2): a checkpoint's image that other images name outlives the
 * checkpoint as STORE/.packs/<32 hex id>.img, a hard link made before the
 * checkpoint is removed; the pack GC, under the store's lock, recomputes
 * who refers to what from the indexes of the remaining checkpoints' images,
 * unlinks the packs nothing names and punches the frames of the others
 * that nothing names (never those of a pack whose id a remaining image
 * has: a copied checkpoint).  A kill at any point frees less, never more.
 * Never prints, never exits.
 */
#ifndef SNAPCTL_STOREPACK_H
#define SNAPCTL_STOREPACK_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define STOREPACK_DIR ".packs"
#define STOREPACK_HOLD_ENV "SNAPCTL_TEST_HOLD_PACKS"

struct store;
struct img_reader;

/*
 * Before checkpoint name (manifest m, borrowed; NULL when unreadable: its
 * memory.img is tried) is removed: a version 2 memory image is hard-linked
 * to STORE/.packs/<hex id>.img (the directory made 0700), the directory
 * and the store fsynced.  An image of version 1, none, or one already
 * linked there is fine.  Another file there with the same id (a copy,
 * perhaps punched by the GC) is replaced atomically by this whole image
 * (a link STORE/.packs/.tmp-<hex id> renamed over it).  No file, a
 * symbolic link or not a regular file, or not an image of version 2:
 * nothing to keep (0); an image that cannot be opened or read otherwise
 * is an error.  The caller holds the lock.  0, or -1 with e
 * filled: then the checkpoint must stay.
 *
 * Test hook: SNAPCTL_TEST_HOLD_PACKS=linked:MS holds after the link.
 */
int storepack_keep(struct store *s, const char *name, const json_t *m,
    struct err *e);

/*
 * The pack GC (the caller holds the lock; call it after checkpoints were
 * removed): the references of every remaining checkpoint's image (as
 * store_list() finds them now, and memory.img of the directories whose
 * manifest it cannot read) to the files of STORE/.packs; a file nothing names is unlinked, in one that
 * something names the frames nothing names are punched
 * (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE; not in a file with other
 * links: a checkpoint's own image, nor in one another process holds
 * open: a restore of the deleted checkpoint may read any of its frames).
 * When an image that remains cannot be opened, nothing is freed (*report
 * says why).  *report (new reference): {"packs": N kept, "removed":
 * [FILE...], "punched_bytes": N, "held": N kept whole as open elsewhere,
 * "skipped": REASON (only then)}.  0, or -1 with e filled (a failed unlink or fsync;
 * *report set too).
 *
 * Test hook: SNAPCTL_TEST_HOLD_PACKS=gc:MS holds once the references are
 * known, before anything is unlinked or punched.
 */
int storepack_gc(struct store *s, json_t **report, struct err *e);

/*
 * What image r shares, for info: {"own_bytes", "shared_bytes",
 * "shared_chunks", "packs": [{"hint", "id", "refs", "bytes"}...]} (packs
 * that some entry names).  New reference.
 */
json_t *storepack_sharing(const struct img_reader *r);

#endif
