/*
 * storeops.c - the store commands' work: verify a checkpoint (its disk
 * files and memory image), select what delete and prune remove, delete
 * checkpoints and the disk files that frees.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "diskfile.h"
#include "diskgc.h"
#include "diskmerge.h"
#include "manifest.h"
#include "qmp.h"
#include "restoredir.h"
#include "save.h"
#include "sig.h"
#include "store.h"
#include "storeops.h"
#include "storepack.h"
#include "util.h"

int
storeops_verify(const struct store *s, const char *name, const json_t *m,
    json_t **out, struct err *e)
{
	struct manifest mf;
	struct img_reader *r = NULL;
	json_t *disks = json_array(), *memj = json_null();
	const json_t *d;
	char *path = NULL;
	size_t i;
	int rc = -1;

	*out = NULL;
	manifest_get(m, &mf);
	/* Every disk, then the memory image; the first failure is the
	 * answer. */
	json_array_foreach(mf.disks, i, d) {
		if (diskfile_check(d, e) < 0) {
			err_prefix(e, "%s: ", name);
			json_array_append_new(disks, json_pack("{s:s?, s:s?, "
			    "s:b}", "device", json_str(d, MF_DISK_DEVICE),
			    "file", json_str(d, MF_DISK_FILE), "ok", 0));
			goto out;
		}
		json_array_append_new(disks, json_pack("{s:s?, s:s?, s:b}",
		    "device", json_str(d, MF_DISK_DEVICE),
		    "file", json_str(d, MF_DISK_FILE), "ok", 1));
	}
	if (mf.memory != NULL) {
		if (mf.memory_path == NULL ||
		    strchr(mf.memory_path, '/') != NULL ||
		    mf.memory_path[0] == '.') {
			err_set(e, ERR_FAIL, "%s: the manifest names no usable "
			    "memory image", name);
			goto out;
		}
		path = xasprintf("%s/%s/%s", store_path(s), name,
		    mf.memory_path);
		json_decref(memj);
		memj = json_pack("{s:s, s:b}", "image", path, "ok", 0);
		r = img_open(path, e);
		if (r == NULL) {
			err_prefix(e, "%s: ", name);
			goto out;
		}
		if (img_verify_parallel(r, path, 0, e) < 0) {
			err_prefix(e, "%s: '%s': ", name, path);
			goto out;
		}
		json_object_set_new(memj, "ok", json_true());
	}
	rc = 0;
out:
	*out = json_pack("{s:s, s:b, s:O, s:O}", "name", name, "ok", rc == 0,
	    "memory", memj, "disks", disks);
	if (rc < 0)
		json_object_set_new(*out, "error", json_string(e != NULL ?
		    e->msg : "verify failed"));
	img_close(r);
	free(path);
	json_decref(memj);
	json_decref(disks);
	return rc;
}

static int
in_names(const json_t *names, const char *name)
{
	const json_t *v;
	size_t i;

	json_array_foreach(names, i, v)
		if (strcmp(json_string_value(v), name) == 0)
			return 1;
	return 0;
}

/*
 * Remove checkpoint name (manifest m, or NULL): its image first kept as a
 * pack (storepack.h), linked before anything goes.
 */
static int
remove_checkpoint(struct store *s, const char *name, const json_t *m,
    struct err *e)
{
	json_t *own = NULL;
	int rc;

	if (m == NULL)
		m = own = store_manifest_read(s, name, NULL);
	rc = storepack_keep(s, name, m, e);
	json_decref(own);
	if (rc < 0) {
		err_prefix(e, "'%s' stays: ", name);
		return -1;
	}
	return store_remove_checkpoint(s, name, e);
}

int
storeops_delete_select(const struct store *s, const json_t *all,
    const json_t *bad, char *const *names, int n, json_t **gone,
    struct err *e)
{
	const json_t *m;
	size_t j;
	int i, found;

	*gone = json_array();
	for (i = 0; i < n; i++) {
		found = 0;
		json_array_foreach(all, j, m)
			found |= strcmp(json_str(m, MF_NAME), names[i]) == 0;
		json_array_foreach(bad, j, m)
			found |= strcmp(json_str(m, "name"), names[i]) == 0;
		if (!found) {
			json_decref(*gone);
			*gone = NULL;
			return err_set(e, ERR_FAIL, "no checkpoint '%s' in "
			    "'%s'", names[i], store_path(s));
		}
		if (!in_names(*gone, names[i]))
			json_array_append_new(*gone, json_string(names[i]));
	}
	return 0;
}

void
storeops_prune_select(const json_t *all, uint64_t keep, json_t **gone,
    json_t **kept)
{
	const json_t *m;
	size_t i, j, newer;

	*gone = json_array();
	*kept = json_array();
	/* Oldest first: one goes if keep or more of its VM's are newer. */
	json_array_foreach(all, i, m) {
		newer = 0;
		for (j = i + 1; j < json_array_size(all); j++)
			newer += (size_t)manifest_same_vm(m,
			    json_array_get(all, j));
		json_array_append_new(newer >= keep ? *gone : *kept,
		    json_string(json_str(m, MF_NAME)));
	}
}

/*
 * The journal, once its merges and removals are done: kept in the store
 * with only the checkpoints a merge had to leave alone (something else
 * needed their layer) and the images still to remove, so the next run
 * tries again; removed when there are none.
 */
static int
journal_keep_unmerged(struct store *s, json_t *journal, const json_t *merged,
    const json_t *gc, struct err *e)
{
	json_t *gone = json_array(), *left = json_array();
	const json_t *m, *r, *d;
	size_t i, j, k;
	int keep, rc;

	json_array_foreach(json_object_get(journal, "gone"), i, m) {
		keep = 0;
		json_array_foreach(merged, j, r)
			if (!json_is_true(json_object_get(r, "merged")) &&
			    json_str(r, "checkpoint") != NULL &&
			    strcmp(json_str(r, "checkpoint"),
			    json_str(m, MF_NAME)) == 0)
				keep = 1;
		if (keep)
			json_array_append(gone, (json_t *)m);
	}
	json_array_foreach(json_object_get(journal, "left"), i, d) {
		keep = 0;
		json_array_foreach(gc, k, r)
			if (json_str(r, "file") != NULL && json_str(d, "file")
			    != NULL && strcmp(json_str(r, "file"),
			    json_str(d, "file")) == 0 &&
			    !json_is_true(json_object_get(r, "removed")))
				keep = 1;
		if (keep && json_array_size(gone) > 0)
			json_array_append(left, (json_t *)d);
	}
	if (json_array_size(gone) == 0) {
		rc = store_journal_remove(s, e);
	} else {
		json_object_set(journal, "gone", gone);
		json_object_set(journal, "left", left);
		rc = store_journal_write(s, journal, e);
	}
	json_decref(gone);
	json_decref(left);
	return rc;
}

/*
 * The merges journal asks for, then the files that frees; the journal is
 * removed once all is done.  merged and report get the reports.
 */
static int
merge_and_collect(struct store *s, struct storeops_delete_opts *o,
    struct qmp *q, json_t *journal, const json_t *restores, json_t **merged,
    json_t **report, struct err *e)
{
	struct diskmerge_opts mo = DISKMERGE_OPTS_INIT;
	struct diskgc_opts go = DISKGC_OPTS_INIT;
	json_t *kept = NULL, *bad = NULL, *all = NULL, *names = json_array();
	json_t *vm_files = NULL;
	const json_t *m;
	size_t i;
	int rc = -1;

	mo.store = s;
	mo.q = q;
	mo.progress = o->progress;
	mo.opaque = o->opaque;
	if (diskmerge_run(&mo, journal, merged, e) < 0)
		goto out;
	if (q != NULL && (vm_files = diskgc_vm_files(q, e)) == NULL) {
		err_prefix(e, "query-block: ");
		goto out;
	}
	if ((kept = store_list(s, &bad, e)) == NULL)
		goto out;
	all = json_deep_copy(kept);
	json_array_foreach(json_object_get(journal, "gone"), i, m) {
		json_array_append(all, (json_t *)m);
		json_array_append_new(names, json_string(json_str(m,
		    MF_NAME)));
	}
	go.all = all;
	go.gone = names;
	go.vm_files = vm_files;
	go.extra = json_object_get(journal, "left");
	go.restores = restores;
	if (diskgc_run(&go, report, &o->unseen, e) < 0)
		goto out;
	if (journal_keep_unmerged(s, journal, *merged, *report, e) < 0)
		goto out;
	rc = 0;
out:
	json_decref(kept);
	json_decref(bad);
	json_decref(all);
	json_decref(names);
	json_decref(vm_files);
	return rc;
}

static int
in_gone_m(const json_t *ms, const char *name)
{
	const json_t *m;
	size_t i;

	json_array_foreach(ms, i, m)
		if (name != NULL && json_str(m, MF_NAME) != NULL &&
		    strcmp(json_str(m, MF_NAME), name) == 0)
			return 1;
	return 0;
}

/* The checkpoints a killed run's journal names that are still there. */
static int
remove_stale(struct store *s, const json_t *journal, json_t *deleted,
    struct err *e)
{
	const json_t *m;
	const char *name;
	size_t i;

	json_array_foreach(json_object_get(journal, "gone"), i, m) {
		name = json_str(m, MF_NAME);
		if (name == NULL || store_name_check(name, NULL) < 0 ||
		    !store_exists(s, name))
			continue;
		if (remove_checkpoint(s, name, NULL, e) < 0)
			return -1;
		json_array_append_new(deleted, json_string(name));
	}
	return 0;
}

static int
open_vm(struct storeops_delete_opts *o, struct qmp **q, struct err *e)
{
	*q = NULL;
	if (o->socket == NULL)
		return 0;
	*q = qmp_open_with(o->socket, o->qmp, e);
	return *q != NULL ? 0 : -1;
}

int
storeops_merge_pending(struct store *s, struct storeops_delete_opts *o,
    json_t **out, struct err *e)
{
	json_t *journal = NULL, *deleted = json_array(), *merged = NULL;
	json_t *report = NULL, *packs = NULL;
	struct qmp *q = NULL;
	int rc = -1;

	*out = NULL;
	journal = store_journal_read(s, e);
	if (journal == NULL) {
		rc = err_isset(e) ? -1 : 0;
		goto out;
	}
	if (!json_is_array(json_object_get(journal, "gone"))) {
		err_set(e, ERR_FAIL, "'%s/%s' is no merge journal",
		    store_path(s), STORE_MERGE_JOURNAL);
		goto out;
	}
	if (remove_stale(s, journal, deleted, e) < 0)
		goto done;
	if (storepack_gc(s, &packs, e) < 0)
		goto done;
	if (open_vm(o, &q, e) < 0)
		goto done;
	if (merge_and_collect(s, o, q, journal, NULL, &merged, &report,
	    e) < 0)
		goto done;
	rc = 0;
done:
	*out = json_pack("{s:O, s:o, s:o, s:o}", "deleted", deleted,
	    "merged", merged ? merged : json_array(), "disks",
	    report ? report : json_array(), "packs",
	    packs ? packs : json_null());
out:
	qmp_close(q);
	json_decref(journal);
	json_decref(deleted);
	return rc;
}

int
storeops_delete(struct store *s, const json_t *all, const json_t *bad,
    const json_t *gone, struct storeops_delete_opts *o, json_t **out,
    struct err *e)
{
	struct diskgc_opts go = DISKGC_OPTS_INIT;
	struct restoredir_gc rg = RESTOREDIR_GC_INIT;
	struct qmp *q = NULL;
	json_t *deleted = json_array(), *vm_files = NULL, *report = NULL;
	json_t *journal = NULL, *gone_m = NULL, *merged = NULL;
	json_t *left = json_array(), *none = json_array(), *restores = NULL;
	json_t *packs = NULL;
	const json_t *b, *n, *m;
	size_t i;
	int rc = -1;

	*out = NULL;
	o->unseen = 0;
	if (o->disks) {
		/* A manifest we cannot read may name any file. */
		json_array_foreach(bad, i, b) {
			if (in_names(gone, json_str(b, "name")))
				continue;
			err_set(e, ERR_FAIL, "--disks needs every manifest of "
			    "the store, and %s; delete or repair checkpoint "
			    "'%s' first", json_str(b, "error"),
			    json_str(b, "name"));
			goto out;
		}
		if (open_vm(o, &q, e) < 0)
			goto out;
		if (o->dry_run && q != NULL &&
		    (vm_files = diskgc_vm_files(q, e)) == NULL) {
			err_prefix(e, "query-block: ");
			goto out;
		}
	}
	if (o->disks && !o->dry_run) {
		/* The journal before anything changes: a killed run is
		 * finished by the next one or by recover. */
		gone_m = json_array();
		json_array_foreach(all, i, m)
			if (in_names(gone, json_str(m, MF_NAME)))
				json_array_append(gone_m, (json_t *)m);
		/* Merges an earlier run had to leave: tried again. */
		journal = store_journal_read(s, e);
		if (journal == NULL && err_isset(e))
			goto out;
		if (journal == NULL) {
			journal = diskmerge_journal_new(gone_m);
		} else {
			if (!json_is_array(json_object_get(journal, "gone"))) {
				err_set(e, ERR_FAIL, "'%s/%s' is no merge "
				    "journal", store_path(s),
				    STORE_MERGE_JOURNAL);
				goto out;
			}
			if (remove_stale(s, journal, deleted, e) < 0)
				goto done;
			json_array_foreach(gone_m, i, m)
				if (!in_gone_m(json_object_get(journal,
				    "gone"), json_str(m, MF_NAME)))
					json_array_append(json_object_get(
					    journal, "gone"), (json_t *)m);
		}
		if (store_journal_write(s, journal, e) < 0)
			goto done;
	}
	json_array_foreach(gone, i, n) {
		if (in_names(deleted, json_string_value(n)))
			continue;
		if (!o->dry_run && remove_checkpoint(s,
		    json_string_value(n), NULL, e) < 0)
			goto done;
		json_array_append(deleted, (json_t *)n);
	}
	/* The images no remaining one names, and their unnamed frames. */
	if (!o->dry_run) {
		sig_test_hold(STOREPACK_HOLD_ENV, "removed");
		if (storepack_gc(s, &packs, e) < 0)
			goto done;
	}
	/* The restore overlays (restoredir.h) go through the same graph;
	 * without --disks no file of a deleted checkpoint is a candidate. */
	if (restoredir_collect(store_path(s), bad, gone, &rg, e) < 0)
		goto done;
	json_array_foreach(all, i, m)
		if (!in_names(gone, json_str(m, MF_NAME)))
			json_array_append(left, (json_t *)m);
	if (journal != NULL) {
		if (merge_and_collect(s, o, q, journal, rg.files, &merged,
		    &report, e) < 0)
			goto done;
	} else if (o->disks || json_array_size(rg.files) > 0) {
		go.all = o->disks ? all : left;
		go.gone = o->disks ? gone : none;
		go.vm_files = vm_files;
		go.dry_run = o->dry_run;
		go.restores = rg.files;
		if (diskgc_run(&go, &report, &o->unseen, e) < 0)
			goto done;
	}
	rc = 0;
done:
	restoredir_settle(&rg, report, &restores, gone, o->dry_run);
	*out = json_pack("{s:O, s:o, s:o, s:o, s:o}", "deleted", deleted,
	    "merged", merged ? merged : json_array(), "disks",
	    report ? json_incref(report) : json_array(), "restores",
	    restores, "packs", packs ? packs : json_null());
out:
	restoredir_gc_release(&rg);
	json_decref(report);
	json_decref(left);
	json_decref(none);
	qmp_close(q);
	json_decref(vm_files);
	json_decref(deleted);
	json_decref(journal);
	json_decref(gone_m);
	return rc;
}
