/*
 * ckplan.c - the first step of ckpt_run() (checkpoint_int.h): what QEMU
 * runs, which disks to cut and where their overlays go, and which
 * migration capabilities and parameters the capture needs changed, with
 * the values to put back.  Only queries QEMU.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "checkpoint_int.h"
#include "diskfile.h"
#include "diskswap.h"
#include "launch.h"
#include "store.h"
#include "util.h"
#include "vm.h"

static int
excluded(const struct ckpt_opts *o, const char *device, const char *qdev,
    const char *node)
{
	size_t i;

	for (i = 0; i < o->nexclude; i++) {
		const char *x = o->exclude[i];

		if ((device != NULL && strcmp(x, device) == 0) ||
		    (qdev != NULL && strcmp(x, qdev) == 0) ||
		    (node != NULL && strcmp(x, node) == 0))
			return 1;
	}
	return 0;
}

/* A file name we can place an overlay beside: absolute, no protocol. */
static int
plain_path(const char *f)
{
	return f != NULL && f[0] == '/' && strncmp(f, "json:", 5) != 0;
}

void
ckpt_disk_free(struct disk *d)
{
	free(d->device);
	free(d->qdev);
	free(d->node);
	free(d->drive);
	free(d->file);
	free(d->format);
	free(d->backing);
	free(d->overlay);
	free(d->overlay_node);
	diskswap_release(&d->sw);
}

/* A node name QEMU accepts (letter first, <= 31 chars) and unique enough. */
static char *
overlay_node_name(const char *name, size_t i)
{
	uint32_t h = 2166136261u;
	uint64_t salt = now_mono_ns() ^ ((uint64_t)getpid() << 32);
	const char *p;
	int k;

	for (p = name; *p != '\0'; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	for (k = 0; k < 8; k++)
		h = (h ^ (uint8_t)(salt >> (8 * k))) * 16777619u;
	return xasprintf("snapctl%08x-%zu", h, i);
}

/*
 * The disk swap (diskswap.h) of d: the VM's own path P (QEMU names the
 * active image of a VM checkpointed before by an earlier swap's temporary
 * name), the state file F "STEM.NAME.qcow2" beside P (or in --overlay-dir)
 * and the temporary names.  A disk that cannot be swapped is refused here,
 * before anything changes.
 */
static int
plan_swap(struct ckpt *c, struct disk *d, const struct blockinfo *b,
    const char *overlay_dir, const json_t *launch, struct err *e)
{
	const char *file = b->file, *fmt = b->format;
	char *p, *stem, *dir, *layer;
	int pending, rc;

	if (fmt == NULL || strcmp(fmt, "qcow2") != 0)
		return err_set(e, ERR_FAIL, "disk '%s': '%s' is %s, not qcow2: "
		    "its path cannot become the qcow2 overlay that keeps the "
		    "VM's command line valid: --exclude %s, or convert it to "
		    "qcow2", d->device, file ? file : "?", fmt ? fmt :
		    "of no known format", d->device);
	if (!plain_path(file))
		return err_set(e, ERR_FAIL, "disk '%s': '%s' is not a plain "
		    "file name: snapctl cannot keep it as the VM's current "
		    "disk: --exclude %s", d->device, file ? file : "?",
		    d->device);
	p = diskswap_vm_path(file, &pending);
	if (pending) {
		err_set(e, ERR_FAIL, "disk '%s': '%s' is an unfinished disk "
		    "swap: run 'snapctl recover'", d->device, file);
		free(p);
		return -1;
	}
	stem = diskfile_stem(p);
	dir = overlay_dir != NULL ? xstrdup(overlay_dir) : path_dirname(p);
	layer = xasprintf("%s/%s.%s.qcow2", dir, stem, c->name);
	rc = diskswap_plan(&d->sw, p, file, layer, c->name, b->size, e);
	if (rc == 0)
		rc = diskswap_cmdline_check(json_object_get(launch, "argv"), p,
		    d->device, e);
	d->sw.node = d->overlay_node;
	d->file = p;
	d->overlay = xstrdup(p);
	free(stem);
	free(dir);
	free(layer);
	if (rc < 0) {
		err_prefix(e, "disk '%s': ", d->device);
		return -1;
	}
	return 0;
}

static int
collect_disks(struct ckpt *c, const struct blockinfo *bi, size_t nbi,
    struct err *e)
{
	const struct ckpt_opts *o = c->o;
	char *overlay_dir = NULL;
	json_t *launch = launch_record(c->q);
	size_t i, k;
	int rc = -1;

	if (o->overlay_dir != NULL) {
		overlay_dir = realpath(o->overlay_dir, NULL);
		if (overlay_dir == NULL) {
			err_sys(e, ERR_FAIL, "cannot use --overlay-dir '%s'",
			    o->overlay_dir);
			goto out;
		}
	}
	for (i = 0; i < nbi; i++) {
		const struct blockinfo *b = &bi[i];
		const char *device = b->device, *qdev = b->qdev;
		const char *node = b->node, *file = b->file;
		const char *fmt = b->format, *bk = b->backing;
		struct disk *d;
		char *id;

		if (b->ro || excluded(o, b->id, qdev, node) ||
		    (*device != '\0' && excluded(o, device, NULL, NULL))) {
			json_array_append_new(c->skipped, json_pack("{s:s, "
			    "s:s?, s:s}", "device", b->id, "file", file, "why",
			    b->ro ? "read-only" : "--exclude"));
			continue;
		}
		id = xstrdup(b->id);
		c->disks = xreallocarray(c->disks, c->ndisks + 1,
		    sizeof(*c->disks));
		d = &c->disks[c->ndisks++];
		memset(d, 0, sizeof(*d));
		d->device = id;
		d->qdev = qdev != NULL ? xstrdup(qdev) : NULL;
		d->node = node != NULL ? xstrdup(node) : NULL;
		if (device != NULL && *device != '\0')
			d->drive = xstrdup(device);
		else if (node == NULL) {
			err_set(e, ERR_FAIL, "disk '%s' has neither a device "
			    "nor a node name", id);
			goto out;
		}
		d->format = fmt != NULL ? xstrdup(fmt) : NULL;
		d->backing = bk != NULL ? xstrdup(bk) : NULL;
		d->overlay_node = overlay_node_name(c->name, c->ndisks - 1);
		if (plan_swap(c, d, b, overlay_dir, launch, e) < 0)
			goto out;
		for (k = 0; k + 1 < c->ndisks; k++)
			if (strcmp(c->disks[k].sw.layer, d->sw.layer) == 0) {
				err_set(e, ERR_FAIL, "disks '%s' and '%s' would "
				    "both keep their state in '%s'",
				    c->disks[k].device, id, d->sw.layer);
				goto out;
			}
	}
	for (i = 0; i < o->nexclude; i++) {
		const char *x = o->exclude[i];
		int found = 0;

		for (k = 0; k < nbi; k++) {
			char *qid = vm_qdev_id(bi[k].qdev);

			if (strcmp(bi[k].id, x) == 0 ||
			    strcmp(bi[k].device, x) == 0 ||
			    (qid != NULL && strcmp(qid, x) == 0) ||
			    (bi[k].node != NULL && strcmp(bi[k].node, x) == 0) ||
			    (bi[k].qdev != NULL && strcmp(bi[k].qdev, x) == 0))
				found = 1;
			free(qid);
		}
		if (!found) {
			err_set(e, ERR_USAGE, "--exclude '%s': no such block "
			    "device", o->exclude[i]);
			goto out;
		}
	}
	rc = 0;
out:
	free(overlay_dir);
	json_decref(launch);
	return rc;
}

static const char *const caps_off[] = {
	"xbzrle", "compress", "multifd", "postcopy-ram", "postcopy-preempt",
	"return-path", "switchover-ack", "x-colo", "x-ignore-shared",
	"mapped-ram", "dirty-bitmaps", "background-snapshot", "zero-blocks",
	"block", "release-ram", NULL,
};

/* background-snapshot excludes pause-before-switchover, and vice versa. */
static int
cap_wanted(const char *name, int bg, int *state)
{
	size_t i;

	if (strcmp(name, "events") == 0) {
		*state = 1;
		return 1;
	}
	if (strcmp(name, "pause-before-switchover") == 0) {
		*state = !bg;
		return 1;
	}
	if (strcmp(name, "background-snapshot") == 0) {
		*state = bg;
		return 1;
	}
	for (i = 0; caps_off[i] != NULL; i++)
		if (strcmp(name, caps_off[i]) == 0) {
			*state = 0;
			return 1;
		}
	return 0;
}

/* Work out which capabilities and parameters to change, and back to what. */
static int
plan_changes(struct ckpt *c, const json_t *caps, const json_t *params,
    struct err *e)
{
	const json_t *cap;
	const char *tls;
	json_int_t cur;
	size_t i;
	int want, have;

	c->caps_set = json_array();
	c->caps_restore = json_array();
	c->params_set = json_object();
	c->params_restore = json_object();
	if (c->mode == CKPT_MODE_DISK_ONLY)
		return 0;
	tls = json_str(params, "tls-creds");
	if (tls != NULL && *tls != '\0')
		return err_set(e, ERR_FAIL, "migration TLS is configured "
		    "(tls-creds '%s'): snapctl cannot read an encrypted "
		    "stream", tls);
	if (!json_is_array(caps))
		return err_set(e, ERR_QEMU, "query-migrate-capabilities: "
		    "unexpected reply");
	json_array_foreach(caps, i, cap) {
		const char *name = json_str(cap, "capability");

		if (name == NULL || !cap_wanted(name,
		    c->mode == CKPT_MODE_BACKGROUND, &want))
			continue;
		have = json_is_true(json_object_get(cap, "state"));
		if (have == want)
			continue;
		json_array_append_new(c->caps_set, json_pack("{s:s, s:b}",
		    "capability", name, "state", want));
		json_array_append_new(c->caps_restore, json_pack("{s:s, s:b}",
		    "capability", name, "state", have));
	}
	if (!json_is_integer(json_object_get(params, "max-bandwidth")))
		return err_set(e, ERR_QEMU, "query-migrate-parameters: no "
		    "max-bandwidth");
	cur = json_integer_value(json_object_get(params, "max-bandwidth"));
	if ((uint64_t)cur != c->o->bandwidth) {
		json_object_set_new(c->params_set, "max-bandwidth",
		    json_integer((json_int_t)c->o->bandwidth));
		json_object_set_new(c->params_restore, "max-bandwidth",
		    json_integer(cur));
	}
	if (c->o->downtime_ms >= 0) {
		cur = json_integer_value(json_object_get(params,
		    "downtime-limit"));
		if (cur != c->o->downtime_ms) {
			json_object_set_new(c->params_set, "downtime-limit",
			    json_integer(c->o->downtime_ms));
			json_object_set_new(c->params_restore,
			    "downtime-limit", json_integer(cur));
		}
	}
	return 0;
}

int
ckpt_discover(struct ckpt *c, struct err *e)
{
	json_t *r = NULL, *caps = NULL, *params = NULL;
	struct blockinfo *bi = NULL;
	struct vm_status st;
	struct vm_migration mig;
	size_t nbi = 0, i;
	uint64_t start;
	const char *s;
	pid_t pid;
	int maj, min, mic, rc = -1;

	qmp_version(c->q, &maj, &min, &mic);
	snprintf(c->qemu_version, sizeof(c->qemu_version), "%d.%d.%d", maj,
	    min, mic);

	if ((r = qmp_call(c->q, "query-name", NULL, e)) == NULL)
		goto out;
	if ((s = json_str(r, "name")) != NULL)
		c->vm_name = xstrdup(s);
	json_decref(r);
	if ((r = qmp_call(c->q, "query-uuid", NULL, e)) == NULL)
		goto out;
	if ((s = json_str(r, "UUID")) != NULL)
		c->uuid = xstrdup(s);
	json_decref(r);
	/* Not fatal: the stream's configuration section names it too. */
	r = qmp_execute(c->q, "qom-get", json_pack("{s:s, s:s}", "path",
	    "/machine", "property", "type"), NULL);
	if (json_is_string(r)) {
		const char *t = json_string_value(r);
		size_t n = strlen(t);

		if (n > 8 && strcmp(t + n - 8, "-machine") == 0)
			n -= 8;
		c->machine = xstrndup(t, n);
	}
	json_decref(r);
	r = NULL;
	if (vm_status(c->q, &st, e) < 0)
		goto out;
	snprintf(c->runstate, sizeof(c->runstate), "%s",
	    st.status[0] != '\0' ? st.status : "?");
	c->was_running = st.running;
	/* Stopped, it is a --pause capture: 7.2 would start it after its
	 * background setup. */
	if (c->mode == CKPT_MODE_BACKGROUND && !c->was_running)
		c->mode = CKPT_MODE_PAUSE;
	if (vm_migration_query(c->q, &mig, e) < 0)
		goto out;
	if (vm_migration_busy(mig.status)) {
		err_set(e, ERR_FAIL, "a migration is already in progress "
		    "(status '%s')", mig.status);
		goto out;
	}
	/* The checkpoint this QEMU process was last restored from or
	 * checkpointed into; else the newest of the same VM. */
	if (c->store != NULL && vm_process(c->q, &pid, &start) == 0)
		c->parent = store_last_read(c->store, pid, start);
	if (vm_disks_query(c->q, &bi, &nbi, e) < 0 ||
	    collect_disks(c, bi, nbi, e) < 0)
		goto out;
	/* Else the checkpoint a disk of it was reverted to (revert.h);
	 * else the newest of the same VM. */
	for (i = 0; c->parent == NULL && c->store != NULL && i < c->ndisks;
	    i++)
		if (c->disks[i].sw.path != NULL)
			c->parent = store_revert_read(c->store,
			    c->disks[i].sw.path);
	if (c->parent == NULL && c->store != NULL)
		c->parent = store_find_parent(c->store, c->uuid, c->vm_name);
	if (c->parent != NULL)
		c->parent_m = store_manifest_read(c->store, c->parent, NULL);
	if (c->mode == CKPT_MODE_DISK_ONLY && c->ndisks == 0) {
		err_set(e, ERR_FAIL, "no writable disk to snapshot");
		goto out;
	}
	if (c->mode != CKPT_MODE_DISK_ONLY) {
		if ((caps = qmp_call(c->q, "query-migrate-capabilities", NULL,
		    e)) == NULL)
			goto out;
		if ((params = qmp_call(c->q, "query-migrate-parameters", NULL,
		    e)) == NULL)
			goto out;
	}
	if (plan_changes(c, caps, params, e) < 0)
		goto out;
	rc = 0;
out:
	json_decref(r);
	json_decref(caps);
	json_decref(params);
	vm_disks_free(bi, nbi);
	return rc;
}
