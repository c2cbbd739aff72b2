/*
 * manifest.c - reading, checking and building a checkpoint's manifest.
 * The key names live in manifest.h; the store reads and writes the file.
 */
#include <sys/stat.h>

#include <stdio.h>
#include <string.h>

#include "launch.h"
#include "manifest.h"
#include "util.h"

#ifndef SNAPCTL_VERSION
#define SNAPCTL_VERSION "0.0.0"
#endif

/* The modes a checkpoint records (manifest_input's mode). */
static const char *const modes[] = {
	"live", "pause", "background", "disk-only", NULL,
};

/* The image formats QEMU reports for a disk (query-block's "format"). */
static const char *const formats[] = {
	"qcow2", "raw", "qcow", "qed", "vmdk", "vdi", "vhdx", "vpc",
	"parallels", "luks", "bochs", "cloop", "dmg", NULL,
};

/* Where a bad field is: "disks[0].format". */
struct where {
	const char *shown;
	char path[64];
};

static int
bad(const struct where *w, const char *key, const char *what,
    struct err *e)
{
	return err_set(e, ERR_FAIL, "'%s': invalid manifest: %s%s%s %s",
	    w->shown, w->path, *w->path && key ? "." : "", key ? key : "",
	    what);
}

/* key a string (or null or absent when optional) in obj. */
static int
want_str(const json_t *obj, const char *key, int optional,
    const struct where *w, struct err *e)
{
	const json_t *v = json_object_get(obj, key);

	if (json_is_string(v) || (optional && (v == NULL || json_is_null(v))))
		return 0;
	return bad(w, key, optional ? "must be a string or null" :
	    "must be a string", e);
}

/* key a non-negative integer (or null or absent when optional). */
static int
want_count(const json_t *obj, const char *key, int optional,
    const struct where *w, struct err *e)
{
	const json_t *v = json_object_get(obj, key);

	if (json_is_integer(v) && json_integer_value(v) >= 0)
		return 0;
	if (optional && (v == NULL || json_is_null(v)))
		return 0;
	return bad(w, key, "must be a non-negative integer", e);
}

/* key true or false, when present. */
static int
want_bool(const json_t *obj, const char *key, const struct where *w,
    struct err *e)
{
	const json_t *v = json_object_get(obj, key);

	if (v == NULL || json_is_boolean(v))
		return 0;
	return bad(w, key, "must be true or false", e);
}

static int
check_vm(const json_t *vm, struct where *w, struct err *e)
{
	static const char *const keys[] = {
		MF_VM_NAME, MF_VM_UUID, MF_VM_QEMU, MF_VM_MACHINE, NULL,
	};
	const char *const *k;

	if (!json_is_object(vm))
		return bad(w, MF_VM, "must be an object", e);
	snprintf(w->path, sizeof(w->path), "%s", MF_VM);
	for (k = keys; *k != NULL; k++)
		if (want_str(vm, *k, 1, w, e) < 0)
			return -1;
	w->path[0] = '\0';
	return 0;
}

static int
check_memory(const json_t *mem, struct where *w, struct err *e)
{
	static const char *const counts[] = {
		MF_MEM_BYTES, MF_MEM_RAM, MF_MEM_PAGES, MF_MEM_ZERO,
		MF_MEM_STREAM, NULL,
	};
	const char *const *k, *path;

	if (json_is_null(mem))
		return 0;
	if (!json_is_object(mem))
		return bad(w, MF_MEMORY, "must be an object or null", e);
	snprintf(w->path, sizeof(w->path), "%s", MF_MEMORY);
	if (want_str(mem, MF_MEM_PATH, 0, w, e) < 0)
		return -1;
	path = json_string_value(json_object_get(mem, MF_MEM_PATH));
	/* A file of the checkpoint's directory, nothing else. */
	if (*path == '\0' || *path == '.' || strchr(path, '/') != NULL)
		return bad(w, MF_MEM_PATH, "must name a file of the "
		    "checkpoint's directory", e);
	for (k = counts; *k != NULL; k++)
		if (want_count(mem, *k, 0, w, e) < 0)
			return -1;
	w->path[0] = '\0';
	return 0;
}

static int
check_disk(const json_t *d, struct where *w, struct err *e)
{
	static const char *const strs[] = {
		"node", MF_DISK_FILE, "backing", "overlay_node", "qdev",
		"file_made_by", MF_DISK_VM_PATH, NULL,
	};
	const char *const *k, *fmt;

	if (!json_is_object(d))
		return bad(w, NULL, "must be an object", e);
	if (want_str(d, MF_DISK_DEVICE, 0, w, e) < 0 ||
	    want_str(d, MF_DISK_OVERLAY, 0, w, e) < 0 ||
	    want_str(d, "format", 1, w, e) < 0 ||
	    want_count(d, "size", 1, w, e) < 0 ||
	    want_count(d, "mtime_ns", 1, w, e) < 0 ||
	    want_count(d, "overlay_dev", 1, w, e) < 0 ||
	    want_count(d, "overlay_ino", 1, w, e) < 0 ||
	    want_count(d, "file_dev", 1, w, e) < 0 ||
	    want_count(d, "file_ino", 1, w, e) < 0)
		return -1;
	for (k = strs; *k != NULL; k++)
		if (want_str(d, *k, 1, w, e) < 0)
			return -1;
	fmt = json_string_value(json_object_get(d, "format"));
	if (fmt != NULL && !str_in_set(fmt, formats))
		return bad(w, "format", "is not a disk image format", e);
	return 0;
}

static int
check_timings(const json_t *t, struct where *w, struct err *e)
{
	const char *k;
	const json_t *v;

	if (t == NULL)
		return 0;
	if (!json_is_object(t))
		return bad(w, MF_TIMINGS, "must be an object", e);
	snprintf(w->path, sizeof(w->path), "%s", MF_TIMINGS);
	json_object_foreach((json_t *)t, k, v)
		if (!json_is_number(v) || json_number_value(v) < 0)
			return bad(w, k, "must be a non-negative number", e);
	w->path[0] = '\0';
	return 0;
}

int
manifest_check(const json_t *m, const char *shown, const char *dirname,
    struct err *e)
{
	struct where w = { shown, "" };
	const json_t *v = json_object_get(m, MF_VERSION), *d;
	const char *mode;
	size_t i;

	if (!json_is_object(m) || v == NULL)
		return err_set(e, ERR_FAIL, "'%s' is not a snapctl manifest",
		    shown);
	if (!json_is_integer(v))
		return bad(&w, MF_VERSION, "must be an integer", e);
	if (json_integer_value(v) != MANIFEST_VERSION)
		return err_set(e, ERR_FAIL, "'%s': manifest version %lld is "
		    "not supported (this snapctl reads version %d)", shown,
		    (long long)json_integer_value(v), MANIFEST_VERSION);
	if (want_str(m, MF_NAME, 0, &w, e) < 0)
		return -1;
	if (dirname != NULL && strcmp(json_str(m, MF_NAME), dirname) != 0)
		return bad(&w, MF_NAME, "differs from the checkpoint's "
		    "directory", e);
	if (want_str(m, MF_CREATED, 0, &w, e) < 0 ||
	    want_str(m, MF_PARENT, 1, &w, e) < 0 ||
	    want_str(m, MF_MODE, 0, &w, e) < 0 ||
	    want_str(m, MF_SNAPCTL, 1, &w, e) < 0 ||
	    want_bool(m, MF_FORCED, &w, e) < 0 ||
	    want_bool(m, MF_QUIESCED, &w, e) < 0)
		return -1;
	mode = json_str(m, MF_MODE);
	if (!str_in_set(mode, modes))
		return bad(&w, MF_MODE, "is not live, pause, background or "
		    "disk-only", e);
	if (check_vm(json_object_get(m, MF_VM), &w, e) < 0 ||
	    check_memory(json_object_get(m, MF_MEMORY), &w, e) < 0 ||
	    check_timings(json_object_get(m, MF_TIMINGS), &w, e) < 0)
		return -1;
	if (!json_is_array(json_object_get(m, MF_DISKS)))
		return bad(&w, MF_DISKS, "must be an array", e);
	json_array_foreach(json_object_get(m, MF_DISKS), i, d) {
		snprintf(w.path, sizeof(w.path), "%s[%zu]", MF_DISKS, i);
		if (check_disk(d, &w, e) < 0)
			return -1;
	}
	return launch_check(m, shown, e);
}

void
manifest_get(const json_t *m, struct manifest *out)
{
	const json_t *vm = json_object_get(m, MF_VM);
	const json_t *mem = json_object_get(m, MF_MEMORY);

	out->name = json_str(m, MF_NAME);
	out->created = json_str(m, MF_CREATED);
	out->parent = json_str(m, MF_PARENT);
	out->mode = json_str(m, MF_MODE);
	out->vm_name = json_str(vm, MF_VM_NAME);
	out->vm_uuid = json_str(vm, MF_VM_UUID);
	out->qemu = json_str(vm, MF_VM_QEMU);
	out->machine = json_str(vm, MF_VM_MACHINE);
	out->memory = json_is_object(mem) ? mem : NULL;
	out->memory_path = json_str(out->memory, MF_MEM_PATH);
	out->disks = json_is_array(json_object_get(m, MF_DISKS)) ?
	    json_object_get(m, MF_DISKS) : NULL;
}

static int
str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

int
manifest_vm_is(const json_t *m, const char *uuid, const char *name)
{
	const json_t *vm = json_object_get(m, MF_VM);

	return str_eq(json_str(vm, MF_VM_UUID), uuid) &&
	    str_eq(json_str(vm, MF_VM_NAME), name);
}

int
manifest_same_vm(const json_t *a, const json_t *b)
{
	const json_t *vm = json_object_get(a, MF_VM);

	return manifest_vm_is(b, json_str(vm, MF_VM_UUID),
	    json_str(vm, MF_VM_NAME));
}

/* The parent's name if d's file is the overlay it made for d, else NULL. */
static const char *
made_by(const struct manifest_disk *d, const json_t *parent)
{
	const json_t *pd;
	size_t i;

	json_array_foreach(json_object_get(parent, MF_DISKS), i, pd) {
		if (d->file != NULL && json_str(pd, MF_DISK_OVERLAY) != NULL &&
		    json_str(pd, MF_DISK_DEVICE) != NULL &&
		    strcmp(json_str(pd, MF_DISK_OVERLAY), d->file) == 0 &&
		    strcmp(json_str(pd, MF_DISK_DEVICE), d->device) == 0)
			return json_str(parent, MF_NAME);
	}
	return NULL;
}

/* dev_key and ino_key: path's device and inode, null when there is none. */
static void
set_identity(json_t *dj, const char *dev_key, const char *ino_key,
    const char *path)
{
	struct stat st;
	int ok;

	ok = path != NULL && lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_ino <= (uint64_t)INT64_MAX &&
	    (uint64_t)st.st_dev <= (uint64_t)INT64_MAX;
	json_object_set_new(dj, dev_key, ok ?
	    json_integer((json_int_t)st.st_dev) : json_null());
	json_object_set_new(dj, ino_key, ok ?
	    json_integer((json_int_t)st.st_ino) : json_null());
}

static json_t *
build_disk(const struct manifest_disk *d, const json_t *parent_m,
    const char *self)
{
	struct stat st;
	const char *by;
	json_t *dj;

	dj = json_pack("{s:s, s:s?, s:s?, s:s?, s:s, s:s, s:s?}",
	    MF_DISK_DEVICE, d->device, "node", d->node, MF_DISK_FILE, d->file,
	    "format", d->format, MF_DISK_OVERLAY, d->overlay,
	    "overlay_node", d->overlay_node, "backing", d->backing);
	if (dj == NULL)
		return NULL;
	if (d->file != NULL && stat(d->file, &st) == 0) {
		json_object_set_new(dj, "size",
		    json_integer((json_int_t)st.st_size));
		json_object_set_new(dj, "mtime_ns", json_integer(
		    (json_int_t)st.st_mtim.tv_sec * 1000000000 +
		    st.st_mtim.tv_nsec));
	} else {
		json_object_set_new(dj, "size", json_null());
		json_object_set_new(dj, "mtime_ns", json_null());
	}
	json_object_set_new(dj, "qdev", d->qdev ? json_string(d->qdev) :
	    json_null());
	/* Survives the parent's deletion: delete --disks needs it. */
	by = d->swapped ? self : made_by(d, parent_m);
	json_object_set_new(dj, "file_made_by", by ? json_string(by) :
	    json_null());
	/* The proof that snapctl made them, for delete --disks: a path
	 * edited in the manifest names another inode. */
	set_identity(dj, "file_dev", "file_ino", by ? d->file : NULL);
	set_identity(dj, "overlay_dev", "overlay_ino", d->swapped ? NULL :
	    d->overlay);
	if (d->swapped)
		json_object_set_new(dj, MF_DISK_VM_PATH,
		    json_string(d->overlay));
	return dj;
}

/* A non-negative number rounded to 3 decimals. */
static json_t *
json_real3(double v)
{
	return json_real((double)(int64_t)(v * 1000.0 + 0.5) / 1000.0);
}

json_t *
manifest_build(const struct manifest_input *in)
{
	json_t *m, *disks, *dj, *mem = json_null(), *t;
	size_t i;

	if (in->memory)
		mem = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}",
		    MF_MEM_PATH, MANIFEST_MEMORY_FILE,
		    MF_MEM_BYTES, (json_int_t)in->mem_file_bytes,
		    MF_MEM_RAM, (json_int_t)in->ram_bytes,
		    MF_MEM_PAGES, (json_int_t)in->pages,
		    MF_MEM_ZERO, (json_int_t)in->zero_pages,
		    MF_MEM_STREAM, (json_int_t)in->stream_bytes);
	if (in->memory) {
		json_object_set_new(mem, MF_MEM_OWN,
		    json_integer((json_int_t)in->own_bytes));
		json_object_set_new(mem, MF_MEM_SHARED,
		    json_integer((json_int_t)in->shared_bytes));
		json_object_set_new(mem, MF_MEM_BASE, in->base != NULL ?
		    json_string(in->base) : json_null());
	}
	disks = json_array();
	for (i = 0; i < in->ndisks; i++) {
		if ((dj = build_disk(&in->disks[i], in->parent_m, in->name)) == NULL) {
			json_decref(mem);
			json_decref(disks);
			return NULL;
		}
		json_array_append_new(disks, dj);
	}
	m = json_pack("{s:i, s:s, s:s, s:s?, s:{s:s?, s:s?, s:s, s:s?}, s:s, "
	    "s:b, s:b, s:o, s:o, s:{s:f, s:f, s:i}, s:s}",
	    MF_VERSION, MANIFEST_VERSION,
	    MF_NAME, in->name,
	    MF_CREATED, in->created,
	    MF_PARENT, in->parent,
	    MF_VM, MF_VM_NAME, in->vm_name, MF_VM_UUID, in->vm_uuid,
	    MF_VM_QEMU, in->qemu, MF_VM_MACHINE, in->machine,
	    MF_MODE, in->mode,
	    MF_FORCED, in->forced,
	    MF_QUIESCED, in->quiesced,
	    MF_MEMORY, mem,
	    MF_DISKS, disks,
	    MF_TIMINGS,
	    "total_s", in->total_s,
	    "paused_ms", in->paused_ms,
	    "passes", in->passes,
	    MF_SNAPCTL, SNAPCTL_VERSION);
	if (m == NULL)
		return NULL;
	t = json_object_get(m, MF_TIMINGS);
	/* Rounded to what the clocks can tell. */
	json_object_set_new(t, "paused_ms", json_real3(in->paused_ms));
	if (in->qemu_downtime_ms >= 0)
		json_object_set_new(t, "qemu_downtime_ms",
		    json_integer(in->qemu_downtime_ms));
	if (in->frozen)
		json_object_set_new(t, "frozen_ms",
		    json_integer((json_int_t)in->frozen_ms));
	if (in->memory) {
		json_object_set_new(t, "compaction_cpu_s",
		    json_real3(in->compaction_cpu_s));
		json_object_set_new(t, "receive_cpu_s",
		    json_real3(in->receive_cpu_s));
	}
	return m;
}
