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
#include "manifest.h"
#include "qmp.h"
#include "restoredir.h"
#include "save.h"
#include "store.h"
#include "storeops.h"
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

int
storeops_delete(struct store *s, const json_t *all, const json_t *bad,
    const json_t *gone, struct storeops_delete_opts *o, json_t **out,
    struct err *e)
{
	struct diskgc_opts go = DISKGC_OPTS_INIT;
	struct restoredir_gc rg = RESTOREDIR_GC_INIT;
	struct qmp *q = NULL;
	json_t *deleted = json_array(), *vm_files = NULL, *report = NULL;
	json_t *left = json_array(), *none = json_array(), *restores = NULL;
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
		if (o->socket != NULL) {
			if ((q = qmp_open_with(o->socket, o->qmp, e)) == NULL)
				goto out;
			if ((vm_files = diskgc_vm_files(q, e)) == NULL) {
				err_prefix(e, "query-block: ");
				goto out;
			}
		}
	}
	json_array_foreach(gone, i, n) {
		if (!o->dry_run && store_remove_checkpoint(s,
		    json_string_value(n), e) < 0)
			goto done;
		json_array_append(deleted, (json_t *)n);
	}
	/* The restore overlays (restoredir.h) go through the same graph;
	 * without --disks no file of a deleted checkpoint is a candidate. */
	if (restoredir_collect(store_path(s), bad, gone, &rg, e) < 0)
		goto done;
	json_array_foreach(all, i, m)
		if (!in_names(gone, json_str(m, MF_NAME)))
			json_array_append(left, (json_t *)m);
	if (o->disks || json_array_size(rg.files) > 0) {
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
	*out = json_pack("{s:O, s:o, s:o}", "deleted", deleted, "disks",
	    report ? json_incref(report) : json_array(), "restores",
	    restores);
out:
	restoredir_gc_release(&rg);
	json_decref(report);
	json_decref(left);
	json_decref(none);
	qmp_close(q);
	json_decref(vm_files);
	json_decref(deleted);
	return rc;
}
