/*
 * storeops.h - what the store commands do, as core code: verify a
 * checkpoint, choose what delete and prune delete, and delete checkpoints
 * (with the disk files that frees).  cmd_store.c parses, calls these and
 * prints.  Never prints, never exits.
 */
#ifndef SNAPCTL_STOREOPS_H
#define SNAPCTL_STOREOPS_H

#include <stdint.h>

#include <jansson.h>

#include "diskmerge.h"
#include "err.h"

struct qmp_config;
struct store;

/*
 * Verify checkpoint name of s, whose manifest is m (borrowed): each disk
 * file as diskfile_check() does, then every checksum of the memory image.
 * The first failure is the answer: -1 with e filled, its message prefixed
 * with "NAME: " (ERR_MISMATCH for a changed disk file, ERR_FAIL else).
 * *out (new reference, also on failure) is {"name", "ok", "memory":
 * {"image", "ok"} or null, "disks": [{"device", "file", "ok"}...]}: what
 * was checked up to the failure, the failing part with "ok": false, and
 * on failure "error", e's message.
 */
int storeops_verify(const struct store *s, const char *name, const json_t *m,
    json_t **out, struct err *e);

/*
 * The distinct names of names[0..n-1] as a JSON array of strings (*gone,
 * new reference), each a checkpoint of the store: in all (store_list()) or
 * in bad (its unreadable ones).  An unknown name selects nothing: -1 with e
 * filled (ERR_FAIL "no checkpoint 'x' in 'STORE'").
 */
int storeops_delete_select(const struct store *s, const json_t *all,
    const json_t *bad, char *const *names, int n, json_t **gone,
    struct err *e);

/*
 * What prune --keep keep deletes of all (store_list(): oldest first): a
 * checkpoint goes when keep or more of its VM's (manifest_same_vm()) are
 * newer.  *gone and *kept (new references) get their names, in order.
 */
void storeops_prune_select(const json_t *all, uint64_t keep, json_t **gone,
    json_t **kept);

struct storeops_delete_opts {
	int disks;		/* also remove the disk files this frees */
	int dry_run;		/* decide, change nothing */
	const char *socket;	/* with disks: the VM to ask which files it
				 * uses (diskgc_vm_files()), or NULL */
	const struct qmp_config *qmp;	/* how to connect to socket */
	int unseen;		/* out: processes whose open files could
				 * not be looked at (diskgc_run()) */
	diskmerge_progress_fn progress;	/* merges' progress, or NULL */
	void *opaque;
};
#define STOREOPS_DELETE_OPTS_INIT { 0, 0, NULL, NULL, 0, NULL, NULL }

/*
 * Delete the checkpoints named in gone (strings; the caller holds the
 * store's lock unless dry_run), then with o->disks merge their disk layers
 * into their neighbours (diskmerge_run(), under the store's merge journal,
 * written before anything is deleted) and remove the disk files that
 * frees (diskgc_run()); with dry_run no merge is done or shown.  all and bad are store_list()'s: with o->disks
 * every manifest not being deleted must be readable (ERR_FAIL "--disks
 * needs every manifest of the store, ...").  *out (new reference) says
 * what was done, {"deleted": [NAME...], "merged": [diskmerge_run()'s
 * report], "disks": [diskgc_run()'s report], "restores":
 * [restoredir_settle()'s report], "packs": storepack_gc()'s report or
 * null}, also on a failure after something was done (else NULL).  0, or
 * -1 with e filled.
 *
 * Each checkpoint's memory image is kept as a pack first when it is of
 * version 2 (storepack_keep()): a checkpoint whose image cannot be kept
 * stays.  After the removals (not with dry_run) the pack GC runs
 * (storepack_gc()).  Test hook: SNAPCTL_TEST_HOLD_PACKS=removed:MS holds
 * after the removals, before the GC.
 *
 * With or without o->disks the restore overlays of the store are swept
 * (restoredir.h): every one no process holds goes, and those of the
 * deleted checkpoints that stay are reported with the reason.
 */
int storeops_delete(struct store *s, const json_t *all, const json_t *bad,
    const json_t *gone, struct storeops_delete_opts *o, json_t **out,
    struct err *e);

/*
 * Finish what a killed delete or prune --disks left in the store's merge
 * journal (the caller holds the lock): delete the checkpoints it names
 * that are still there, do or finish their merges, remove the files that
 * frees, remove the journal.  o->socket as for storeops_delete().  *out
 * (new reference) as storeops_delete()'s, or NULL when there was no
 * journal.  0, or -1 with e filled.
 */
int storeops_merge_pending(struct store *s, struct storeops_delete_opts *o,
    json_t **out, struct err *e);

#endif
