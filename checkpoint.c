/*
 * checkpoint.c - ckpt_run() and ckpt_recover() (checkpoint.h): discovery
 * over QMP, the capability and parameter changes and their restoration,
 * the ingest of the migration stream into the memory image (ingest.h),
 * the event loop that cuts the disks at pre-switchover and resumes
 * the guest at completion, and the cleanup every failure path goes through.
 *
 * Flow of a live checkpoint:
 *   lock store -> discover -> recovery note -> caps/params -> getfd+migrate
 *   -> [events: pre-switchover -> transaction -> migrate-continue]
 *   -> completed -> cont -> receiver EOF -> restore caps/params
 *   -> image commit -> manifest -> rename stage into place -> drop note.
 * A background checkpoint (background-snapshot) instead: stop -> transaction
 *   -> migrate -> [first RAM page: QEMU's setup is over] -> cont if QEMU
 *   left the guest paused -> completed -> the same end.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "blockinfo.h"
#include "checkpoint.h"
#include "ingest.h"
#include "save.h"
#include "sig.h"
#include "store.h"
#include "util.h"

#ifndef SNAPCTL_VERSION
#define SNAPCTL_VERSION "0.0.0"
#endif

#define CKPT_CACHE_BYTES (64u << 20)	/* the image writer's chunk cache */
#define SPOOL_SLACK (64ull << 20)	/* file spool: RAM size + this */
#define SOCK_BUF (8 << 20)		/* both ends of the socketpair */
#define LOOP_SLICE_MS 100
#define PROGRESS_MS 500
#define CANCEL_WAIT_MS 15000		/* for cancelled/failed after cancel */
#define CANCEL_NUDGE_MS 3000		/* then migrate-continue if held */
#define RESUME_EVENT_MS 2000
#define CONT_RETRY_MS 10000		/* finish-migrate -> postmigrate */
#define BG_RECHECK_MS 100		/* see bg_resume() */

/* ---- the checkpoint's state -------------------------------------------- */

struct disk {
	char *device;		/* the device name, or the qdev id */
	char *qdev;
	char *node;		/* root node of the device: the active image */
	char *target;		/* "device" or "node-name" for the snapshot */
	char *target_val;
	char *file;		/* the active image's file name */
	char *format;
	char *backing;		/* its backing file, or NULL */
	char *overlay;		/* the new active image */
	char *overlay_node;
	int overlay_existed;	/* just before the transaction */
};

struct ckpt {
	const struct ckpt_opts *o;
	struct qmp *q;
	struct qmp *agent;
	struct store *store;
	char *name;
	char *stage;
	char *socket_abs;
	char *parent;		/* newest checkpoint of this VM, or NULL */
	json_t *parent_m;	/* its manifest */
	char created[32];
	uint64_t t0;		/* monotonic ms at the start */

	/* the VM */
	char qemu_version[32];
	char *vm_name;
	char *uuid;
	char *machine;
	char runstate[32];
	int was_running;
	int bg;			/* background-snapshot (a running guest) */
	struct disk *disks;
	size_t ndisks;

	/* what we changed */
	json_t *caps_set;	/* [{capability,state}] we set */
	json_t *caps_restore;	/* the same capabilities, original states */
	json_t *params_set;
	json_t *params_restore;
	int caps_applied;
	int params_applied;
	int note_written;
	int stopped_by_us;
	int frozen;
	uint64_t freeze_ms;

	/* the migration */
	int sv[2];
	int fd_registered;
	int mig_started;	/* migrate accepted */
	int mig_done;		/* completed, failed or cancelled seen */
	int completed;
	int failed;
	int cancelled;
	int we_cancelled;
	int at_switchover;
	int switchover_done;
	int disks_cut;
	int resumed;
	int bg_resumed;		/* after QEMU's background setup */
	uint64_t bg_recheck;	/* monotonic ms of the runstate recheck */
	int forced;
	int passes;
	char mig_status[32];
	double stop_ts;		/* QEMU's timestamps of STOP and RESUME */
	double resume_ts;
	uint64_t stop_mono;	/* fallback when events are missed */
	uint64_t resume_mono;
	int64_t qemu_downtime;
	struct ingest *ing;	/* the stream into the image */
	struct img_stats img;
	int img_committed;

	/* progress */
	uint64_t last_progress;
	uint64_t last_bytes;
};

/* ---- discovery ---------------------------------------------------------- */

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

/* "disk" from "/vm/disk.qcow2". */
static char *
image_stem(const char *path)
{
	const char *base = strrchr(path, '/'), *dot;

	base = base != NULL ? base + 1 : path;
	dot = strrchr(base, '.');
	if (dot == NULL || dot == base)
		return xstrdup(base);
	return xstrndup(base, (size_t)(dot - base));
}

/*
 * The stem for a disk's overlay.  When its active image is the overlay the
 * parent checkpoint made ("<stem>.<parent>.qcow2"), the parent's stem: a
 * chain reads d0.qcow2 <- d0.c1.qcow2 <- d0.c2.qcow2, not d0.c1.c2.qcow2.
 */
static char *
overlay_stem(const char *file, const char *device, const json_t *parent)
{
	const json_t *pd;
	const char *pname, *base, *ov;
	char *suffix, *stem = NULL;
	size_t i, bl, sl;

	pname = json_str(parent, "name");
	base = strrchr(file, '/');
	base = base != NULL ? base + 1 : file;
	json_array_foreach(json_object_get(parent, "disks"), i, pd) {
		ov = json_str(pd, "overlay");
		if (pname == NULL || ov == NULL || strcmp(ov, file) != 0 ||
		    json_str(pd, "device") == NULL ||
		    strcmp(json_str(pd, "device"), device) != 0)
			continue;
		suffix = xasprintf(".%s.qcow2", pname);
		bl = strlen(base);
		sl = strlen(suffix);
		if (bl > sl && strcmp(base + bl - sl, suffix) == 0)
			stem = xstrndup(base, bl - sl);
		free(suffix);
		break;
	}
	return stem != NULL ? stem : image_stem(file);
}

/* A file name we can place an overlay beside: absolute, no protocol. */
static int
plain_path(const char *f)
{
	return f != NULL && f[0] == '/' && strncmp(f, "json:", 5) != 0;
}

static void
disk_free(struct disk *d)
{
	free(d->device);
	free(d->qdev);
	free(d->node);
	free(d->target);
	free(d->target_val);
	free(d->file);
	free(d->format);
	free(d->backing);
	free(d->overlay);
	free(d->overlay_node);
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

static int
collect_disks(struct ckpt *c, const struct blockinfo *bi, size_t nbi,
    struct err *e)
{
	const struct ckpt_opts *o = c->o;
	char *overlay_dir = NULL;
	struct stat st;
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
		char *id, *stem, *dir;

		if (b->ro)
			continue;
		if (excluded(o, b->id, qdev, node) ||
		    (*device != '\0' && excluded(o, device, NULL, NULL)))
			continue;
		id = xstrdup(b->id);
		c->disks = xreallocarray(c->disks, c->ndisks + 1,
		    sizeof(*c->disks));
		d = &c->disks[c->ndisks++];
		memset(d, 0, sizeof(*d));
		d->device = id;
		d->qdev = qdev != NULL ? xstrdup(qdev) : NULL;
		d->node = node != NULL ? xstrdup(node) : NULL;
		if (device != NULL && *device != '\0') {
			d->target = xstrdup("device");
			d->target_val = xstrdup(device);
		} else if (node != NULL) {
			d->target = xstrdup("node-name");
			d->target_val = xstrdup(node);
		} else {
			err_set(e, ERR_FAIL, "disk '%s' has neither a device "
			    "nor a node name", id);
			goto out;
		}
		d->file = file != NULL ? xstrdup(file) : NULL;
		d->format = fmt != NULL ? xstrdup(fmt) : NULL;
		d->backing = bk != NULL ? xstrdup(bk) : NULL;
		if (overlay_dir != NULL) {
			stem = plain_path(file) ? overlay_stem(file, id,
			    c->parent_m) : xstrdup(id);
			d->overlay = xasprintf("%s/%s.%s.qcow2", overlay_dir,
			    stem, c->name);
			free(stem);
		} else {
			if (!plain_path(file)) {
				err_set(e, ERR_FAIL, "cannot place an overlay "
				    "beside '%s' of disk '%s': use "
				    "--overlay-dir", file ? file : "?", id);
				goto out;
			}
			stem = overlay_stem(file, id, c->parent_m);
			dir = path_dirname(file);
			d->overlay = xasprintf("%s/%s.%s.qcow2", dir, stem,
			    c->name);
			free(stem);
			free(dir);
		}
		d->overlay_node = overlay_node_name(c->name, c->ndisks - 1);
		if (lstat(d->overlay, &st) == 0) {
			err_set(e, ERR_FAIL, "overlay '%s' for disk '%s' "
			    "already exists", d->overlay, id);
			goto out;
		}
		for (k = 0; k + 1 < c->ndisks; k++)
			if (strcmp(c->disks[k].overlay, d->overlay) == 0) {
				err_set(e, ERR_FAIL, "disks '%s' and '%s' would "
				    "both get the overlay '%s'",
				    c->disks[k].device, id, d->overlay);
				goto out;
			}
	}
	for (i = 0; i < o->nexclude; i++) {
		const char *x = o->exclude[i];
		int found = 0;

		for (k = 0; k < nbi; k++) {
			char *qid = blockinfo_qdev_id(bi[k].qdev);

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
	if (c->o->disk_only)
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

		if (name == NULL || !cap_wanted(name, c->bg, &want))
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

static int
migration_busy(const char *status)
{
	return status != NULL && strcmp(status, "none") != 0 &&
	    strcmp(status, "completed") != 0 &&
	    strcmp(status, "failed") != 0 &&
	    strcmp(status, "cancelled") != 0;
}

static int
discover(struct ckpt *c, struct err *e)
{
	json_t *r = NULL, *caps = NULL, *params = NULL;
	struct blockinfo *bi = NULL;
	size_t nbi = 0;
	const char *s;
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
	if ((r = qmp_call(c->q, "query-status", NULL, e)) == NULL)
		goto out;
	snprintf(c->runstate, sizeof(c->runstate), "%s",
	    json_str(r, "status") ? json_str(r, "status") : "?");
	c->was_running = json_is_true(json_object_get(r, "running"));
	/* Stopped, it is a --pause capture: 7.2 would start it after its
	 * background setup. */
	c->bg = c->o->background && c->was_running;
	json_decref(r);
	if ((r = qmp_call(c->q, "query-migrate", NULL, e)) == NULL)
		goto out;
	s = json_str(r, "status");
	if (migration_busy(s)) {
		err_set(e, ERR_FAIL, "a migration is already in progress "
		    "(status '%s')", s);
		goto out;
	}
	json_decref(r);
	r = NULL;
	c->parent = store_find_parent(c->store, c->uuid, c->vm_name);
	if (c->parent != NULL)
		c->parent_m = store_manifest_read(c->store, c->parent, NULL);
	if (blockinfo_query(c->q, &bi, &nbi, e) < 0 ||
	    collect_disks(c, bi, nbi, e) < 0)
		goto out;
	if (c->o->disk_only && c->ndisks == 0) {
		err_set(e, ERR_FAIL, "no writable disk to snapshot");
		goto out;
	}
	if (!c->o->disk_only) {
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
	blockinfo_free(bi, nbi);
	return rc;
}

/* ---- the recovery note -------------------------------------------------- */

static int
write_note(struct ckpt *c, struct err *e)
{
	json_t *note;
	int rc;

	note = json_pack("{s:i, s:I, s:s, s:s, s:s, s:s, s:{s:s?, s:s?}, s:b, "
	    "s:O, s:O, s:s?, s:b}",
	    "snapctl_recover", 1,
	    "pid", (json_int_t)getpid(),
	    "name", c->name,
	    "created", c->created,
	    "socket", c->socket_abs,
	    "stage", c->stage,
	    "vm", "name", c->vm_name, "uuid", c->uuid,
	    "was_running", c->was_running,
	    "capabilities", c->caps_restore,
	    "parameters", c->params_restore,
	    "agent", c->o->quiesce ? c->o->agent : NULL,
	    "pause_before_switchover_set", !c->bg);
	if (note == NULL)
		return err_set(e, ERR_FAIL, "cannot build the recovery note");
	rc = store_note_write(c->store, note, e);
	json_decref(note);
	if (rc == 0)
		c->note_written = 1;
	return rc;
}

/* ---- events --------------------------------------------------------------- */

static void
handle_event(struct ckpt *c, const struct qmp_event *ev)
{
	const char *s;

	if (strcmp(ev->name, "MIGRATION") == 0) {
		s = json_str(ev->data, "status");
		if (s == NULL)
			return;
		snprintf(c->mig_status, sizeof(c->mig_status), "%s", s);
		if (strcmp(s, "pre-switchover") == 0)
			c->at_switchover = 1;
		else if (strcmp(s, "completed") == 0)
			c->completed = c->mig_done = 1;
		else if (strcmp(s, "failed") == 0)
			c->failed = c->mig_done = 1;
		else if (strcmp(s, "cancelled") == 0)
			c->cancelled = c->mig_done = 1;
	} else if (strcmp(ev->name, "MIGRATION_PASS") == 0) {
		json_int_t p = json_integer_value(json_object_get(ev->data,
		    "pass"));

		if (p > 0 && p < INT_MAX)
			c->passes = (int)p;
	} else if (strcmp(ev->name, "STOP") == 0) {
		if (c->stop_ts == 0) {
			c->stop_ts = ev->timestamp;
			c->stop_mono = now_mono_ms();
		}
	} else if (strcmp(ev->name, "RESUME") == 0) {
		if (c->stop_ts != 0 && c->resume_ts == 0) {
			c->resume_ts = ev->timestamp;
			c->resume_mono = now_mono_ms();
		}
	}
}

/*
 * Handle every event queued or readable now.  -1 with e filled when QEMU
 * went away.  (Waiting with a zero timeout also takes complete lines the
 * client buffered while it waited for a reply.)
 */
static int
drain_events(struct ckpt *c, struct err *e)
{
	struct qmp_event *ev;
	struct err le;

	for (;;) {
		le = (struct err)ERR_INIT;
		ev = qmp_wait_event(c->q, NULL, NULL, 0, &le);
		if (ev == NULL)
			break;
		handle_event(c, ev);
		qmp_event_free(ev);
	}
	if (le.kind == ERR_TIMEOUT)
		return 0;
	err_set(e, ERR_QEMU, "QEMU went away during the checkpoint (%s)",
	    le.msg);
	return -1;
}

/* ---- the disk cut ------------------------------------------------------- */

static void
remove_new_overlays(struct ckpt *c)
{
	struct stat st;
	size_t i;

	for (i = 0; i < c->ndisks; i++)
		if (!c->disks[i].overlay_existed &&
		    lstat(c->disks[i].overlay, &st) == 0 &&
		    S_ISREG(st.st_mode))
			unlink(c->disks[i].overlay);
}

static int
cut_disks(struct ckpt *c, struct err *e)
{
	struct err le = ERR_INIT;
	json_t *actions, *r;
	struct stat st;
	size_t i;

	if (c->ndisks == 0)
		return 0;
	actions = json_array();
	for (i = 0; i < c->ndisks; i++) {
		struct disk *d = &c->disks[i];

		d->overlay_existed = lstat(d->overlay, &st) == 0;
		if (d->overlay_existed) {
			json_decref(actions);
			return err_set(e, ERR_FAIL, "overlay '%s' for disk '%s' "
			    "appeared meanwhile: not overwritten", d->overlay,
			    d->device);
		}
		json_array_append_new(actions, json_pack("{s:s, s:{s:s, s:s, "
		    "s:s, s:s, s:s}}", "type", "blockdev-snapshot-sync",
		    "data", d->target, d->target_val, "snapshot-file",
		    d->overlay, "snapshot-node-name", d->overlay_node,
		    "format", "qcow2", "mode", "absolute-paths"));
	}
	r = qmp_execute(c->q, "transaction", json_pack("{s:o}", "actions",
	    actions), &le);
	if (r == NULL) {
		/* Only an error reply says QEMU rolled back; after a
		 * timeout or disconnect the overlays may be in use. */
		if (le.qmp_class[0] != '\0')
			remove_new_overlays(c);
		err_propagate(e, &le, "cannot cut the disks: transaction");
		return -1;
	}
	json_decref(r);
	c->disks_cut = 1;
	return 0;
}

/* Sleep ms (test hook), returning early on a signal. */
static void
hold(int ms)
{
	uint64_t end = now_mono_ms() + (uint64_t)ms;

	while (now_mono_ms() < end && sig_caught() == 0)
		poll(NULL, 0, 20);
}

/* ---- the capture -------------------------------------------------------- */

static int
apply_changes(struct ckpt *c, struct err *e)
{
	if (json_array_size(c->caps_set) > 0) {
		if (qmp_do(c->q, "migrate-set-capabilities", json_pack("{s:O}",
		    "capabilities", c->caps_set), e) < 0)
			return -1;
		c->caps_applied = 1;
	}
	if (json_object_size(c->params_set) > 0) {
		c->params_applied = 1;	/* partly applied is possible */
		if (qmp_do(c->q, "migrate-set-parameters",
		    json_incref(c->params_set), e) < 0)
			return -1;
	}
	return 0;
}

static void
set_bufsize(int fd, int opt_force, int opt)
{
	int v = SOCK_BUF;

	if (setsockopt(fd, SOL_SOCKET, opt_force, &v, sizeof(v)) < 0)
		setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v));
}

/* The guest's RAM (base + hotplugged), 1 GiB when QEMU will not say. */
static uint64_t
guest_ram_bytes(struct ckpt *c)
{
	json_t *r = qmp_execute(c->q, "query-memory-size-summary", NULL, NULL);
	uint64_t b = (uint64_t)json_integer_value(json_object_get(r,
	    "base-memory")) + (uint64_t)json_integer_value(json_object_get(r,
	    "plugged-memory"));

	json_decref(r);
	return b != 0 ? b : 1ull << 30;
}

static int
start_migration(struct ckpt *c, struct err *e)
{
	struct ingest_opts io = INGEST_OPTS_INIT;
	char *path;
	int rc;

	path = xasprintf("%s/memory.img", c->stage);
	io.img.level = c->o->level;
	io.img.threads = c->o->threads;
	/* Smaller than compact's default: the image then reaches the store
	 * during the live phase, so a store that cannot hold it fails the
	 * checkpoint before the disks are cut, not after. */
	io.img.cache_bytes = CKPT_CACHE_BYTES;
	io.spool_dir = c->stage;
	io.spool_file_max = guest_ram_bytes(c) + SPOOL_SLACK;
	c->ing = ingest_new(path, &io, e);
	free(path);
	if (c->ing == NULL)
		return -1;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c->sv) < 0)
		return err_sys(e, ERR_FAIL, "socketpair");
	set_bufsize(c->sv[0], SO_RCVBUFFORCE, SO_RCVBUF);
	set_bufsize(c->sv[1], SO_SNDBUFFORCE, SO_SNDBUF);
	if (ingest_start(c->ing, c->sv[0], e) < 0)
		return -1;
	/* A stopped guest waits for us: let nothing slow QEMU down. */
	if (c->o->pause)
		ingest_overflow(c->ing, 1);

	{
		struct err le = ERR_INIT;
		json_t *r = qmp_execute_fd(c->q, "getfd", json_pack("{s:s}",
		    "fdname", CKPT_MIG_FDNAME), c->sv[1], &le);

		if (r == NULL) {
			err_propagate(e, &le, "getfd");
			return -1;
		}
		json_decref(r);
	}
	c->fd_registered = 1;
	/* QEMU has its own copy now; ours would keep the stream open. */
	close(c->sv[1]);
	c->sv[1] = -1;
	if ((c->o->pause || c->bg) && c->was_running) {
		if (qmp_do(c->q, "stop", NULL, e) < 0)
			return -1;
		c->stopped_by_us = 1;
	}
	/*
	 * Background: the image will be memory as QEMU finds it when its
	 * migration thread stops the guest for the setup; we stopped it
	 * first, so that is now, and the disks are cut at this instant.
	 */
	if (c->bg) {
		if (c->stop_mono == 0)
			c->stop_mono = now_mono_ms();
		if (c->o->hold_switchover_ms > 0)
			hold(c->o->hold_switchover_ms);
		if (sig_interrupted(e))
			return -1;
		if (cut_disks(c, e) < 0)
			return -1;
	}
	rc = qmp_do(c->q, "migrate", json_pack("{s:s}", "uri",
	    "fd:" CKPT_MIG_FDNAME), e);
	if (rc < 0)
		return -1;
	c->fd_registered = 0;	/* migrate took it */
	c->mig_started = 1;
	snprintf(c->mig_status, sizeof(c->mig_status), "setup");
	return 0;
}

static void
report_progress(struct ckpt *c, const char *phase, int query)
{
	struct ckpt_progress p;
	json_t *r = NULL, *ram;
	uint64_t now = now_mono_ms(), bytes, dt;

	if (c->o->progress == NULL)
		return;
	if (now - c->last_progress < PROGRESS_MS && c->last_progress != 0)
		return;
	memset(&p, 0, sizeof(p));
	p.phase = phase;
	p.elapsed_s = (double)(now - c->t0) / 1000.0;
	bytes = ingest_bytes(c->ing);
	p.received = bytes;
	dt = c->last_progress != 0 ? now - c->last_progress : now - c->t0;
	if (dt > 0 && bytes >= c->last_bytes)
		p.rate = (bytes - c->last_bytes) * 1000 / dt;
	p.pass = c->passes;
	p.eta_s = -1;
	p.forced = c->forced;
	if (query)
		r = qmp_execute(c->q, "query-migrate", NULL, NULL);
	ram = json_object_get(r, "ram");
	if (json_is_object(ram)) {
		json_int_t psize = json_integer_value(json_object_get(ram,
		    "page-size"));

		p.ram_total = (uint64_t)json_integer_value(json_object_get(ram,
		    "total"));
		p.remaining = (uint64_t)json_integer_value(
		    json_object_get(ram, "remaining"));
		if (psize <= 0)
			psize = 4096;
		p.dirty_rate = (uint64_t)json_integer_value(
		    json_object_get(ram, "dirty-pages-rate")) *
		    (uint64_t)psize;
		if (p.rate > p.dirty_rate)
			p.eta_s = (double)p.remaining /
			    (double)(p.rate - p.dirty_rate);
	}
	json_decref(r);
	c->last_progress = now;
	c->last_bytes = bytes;
	c->o->progress(c->o->progress_opaque, &p);
}

/*
 * cont.  The MIGRATION "completed" event comes before the source leaves
 * runstate finish-migrate for postmigrate, and until then cont fails
 * ("Migration is not finalized yet"): retry while that is the state.
 */
static int
resume_guest(struct ckpt *c, struct err *e)
{
	uint64_t start = now_mono_ms();
	struct err le;
	json_t *r;
	int finishing, again = 1;

	for (;;) {
		le = (struct err)ERR_INIT;
		r = qmp_execute(c->q, "cont", NULL, &le);
		if (r != NULL) {
			json_decref(r);
			break;
		}
		if (le.qmp_class[0] == '\0' ||
		    now_mono_ms() - start > CONT_RETRY_MS) {
			err_propagate(e, &le, "cont");
			return -1;
		}
		r = qmp_execute(c->q, "query-status", NULL, NULL);
		finishing = r != NULL && json_str(r, "status") != NULL &&
		    strcmp(json_str(r, "status"), "finish-migrate") == 0;
		json_decref(r);
		/* It may have left finish-migrate since cont failed: once
		 * more then. */
		if (!finishing && !again--) {
			err_propagate(e, &le, "cont");
			return -1;
		}
		if (finishing)
			poll(NULL, 0, 1);
	}
	c->resumed = 1;
	c->stopped_by_us = 0;
	if (c->resume_mono == 0)
		c->resume_mono = now_mono_ms();
	return 0;
}

/*
 * Background: let the guest run again once QEMU's setup is over.  QEMU's
 * bg_migration_thread stops the guest, saves the device state into a
 * buffer, write-protects RAM and schedules the bottom half that resumes the
 * guest, all under the BQL; RAM page sections are sent only after that.  So
 * the first page record the receiver sees says the snapshot instant is
 * fixed (QEMU's buffering only delays it).  7.2's bottom half starts the
 * guest whatever its state was; 10.0's restores the old runstate, paused
 * since we stopped it, so cont if query-status says it is not running.
 * The bottom half is scheduled before that first page and in practice runs
 * before our cont; if it ran after, on 10.0 it would set the runstate back
 * to paused: BG_RECHECK_MS later the capture loop looks once more and
 * conts again (see bg_recheck()).
 */
static int
bg_resume(struct ckpt *c, struct err *e)
{
	json_t *r;
	int running;

	c->bg_resumed = 1;
	c->bg_recheck = now_mono_ms() + BG_RECHECK_MS;
	if ((r = qmp_call(c->q, "query-status", NULL, e)) == NULL)
		return -1;
	running = json_is_true(json_object_get(r, "running"));
	json_decref(r);
	if (!running)
		return resume_guest(c, e);
	c->resumed = 1;
	c->stopped_by_us = 0;
	return 0;
}

static int
bg_recheck(struct ckpt *c, struct err *e)
{
	json_t *r;
	const char *st;
	int paused;

	c->bg_recheck = 0;
	if ((r = qmp_call(c->q, "query-status", NULL, e)) == NULL)
		return -1;
	st = json_str(r, "status");
	paused = st != NULL && strcmp(st, "paused") == 0;
	json_decref(r);
	return paused ? resume_guest(c, e) : 0;
}

/* At pre-switchover: the guest is stopped; cut the disks, continue. */
/*
 * Before the disks are cut, on a store short of room (less free than the
 * chunk cache and the spool could still write, twice over), the image
 * first takes in what QEMU sent so far, so that a store that fills up
 * fails the checkpoint here, while it can still be undone, rather than
 * after the cut.  A store with room does not wait: the pause stays short.
 */
static int
catch_up(struct ckpt *c, struct err *e)
{
	struct statvfs sv;
	uint64_t need = 2 * (CKPT_CACHE_BYTES + ingest_pending(c->ing));

	if (statvfs(c->stage, &sv) == 0 &&
	    (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize > need)
		return 0;
	while (ingest_pending(c->ing) > 0) {
		if (ingest_check(c->ing, e) < 0)
			return -1;
		if (sig_interrupted(e))
			return -1;
		usleep(1000);
	}
	return ingest_check(c->ing, e);
}

static int
do_switchover(struct ckpt *c, struct err *e)
{
	c->switchover_done = 1;
	if (c->stop_mono == 0)
		c->stop_mono = now_mono_ms();
	if (c->o->hold_switchover_ms > 0)
		hold(c->o->hold_switchover_ms);
	if (sig_interrupted(e))
		return -1;
	if (ingest_check(c->ing, e) < 0)
		return -1;
	if (catch_up(c, e) < 0)
		return -1;
	if (cut_disks(c, e) < 0)
		return -1;
	/* QEMU sends the last pass while the guest waits: take it at once,
	 * to a file if the parser is behind. */
	ingest_overflow(c->ing, 1);
	return qmp_do(c->q, "migrate-continue", json_pack("{s:s}", "state",
	    "pre-switchover"), e);
}

static int
migration_error(struct ckpt *c, struct err *e)
{
	json_t *r;
	const char *desc;
	int rc;

	r = qmp_execute(c->q, "query-migrate", NULL, NULL);
	desc = json_str(r, "error-desc");
	if (c->failed)
		rc = err_set(e, ERR_FAIL, "the migration failed%s%s",
		    desc ? ": " : "", desc ? desc : "");
	else
		rc = err_set(e, ERR_FAIL, "the migration was cancelled by "
		    "someone else");
	json_decref(r);
	return rc;
}

/* max-bandwidth to "unlimited" for the rest of this migration. */
static int
unthrottle(struct ckpt *c, struct err *e)
{
	if (c->o->bandwidth >= CKPT_DEFAULT_BANDWIDTH)
		return 0;
	if (json_object_get(c->params_restore, "max-bandwidth") == NULL) {
		json_object_set_new(c->params_restore, "max-bandwidth",
		    json_integer((json_int_t)c->o->bandwidth));
		/* So that recover puts it back too. */
		if (write_note(c, e) < 0)
			return -1;
	}
	c->params_applied = 1;
	return qmp_do(c->q, "migrate-set-parameters", json_pack("{s:I}",
	    "max-bandwidth", (json_int_t)CKPT_DEFAULT_BANDWIDTH), e);
}

static int
capture(struct ckpt *c, struct err *e)
{
	struct pollfd pfd[2];
	uint64_t deadline = 0, now;
	int ms;

	if (start_migration(c, e) < 0)
		return -1;
	if (c->o->timeout_s > 0)
		deadline = c->t0 + (uint64_t)c->o->timeout_s * 1000;
	for (;;) {
		if (drain_events(c, e) < 0)
			return -1;
		/* Failures first: never cut the disks for a lost cause. */
		if (ingest_check(c->ing, e) < 0)
			return -1;
		if (sig_interrupted(e))
			return -1;
		if (c->failed || (c->cancelled && !c->we_cancelled))
			return migration_error(c, e);
		if (c->at_switchover && !c->switchover_done) {
			if (do_switchover(c, e) < 0)
				return -1;
			continue;
		}
		if (c->bg && !c->bg_resumed && !c->forced &&
		    ingest_pages(c->ing) > 0) {
			if (bg_resume(c, e) < 0)
				return -1;
			continue;
		}
		if (c->bg_recheck != 0 && !c->forced &&
		    now_mono_ms() >= c->bg_recheck) {
			if (bg_recheck(c, e) < 0)
				return -1;
		}
		if (c->completed && c->was_running &&
		    (!c->resumed || c->stopped_by_us)) {
			if (resume_guest(c, e) < 0)
				return -1;
		}
		if (c->completed &&
		    ingest_finished(c->ing) &&
		    (c->bg_recheck == 0 || c->forced))
			break;
		now = now_mono_ms();
		if (deadline != 0 && now >= deadline && !c->completed &&
		    !c->forced) {
			if (c->o->on_timeout == CKPT_TIMEOUT_ABORT)
				return err_set(e, ERR_TIMEOUT, "the migration "
				    "did not converge within %d s",
				    c->o->timeout_s);
			/* Stopped, the guest dirties nothing: it converges,
			 * and as the guest waits now, at full speed. */
			c->forced = 1;
			ingest_overflow(c->ing, 1);
			if (!c->stopped_by_us && c->was_running &&
			    !c->at_switchover) {
				if (qmp_do(c->q, "stop", NULL, e) < 0)
					return -1;
				c->stopped_by_us = 1;
			}
			if (unthrottle(c, e) < 0)
				return -1;
		}
		report_progress(c, c->completed ? "saving" :
		    c->at_switchover ? "switchover" : c->bg ? "background" :
		    "live", !c->completed);

		pfd[0].fd = qmp_fd(c->q);
		pfd[0].events = POLLIN;
		pfd[1].fd = ingest_wake_fd(c->ing);
		pfd[1].events = POLLIN;
		ms = LOOP_SLICE_MS;
		if (deadline != 0 && !c->forced && deadline > now &&
		    deadline - now < (uint64_t)ms)
			ms = (int)(deadline - now);
		if (poll(pfd, 2, ms) < 0 && errno != EINTR)
			return err_sys(e, ERR_FAIL, "poll");
		ingest_wake_clear(c->ing);
	}
	return 0;
}

/* ---- cleanup: putting the guest back ------------------------------------ */

static void
attention(struct ckpt *c, struct err *e, const char *what, const char *why)
{
	char old[ERR_MSG_MAX];
	int had = err_isset(e);

	snprintf(old, sizeof(old), "%s", e->msg);
	err_clear(e);
	err_set(e, ERR_ATTENTION, "%s%s%s (%s): run 'snapctl -s %s%s%s "
	    "recover'", had ? old : "", had ? "; and " : "", what, why,
	    c->socket_abs, c->store ? " -d " : "",
	    c->store ? store_path(c->store) : "");
}

static int
qemu_alive(struct ckpt *c)
{
	json_t *r = qmp_execute(c->q, "query-status", NULL, NULL);

	if (r == NULL)
		return 0;
	json_decref(r);
	return 1;
}

/* Wait for the migration to end after migrate_cancel. */
static void
cancel_migration(struct ckpt *c)
{
	uint64_t start = now_mono_ms(), now;
	int nudged = 0;
	json_t *r;
	const char *s;

	c->we_cancelled = 1;
	r = qmp_execute(c->q, "migrate_cancel", NULL, NULL);
	if (r == NULL && !qemu_alive(c))
		return;
	json_decref(r);
	for (;;) {
		struct err le = ERR_INIT;

		if (drain_events(c, &le) < 0)
			return;
		if (c->mig_done)
			return;
		r = qmp_execute(c->q, "query-migrate", NULL, NULL);
		s = json_str(r, "status");
		if (s == NULL || !migration_busy(s)) {
			json_decref(r);
			c->mig_done = 1;
			return;
		}
		now = now_mono_ms();
		/* Never seen (cancel releases pre-switchover on 7.2 and 10.0),
		 * but if QEMU kept holding the guest, let it go on. */
		if (!nudged && strcmp(s, "pre-switchover") == 0 &&
		    now - start > CANCEL_NUDGE_MS) {
			nudged = 1;
			json_decref(qmp_execute(c->q, "migrate-continue",
			    json_pack("{s:s}", "state", "pre-switchover"),
			    NULL));
		}
		json_decref(r);
		if (now - start > CANCEL_WAIT_MS)
			return;
		poll(NULL, 0, 50);
	}
}

static int
thaw(struct ckpt *c, struct err *e)
{
	json_t *r;
	struct err le = ERR_INIT;

	if (!c->frozen)
		return 0;
	r = qmp_execute(c->agent, "guest-fsfreeze-thaw", NULL, &le);
	if (r == NULL) {
		err_propagate(e, &le, "guest-fsfreeze-thaw");
		return -1;
	}
	json_decref(r);
	c->frozen = 0;
	c->freeze_ms = now_mono_ms() - c->freeze_ms;
	return 0;
}

/* Put the guest back as it was.  e may hold the failure that got us here. */
static void
settle(struct ckpt *c, struct err *e)
{
	struct err le = ERR_INIT;
	json_t *r;
	const char *st;
	int alive;

	if (c->q == NULL)
		return;
	if (c->mig_started && !c->mig_done)
		cancel_migration(c);
	ingest_stop(c->ing);
	if (c->fd_registered) {
		json_decref(qmp_execute(c->q, "closefd", json_pack("{s:s}",
		    "fdname", CKPT_MIG_FDNAME), NULL));
		c->fd_registered = 0;
	}
	if (thaw(c, &le) < 0) {
		attention(c, e, "the guest's filesystems could not be thawed",
		    le.msg);
		err_clear(&le);
	}
	alive = qemu_alive(c);
	if (!alive) {
		c->caps_applied = c->params_applied = 0;
		return;
	}
	if (c->was_running || c->stopped_by_us) {
		r = qmp_execute(c->q, "query-status", NULL, NULL);
		st = json_str(r, "status");
		if (st != NULL && (strcmp(st, "paused") == 0 ||
		    strcmp(st, "postmigrate") == 0 ||
		    strcmp(st, "finish-migrate") == 0) &&
		    resume_guest(c, &le) < 0) {
			attention(c, e, "the guest could not be resumed",
			    le.msg);
			err_clear(&le);
		}
		json_decref(r);
	}
	if (c->caps_applied) {
		if (qmp_do(c->q, "migrate-set-capabilities", json_pack("{s:O}",
		    "capabilities", c->caps_restore), &le) < 0) {
			attention(c, e, "the migration capabilities could not "
			    "be restored", le.msg);
			err_clear(&le);
		} else
			c->caps_applied = 0;
	}
	if (c->params_applied) {
		if (qmp_do(c->q, "migrate-set-parameters",
		    json_incref(c->params_restore), &le) < 0) {
			attention(c, e, "the migration parameters could not "
			    "be restored", le.msg);
			err_clear(&le);
		} else
			c->params_applied = 0;
	}
}

/* ---- disk-only ---------------------------------------------------------- */

static int
disk_only(struct ckpt *c, struct err *e)
{
	struct err le = ERR_INIT;
	json_t *r;

	if (c->o->quiesce) {
		c->agent = qmp_open_agent(c->o->agent, c->o->qmp_timeout_ms,
		    &le);
		if (c->agent == NULL) {
			err_propagate(e, &le, "guest agent");
			return -1;
		}
		if (c->o->trace != NULL)
			qmp_set_trace(c->agent, c->o->trace,
			    c->o->trace_opaque);
		c->freeze_ms = now_mono_ms();
		/* Frozen from the moment we ask: a timeout may hide success. */
		c->frozen = 1;
		r = qmp_execute(c->agent, "guest-fsfreeze-freeze", NULL, &le);
		if (r == NULL) {
			err_propagate(e, &le, "guest-fsfreeze-freeze");
			return -1;
		}
		json_decref(r);
	}
	if (sig_interrupted(e))
		return -1;
	if (c->o->pause && c->was_running) {
		if (qmp_do(c->q, "stop", NULL, e) < 0)
			return -1;
		c->stopped_by_us = 1;
		c->stop_mono = now_mono_ms();
	}
	if (cut_disks(c, e) < 0)
		return -1;
	if (thaw(c, e) < 0)
		return -1;
	if (c->stopped_by_us && resume_guest(c, e) < 0)
		return -1;
	return 0;
}

/* ---- the manifest ------------------------------------------------------- */

/* The parent's name if d's file is the overlay it made for d, else NULL. */
static const char *
made_by(const struct disk *d, const json_t *parent)
{
	const json_t *pd;
	size_t i;

	json_array_foreach(json_object_get(parent, "disks"), i, pd) {
		if (d->file != NULL && json_str(pd, "overlay") != NULL &&
		    json_str(pd, "device") != NULL &&
		    strcmp(json_str(pd, "overlay"), d->file) == 0 &&
		    strcmp(json_str(pd, "device"), d->device) == 0)
			return json_str(parent, "name");
	}
	return NULL;
}

static json_t *
build_manifest(struct ckpt *c, const char *parent)
{
	json_t *m, *disks, *mem = json_null();
	struct stat st;
	size_t i;
	double paused_ms = 0;

	if (!c->o->disk_only)
		mem = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}",
		    "path", "memory.img",
		    "bytes_on_disk", (json_int_t)c->img.file_bytes,
		    "ram_bytes", (json_int_t)c->img.ram_bytes,
		    "pages", (json_int_t)c->img.pages,
		    "zero_pages", (json_int_t)c->img.zero_pages,
		    "stream_bytes", (json_int_t)ingest_bytes(c->ing));
	disks = json_array();
	for (i = 0; i < c->ndisks; i++) {
		struct disk *d = &c->disks[i];
		json_t *dj;

		dj = json_pack("{s:s, s:s?, s:s?, s:s?, s:s, s:s, s:s?}",
		    "device", d->device, "node", d->node, "file", d->file,
		    "format", d->format, "overlay", d->overlay,
		    "overlay_node", d->overlay_node, "backing", d->backing);
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
		json_object_set_new(dj, "qdev", d->qdev ?
		    json_string(d->qdev) : json_null());
		/* Survives the parent's deletion: delete --disks needs it. */
		json_object_set_new(dj, "file_made_by", made_by(d,
		    c->parent_m) ? json_string(made_by(d, c->parent_m)) :
		    json_null());
		json_array_append_new(disks, dj);
	}
	if (c->stop_ts != 0 && c->resume_ts >= c->stop_ts)
		paused_ms = (c->resume_ts - c->stop_ts) * 1000.0;
	else if (c->stop_mono != 0 && c->resume_mono >= c->stop_mono)
		paused_ms = (double)(c->resume_mono - c->stop_mono);
	m = json_pack("{s:i, s:s, s:s, s:s?, s:{s:s?, s:s?, s:s, s:s?}, s:s, "
	    "s:b, s:b, s:o, s:o, s:{s:f, s:f, s:i}, s:s}",
	    "snapctl_manifest", STORE_MANIFEST_VERSION,
	    "name", c->name,
	    "created", c->created,
	    "parent", parent,
	    "vm", "name", c->vm_name, "uuid", c->uuid,
	    "qemu", c->qemu_version, "machine", c->machine,
	    "mode", c->o->disk_only ? "disk-only" : c->bg ? "background" :
	    c->o->pause || c->o->background ? "pause" : "live",
	    "forced", c->forced,
	    "quiesced", c->o->quiesce,
	    "memory", mem,
	    "disks", disks,
	    "timings",
	    "total_s", (double)(now_mono_ms() - c->t0) / 1000.0,
	    "paused_ms", paused_ms,
	    "passes", c->passes,
	    "snapctl", SNAPCTL_VERSION);
	if (m == NULL)
		return NULL;
	/* Rounded to what the clocks can tell. */
	json_object_set_new(json_object_get(m, "timings"), "paused_ms",
	    json_real((double)(int64_t)(paused_ms * 1000.0 + 0.5) / 1000.0));
	if (c->qemu_downtime >= 0 && !c->o->disk_only)
		json_object_set_new(json_object_get(m, "timings"),
		    "qemu_downtime_ms", json_integer(c->qemu_downtime));
	if (c->o->quiesce)
		json_object_set_new(json_object_get(m, "timings"),
		    "frozen_ms", json_integer((json_int_t)c->freeze_ms));
	return m;
}

/* "; the guest's disks now write to the overlays A, B (kept)". */
static void
note_overlays(struct ckpt *c, struct err *e)
{
	struct buf b = BUF_INIT;
	size_t i;

	if (!c->disks_cut || !err_isset(e))
		return;
	for (i = 0; i < c->ndisks; i++)
		buf_addf(&b, "%s'%s'", i ? ", " : "", c->disks[i].overlay);
	{
		size_t len = strlen(e->msg);

		snprintf(e->msg + len, sizeof(e->msg) - len, "; the disks "
		    "were cut: the guest now writes to %s (kept)",
		    (char *)b.data);
	}
	buf_release(&b);
}

/* ---- ckpt_run ----------------------------------------------------------- */

static void
ckpt_release(struct ckpt *c)
{
	size_t i;

	ingest_free(c->ing);
	if (c->sv[0] >= 0)
		close(c->sv[0]);
	if (c->sv[1] >= 0)
		close(c->sv[1]);
	qmp_close(c->agent);
	qmp_close(c->q);
	for (i = 0; i < c->ndisks; i++)
		disk_free(&c->disks[i]);
	free(c->disks);
	json_decref(c->caps_set);
	json_decref(c->caps_restore);
	json_decref(c->params_set);
	json_decref(c->params_restore);
	free(c->vm_name);
	free(c->uuid);
	free(c->machine);
	free(c->stage);
	free(c->socket_abs);
	free(c->parent);
	json_decref(c->parent_m);
	free(c->name);
	store_close(c->store);
}

static char *
absolute_socket(const char *sock)
{
	char *p;

	if (sock == NULL || strncmp(sock, "tcp:", 4) == 0 || sock[0] == '/')
		return xstrdup(sock ? sock : "");
	p = realpath(sock, NULL);
	return p != NULL ? p : xstrdup(sock);
}

static int
check_opts(const struct ckpt_opts *o, struct err *e)
{
	if (o->quiesce && !o->disk_only)
		return err_set(e, ERR_USAGE, "--quiesce needs --disk-only: "
		    "a guest stopped at switchover cannot answer its agent");
	if (o->quiesce && o->agent == NULL)
		return err_set(e, ERR_USAGE, "--quiesce needs --agent SOCKET");
	if (o->background && (o->pause || o->disk_only))
		return err_set(e, ERR_USAGE, "--mode background excludes %s",
		    o->pause ? "--pause" : "--disk-only");
	if (o->disk_only && o->timeout_s > 0)
		return err_set(e, ERR_USAGE, "--timeout has no use with "
		    "--disk-only");
	return 0;
}

int
ckpt_run(const struct ckpt_opts *o, json_t **manifest, struct err *e)
{
	struct ckpt cs, *c = &cs;
	struct ckpt_opts eff;
	struct err le = ERR_INIT, local = ERR_INIT;
	char defname[32];
	json_t *m = NULL, *note = NULL;
	int rc = -1;

	*manifest = NULL;
	if (e == NULL)
		e = &local;
	memset(c, 0, sizeof(*c));
	c->sv[0] = c->sv[1] = -1;
	c->qemu_downtime = -1;
	eff = *o;
	if (eff.bandwidth == 0)
		eff.bandwidth = CKPT_DEFAULT_BANDWIDTH;
	c->o = &eff;
	c->t0 = now_mono_ms();
	format_utc(now_real(), c->created);
	if (check_opts(o, e) < 0)
		goto out;
	if (o->name == NULL) {
		store_default_name(now_real(), defname);
		c->name = xstrdup(defname);
	} else
		c->name = xstrdup(o->name);
	if (store_name_check(c->name, e) < 0)
		goto out;
	c->socket_abs = absolute_socket(o->socket);

	if ((c->store = store_open(o->store, 1, e)) == NULL)
		goto out;
	if (store_lock(c->store, e) < 0)
		goto out;
	note = store_note_read(c->store, e);
	if (note != NULL) {
		/* The guest may still be stopped, its settings changed. */
		err_set(e, ERR_ATTENTION, "store '%s' holds the recovery note "
		    "of an interrupted checkpoint ('%s' of pid %lld): run "
		    "'snapctl -d %s recover' first", store_path(c->store),
		    json_str(note, "name") ? json_str(note, "name") : "?",
		    (long long)json_integer_value(json_object_get(note,
		    "pid")), store_path(c->store));
		goto out;
	}
	if (err_isset(e))
		goto out;
	store_clean_stale(c->store);
	if (store_exists(c->store, c->name)) {
		err_set(e, ERR_FAIL, "checkpoint '%s' already exists in '%s'",
		    c->name, store_path(c->store));
		goto out;
	}

	c->q = qmp_open(o->socket, o->qmp_timeout_ms, &le);
	if (c->q == NULL) {
		err_propagate(e, &le, NULL);
		goto out;
	}
	if (o->trace != NULL)
		qmp_set_trace(c->q, o->trace, o->trace_opaque);
	if (discover(c, e) < 0)
		goto out;
	if ((c->stage = store_stage_new(c->store, c->name, e)) == NULL)
		goto out;
	if (write_note(c, e) < 0)
		goto out;

	/* From here on, every path goes through settle(). */
	if (sig_interrupted(e))
		goto settle;
	if (apply_changes(c, e) < 0)
		goto settle;
	if (o->disk_only) {
		if (disk_only(c, e) < 0)
			goto settle;
	} else {
		if (capture(c, e) < 0)
			goto settle;
		/* The guest runs again; wait briefly for its RESUME event
		 * (QEMU's clock measures the pause). */
		if (c->was_running && c->resume_ts == 0) {
			struct qmp_event *ev;

			ev = qmp_wait_event(c->q, "RESUME", NULL,
			    RESUME_EVENT_MS, NULL);
			if (ev != NULL) {
				handle_event(c, ev);
				qmp_event_free(ev);
			}
		}
		{
			json_t *r = qmp_execute(c->q, "query-migrate", NULL,
			    NULL);

			if (json_is_integer(json_object_get(r, "downtime")))
				c->qemu_downtime = json_integer_value(
				    json_object_get(r, "downtime"));
			json_decref(r);
		}
		ingest_stop(c->ing);
		if (ingest_result(c->ing, NULL) < 0) {
			struct err se = ERR_INIT;

			if (ingest_check(c->ing, &se) < 0)
				err_propagate(e, &se, "the migration stream");
			else
				err_set(e, ERR_FAIL, "the migration stream "
				    "ended early");
			goto settle;
		}
		if (!c->machine && ingest_machine(c->ing)[0] != '\0')
			c->machine = xstrdup(ingest_machine(c->ing));
		if (ingest_commit(c->ing, &c->img, e) < 0)
			goto settle;
		c->img_committed = 1;
	}
settle:
	settle(c, e);
	if (err_isset(e))
		goto out;
	m = build_manifest(c, c->parent);
	if (m == NULL) {
		err_set(e, ERR_FAIL, "cannot build the manifest");
		goto out;
	}
	if (store_stage_commit(c->store, c->stage, c->name, m, e) < 0)
		goto out;
	free(c->stage);
	c->stage = NULL;
	*manifest = m;
	m = NULL;
	rc = 0;
out:
	note_overlays(c, e);
	if (c->stage != NULL) {
		ingest_free(c->ing);
		c->ing = NULL;
		store_stage_remove(c->stage);
	}
	/* The note stays only while something is left to recover. */
	if (c->note_written && (e == NULL || e->kind != ERR_ATTENTION))
		store_note_remove(c->store, NULL);
	json_decref(note);
	json_decref(m);
	ckpt_release(c);
	return rc;
}

/* ---- ckpt_recover ------------------------------------------------------- */

int
ckpt_recover(const struct ckpt_recover_opts *o, json_t **report,
    struct err *e)
{
	struct store *store = NULL;
	struct qmp *q = NULL, *agent = NULL;
	struct err le = ERR_INIT;
	json_t *note = NULL, *r = NULL, *rep, *done;
	const char *sock = o->socket, *agent_path = o->agent, *st;
	int rc = -1, was_running = -1, running;

	*report = NULL;
	rep = json_object();
	done = json_array();
	json_object_set(rep, "actions", done);
	if (o->store != NULL) {
		if ((store = store_open(o->store, 0, e)) == NULL)
			goto out;
		if (store_lock(store, e) < 0) {
			err_prefix(e, "a checkpoint is running: ");
			goto out;
		}
		note = store_note_read(store, e);
		if (err_isset(e))
			goto out;
	}
	if (note != NULL) {
		if (sock == NULL)
			sock = json_str(note, "socket");
		if (agent_path == NULL)
			agent_path = json_str(note, "agent");
		if (json_is_boolean(json_object_get(note, "was_running")))
			was_running = json_is_true(json_object_get(note,
			    "was_running"));
	}
	if (sock == NULL) {
		err_set(e, ERR_USAGE, "recover: no QMP socket: use -s%s",
		    o->store ? " (the store has no recovery note)" : "");
		goto out;
	}
	q = qmp_open(sock, o->qmp_timeout_ms, &le);
	if (q == NULL) {
		err_propagate(e, &le, NULL);
		goto out;
	}
	if (o->trace != NULL)
		qmp_set_trace(q, o->trace, o->trace_opaque);
	if (note != NULL) {
		/* The note must be about this VM. */
		const json_t *vm = json_object_get(note, "vm");
		json_t *n = qmp_call(q, "query-name", NULL, e);
		json_t *u = n ? qmp_call(q, "query-uuid", NULL, e) : NULL;
		int same = n != NULL && u != NULL &&
		    json_equal(json_object_get(vm, "uuid") ?
		    json_object_get(vm, "uuid") : json_null(),
		    json_object_get(u, "UUID") ? json_object_get(u, "UUID") :
		    json_null()) &&
		    json_equal(json_object_get(vm, "name") ?
		    json_object_get(vm, "name") : json_null(),
		    json_object_get(n, "name") ? json_object_get(n, "name") :
		    json_null());

		json_decref(n);
		json_decref(u);
		if (err_isset(e))
			goto out;
		if (!same) {
			err_set(e, ERR_MISMATCH, "the recovery note in '%s' is "
			    "about another VM than '%s'", o->store, sock);
			goto out;
		}
	}

	/* 1. Whatever migration is pending goes. */
	if ((r = qmp_call(q, "query-migrate", NULL, e)) == NULL)
		goto out;
	if (migration_busy(json_str(r, "status"))) {
		struct ckpt c;

		memset(&c, 0, sizeof(c));
		c.q = q;
		c.mig_started = 1;
		cancel_migration(&c);
		json_array_append_new(done, json_sprintf("cancelled the "
		    "migration (was '%s')", json_str(r, "status")));
	}
	json_decref(r);
	r = NULL;

	/* 2. Thaw. */
	if (agent_path != NULL) {
		agent = qmp_open_agent(agent_path, o->qmp_timeout_ms, &le);
		if (agent == NULL) {
			err_propagate(e, &le, "guest agent");
			goto out;
		}
		r = qmp_call(agent, "guest-fsfreeze-status", NULL, e);
		if (r == NULL)
			goto out;
		if (json_is_string(r) && strcmp(json_string_value(r),
		    "frozen") == 0) {
			json_decref(r);
			if ((r = qmp_call(agent, "guest-fsfreeze-thaw", NULL,
			    e)) == NULL)
				goto out;
			json_array_append_new(done,
			    json_string("thawed the filesystems"));
		}
		json_decref(r);
		r = NULL;
	}

	/* 3. Capabilities and parameters. */
	if (note != NULL) {
		const json_t *caps = json_object_get(note, "capabilities");
		const json_t *params = json_object_get(note, "parameters");

		if (json_array_size(caps) > 0) {
			if (qmp_do(q, "migrate-set-capabilities",
			    json_pack("{s:O}", "capabilities", caps), e) < 0)
				goto out;
			json_array_append_new(done, json_string("restored the "
			    "migration capabilities"));
		}
		if (json_object_size(params) > 0) {
			if (qmp_do(q, "migrate-set-parameters",
			    json_deep_copy(params), e) < 0)
				goto out;
			json_array_append_new(done, json_string("restored the "
			    "migration parameters"));
		}
	} else {
		const json_t *cap;
		size_t i;

		if ((r = qmp_call(q, "query-migrate-capabilities", NULL,
		    e)) == NULL)
			goto out;
		json_array_foreach(r, i, cap)
			if (strcmp(json_str(cap, "capability") ?
			    json_str(cap, "capability") : "",
			    "pause-before-switchover") == 0 &&
			    json_is_true(json_object_get(cap, "state"))) {
				if (qmp_do(q, "migrate-set-capabilities",
				    json_pack("{s:[{s:s, s:b}]}",
				    "capabilities", "capability",
				    "pause-before-switchover", "state", 0),
				    e) < 0)
					goto out;
				json_array_append_new(done, json_string(
				    "turned pause-before-switchover off"));
			}
		json_decref(r);
		r = NULL;
	}

	/* 4. Resume. */
	if ((r = qmp_call(q, "query-status", NULL, e)) == NULL)
		goto out;
	st = json_str(r, "status");
	running = json_is_true(json_object_get(r, "running"));
	if (!running && was_running != 0 && st != NULL &&
	    (strcmp(st, "paused") == 0 || strcmp(st, "postmigrate") == 0 ||
	    strcmp(st, "finish-migrate") == 0)) {
		if (qmp_do(q, "cont", NULL, &le) < 0) {
			err_set(e, ERR_ATTENTION, "cannot resume the guest "
			    "(%s): %s", st, le.msg);
			goto out;
		}
		json_array_append_new(done, json_sprintf("resumed the guest "
		    "(was '%s')", st));
		running = 1;
	}
	json_decref(r);
	if ((r = qmp_call(q, "query-status", NULL, e)) == NULL)
		goto out;
	json_object_set(rep, "status", json_object_get(r, "status"));
	running = json_is_true(json_object_get(r, "running"));
	if (!running && was_running != 0) {
		err_set(e, ERR_ATTENTION, "the guest is still not running "
		    "(status '%s')", json_str(r, "status") ? json_str(r, "status") :
		    "?");
		goto out;
	}

	/* 5. What the killed checkpoint left in the store. */
	if (store != NULL) {
		int n = store_clean_stale(store);

		if (n > 0)
			json_array_append_new(done, json_sprintf("removed %d "
			    "partial checkpoint%s", n, n == 1 ? "" : "s"));
		if (note != NULL) {
			if (store_note_remove(store, e) < 0)
				goto out;
			json_array_append_new(done, json_string("removed the "
			    "recovery note"));
		}
	}
	json_object_set_new(rep, "running", json_boolean(running));
	*report = rep;
	rep = NULL;
	rc = 0;
out:
	json_decref(r);
	json_decref(note);
	json_decref(done);
	json_decref(rep);
	qmp_close(agent);
	qmp_close(q);
	store_close(store);
	return rc;
}
