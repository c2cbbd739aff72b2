/*
 * store.h - the checkpoint store: a directory of checkpoints, one
 * subdirectory STORE/NAME each (memory.img, manifest.json), a lock so one
 * snapctl writes at a time, staging directories that become a checkpoint
 * only once complete, and the recovery note a killed checkpoint leaves.
 *
 * Layout:
 *   STORE/.lock                 flock()ed by whoever writes the store
 *   STORE/.recover.json         what to put back if a checkpoint dies
 *   STORE/.NAME.partial-PID/    a checkpoint being made (0700)
 *   STORE/NAME/manifest.json    a finished checkpoint (written last)
 * Never prints, never exits.
 */
#ifndef SNAPCTL_STORE_H
#define SNAPCTL_STORE_H

#include <sys/types.h>

#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define STORE_NAME_MAX 128
#define STORE_RECOVER_NOTE ".recover.json"

struct store;

/*
 * Check a checkpoint name: non-empty, at most STORE_NAME_MAX bytes,
 * printable ASCII without whitespace, no '/', no leading '.'.  0, or -1
 * with e filled (ERR_USAGE: "invalid checkpoint name 'x': ...").
 */
int store_name_check(const char *name, struct err *e);

/*
 * The default name for time t (seconds since the epoch), UTC to the
 * millisecond: 20261123T081500.123Z.  Valid for store_name_check(); the
 * names of later times sort after.
 */
void store_default_name(double t, char out[32]);

/*
 * Open the store at dir.  With create, a missing directory is made 0700
 * (its parent must exist).  A symlink, or anything but a directory, is
 * refused (ERR_FAIL), and so is a store that does not exist without create.
 * A store that group or others can write is made 0700 when it is ours;
 * else, or when it is sticky (/tmp), it is refused (ERR_FAIL).
 * NULL with e filled.
 */
struct store *store_open(const char *dir, int create, struct err *e);

/* The store's path as given (borrowed). */
const char *store_path(const struct store *s);

/*
 * Take the store's lock (flock on STORE/.lock), waiting for another
 * holder up to wait_ms milliseconds (0 or less: not at all).
 * Still held then: ERR_LOCKED ("store '/x' is locked by another
 * snapctl"); a signal caught (sig_catch()) while waiting: ERR_INTR.  The
 * lock goes with store_close() or the process.
 */
int store_lock(struct store *s, int wait_ms, struct err *e);

/*
 * Remove staging directories STORE/.NAME.partial-PID whose PID is not a
 * live process (a killed snapctl's).  Needs the lock.  Returns how many
 * were removed; failures to remove are skipped.
 */
int store_clean_stale(struct store *s);

/* 1 if STORE/name exists (as anything), else 0. */
int store_exists(const struct store *s, const char *name);

/*
 * Create the staging directory STORE/.NAME.partial-PID (0700) for a new
 * checkpoint.  Fails if STORE/NAME already exists (ERR_FAIL "checkpoint
 * 'x' already exists in '/store'").  Returns its path (caller frees), or
 * NULL with e filled.
 */
char *store_stage_new(struct store *s, const char *name, struct err *e);

/*
 * Finish a checkpoint: write manifest (borrowed) as STAGE/manifest.json
 * (temporary name, fsync, rename, fsync), rename STAGE to STORE/NAME
 * without replacing anything, fsync the store.  0, or -1 with e filled;
 * on failure the stage is left for the caller to remove.
 */
int store_stage_commit(struct store *s, const char *stage, const char *name,
    const json_t *manifest, struct err *e);

/*
 * Remove a staging directory and the files in it (one level of
 * subdirectories at most; nothing is followed).  NULL is fine.  0, or -1
 * with errno set if something could not be removed.
 */
int store_stage_remove(const char *stage);

/*
 * Read STORE/NAME/manifest.json and check it (manifest_check()).  New
 * reference, or NULL with e filled (ERR_FAIL: no such checkpoint,
 * unreadable, not a snapctl manifest, a version this snapctl cannot read).
 */
json_t *store_manifest_read(const struct store *s, const char *name,
    struct err *e);

/*
 * Every checkpoint of the store: the manifests of the directories
 * STORE/NAME (names as store_name_check() allows; staging directories and
 * other files are not looked at), oldest first by "created", then name.
 * New reference (an empty array for an empty store), or NULL with e filled
 * when the store cannot be read.  Each manifest's "name" is its
 * directory's.  With bad non-NULL, *bad is a new array of {"name", "error"}
 * (a one-line message) for the directories whose manifest could not be
 * read; they are left out of the result.
 */
json_t *store_list(const struct store *s, json_t **bad, struct err *e);

/*
 * Delete checkpoint NAME: unlink its manifest and fsync its directory
 * first, so that a crash midway never leaves anything that looks like a
 * checkpoint; then the rest of its files (memory.img), the directory, and
 * an fsync of the store.  The caller holds the lock; disk files are none of
 * this function's business.  A symlink at STORE/NAME is refused.  0, or -1
 * with e filled (ERR_FAIL: no such checkpoint, or what failed).
 */
int store_remove_checkpoint(struct store *s, const char *name,
    struct err *e);

/*
 * The newest checkpoint (greatest "created", then name) of the VM with this
 * uuid and name (either may be NULL; manifest_vm_is() decides), or NULL if
 * there is none.  Unreadable entries are skipped.  Caller frees.
 */
char *store_find_parent(const struct store *s, const char *uuid,
    const char *vmname);

/*
 * The recovery note.  write: atomically (temporary, fsync, rename, fsync),
 * note borrowed.  read: new reference; NULL with e untouched when there is
 * none, NULL with e filled when it cannot be read.  remove: 0 also when
 * absent.
 */
int store_note_write(const struct store *s, const json_t *note,
    struct err *e);
json_t *store_note_read(const struct store *s, struct err *e);
int store_note_remove(const struct store *s, struct err *e);

/*
 * Replace the manifest of checkpoint NAME by m (borrowed) atomically
 * (temporary, fsync, rename, fsync): a disk merge updating a kept
 * checkpoint.  The caller holds the lock.  0, or -1 with e filled.
 */
int store_manifest_replace(const struct store *s, const char *name,
    const json_t *m, struct err *e);

/*
 * The merge journal, STORE/.merge.json (diskmerge.h): what a delete or
 * prune --disks is merging, so that a killed one is finished by the next
 * run or by recover.  As the recovery note: write atomically, read NULL
 * with e untouched when there is none, remove 0 also when absent.
 */
#define STORE_MERGE_JOURNAL ".merge.json"
int store_journal_write(const struct store *s, const json_t *j,
    struct err *e);
json_t *store_journal_read(const struct store *s, struct err *e);
int store_journal_remove(const struct store *s, struct err *e);

/*
 * Which checkpoint a running QEMU process last came from: restore writes
 * it after a load, checkpoint after a capture, so the next checkpoint of
 * that process names it as its parent even when the store holds newer
 * checkpoints of the same VM (a VM restored from an older one).  One file
 * a process, STORE/.last-PID.json = {pid, start, checkpoint}, written
 * atomically; notes of processes that are gone are removed on the way.
 * start is proc_start_ticks(pid): a reused pid does not match.
 * store_last_read returns the checkpoint's name (caller frees) when the
 * note matches pid and start and the checkpoint is still in the store,
 * else NULL.
 */
int store_last_write(const struct store *s, pid_t pid, uint64_t start,
    const char *checkpoint, struct err *e);
char *store_last_read(const struct store *s, pid_t pid, uint64_t start);

/*
 * Which checkpoint a disk path was last reverted to (revert.h), so the
 * next checkpoint of a VM started on it names that checkpoint as its
 * parent (when no process note above says otherwise).  One file a path,
 * STORE/.revert-DEV-INO.json = {path, dev, ino, checkpoint}, DEV and INO
 * the file path names after the revert; written atomically; notes whose
 * path names another file by now (a checkpoint swapped it, the user
 * replaced it) are removed on the way.  store_revert_read returns the
 * checkpoint's name (caller frees) when a note matches the file path
 * names now and the checkpoint is still in the store, else NULL.
 */
int store_revert_write(const struct store *s, const char *path,
    const char *checkpoint, struct err *e);
char *store_revert_read(const struct store *s, const char *path);

/* Release the lock and free; NULL is fine. */
void store_close(struct store *s);

#endif
