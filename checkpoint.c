/*
 * checkpoint.c - ckpt_run() (checkpoint.h; ckpt_recover() is in
 * recover.c): discovery over QMP, the capability and parameter changes
 * and their restoration, the ingest of the migration stream into the
 * memory image (ingest.h), the event loop that cuts the disks at
 * pre-switchover and resumes the guest at completion, and the cleanup
 * every failure path goes through.
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

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "checkpoint.h"
#include "ingest.h"
#include "manifest.h"
#include "save.h"
#include "sig.h"
#include "store.h"
#include "util.h"
#include "vm.h"

#ifndef SNAPCTL_VERSION
#define SNAPCTL_VERSION "0.0.0"
#endif

#define CKPT_CACHE_BYTES (64u << 20)	/* the image writer's chunk cache */
#define SPOOL_SLACK (64ull << 20)	/* file spool: RAM size + this */
#define SOCK_BUF (8 << 20)		/* both ends of the socketpair */
#define LOOP_SLICE_MS 100
#define PROGRESS_MS 500
#define RESUME_EVENT_MS 2000
#define BG_RECHECK_MS 100		/* see bg_resume() */

/* ---- the checkpoint's state -------------------------------------------- */

struct disk {
	char *device;		/* the device name, or the qdev id */
	char *qdev;
	char *node;		/* root node of the device: the active image */
	char *drive;		/* the drive's device name, or NULL: node */
	char *file;		/* the active image's file name */
	char *format;
	char *backing;		/* its backing file, or NULL */
	char *overlay;		/* the new active image */
	char *overlay_node;
};

/*
 * The phase of the run; ckpt_state_set() checks each step against the
 * table below.  Any phase may fail.
 *
 *   live, pause:  START -> PREPARED -> LIVE -> SWITCHOVER -> CUT ->
 *                 COMPLETED -> CAPTURED -> SETTLED -> DONE
 *   background:   START -> PREPARED -> CUTTING -> BG_SETUP [-> BG_LIVE] ->
 *                 COMPLETED -> CAPTURED -> SETTLED -> DONE
 *   disk-only:    START -> PREPARED -> CUTTING -> CAPTURED -> SETTLED -> DONE
 */
enum ckpt_state {
	CKPT_S_START,		/* store, discovery, note: QEMU untouched */
	CKPT_S_PREPARED,	/* changing QEMU: settle() undoes from here */
	CKPT_S_CUTTING,		/* disk-only, background: the cut outside a
				 * migration (guest frozen/stopped if asked) */
	CKPT_S_LIVE,		/* migrate accepted, the guest runs (or is
				 * held by --pause or --timeout) */
	CKPT_S_SWITCHOVER,	/* QEMU holds the guest at pre-switchover */
	CKPT_S_CUT,		/* disks cut, migrate-continue: the last pass */
	CKPT_S_BG_SETUP,	/* background: migrate accepted, the guest
				 * stopped until QEMU's setup is over */
	CKPT_S_BG_LIVE,		/* background: the guest runs again */
	CKPT_S_COMPLETED,	/* QEMU is done, the guest resumed; waiting
				 * for the stream's end */
	CKPT_S_CAPTURED,	/* stream ended (or disks cut): commit */
	CKPT_S_SETTLED,		/* the guest and QEMU's settings put back */
	CKPT_S_DONE,		/* in the store */
	CKPT_S_FAILED,		/* settled as far as possible */
};

enum ckpt_mode {
	CKPT_MODE_LIVE,
	CKPT_MODE_PAUSE,	/* also background on a guest not running */
	CKPT_MODE_BACKGROUND,
	CKPT_MODE_DISK_ONLY,
};

/* What QEMU said of the migration (MIGRATION events): only ever grows. */
enum ckpt_mig {
	CKPT_MIG_NONE,		/* nothing that matters yet */
	CKPT_MIG_PRE_SWITCHOVER,
	CKPT_MIG_COMPLETED,
	CKPT_MIG_CANCELLED,
	CKPT_MIG_FAILED,
};

struct ckpt {
	const struct ckpt_opts *o;
	enum ckpt_state state;
	enum ckpt_mode mode;
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
	struct disk *disks;
	size_t ndisks;

	/* what we changed, so what settle() must undo */
	json_t *caps_set;	/* [{capability,state}] we set */
	json_t *caps_restore;	/* the same capabilities, original states */
	json_t *params_set;
	json_t *params_restore;
	int caps_applied;
	int params_applied;
	int note_written;
	int stopped_by_us;	/* the guest: cont it */
	int frozen;		/* its filesystems: thaw them */
	int fd_registered;	/* getfd done, migrate not yet: closefd */
	int disks_cut;		/* the overlays are in use: kept */
	uint64_t freeze_ms;

	/* the migration */
	int sv[2];
	enum ckpt_mig mig;
	uint64_t bg_recheck;	/* monotonic ms of the runstate recheck */
	int forced;		/* --timeout stopped the guest */
	int passes;
	double stop_ts;		/* QEMU's timestamps of STOP and RESUME */
	double resume_ts;
	uint64_t stop_mono;	/* fallback when events are missed */
	uint64_t resume_mono;
	int64_t qemu_downtime;
	struct ingest *ing;	/* the stream into the image */
	struct img_stats img;

	/* progress */
	uint64_t last_progress;
	uint64_t last_bytes;
};

#define S(x) (1u << CKPT_S_##x)
static const unsigned ckpt_next[] = {
	[CKPT_S_START] = S(PREPARED),
	[CKPT_S_PREPARED] = S(CUTTING) | S(LIVE),
	[CKPT_S_CUTTING] = S(BG_SETUP) | S(CAPTURED),
	[CKPT_S_LIVE] = S(SWITCHOVER),
	[CKPT_S_SWITCHOVER] = S(CUT),
	[CKPT_S_CUT] = S(COMPLETED),
	[CKPT_S_BG_SETUP] = S(BG_LIVE) | S(COMPLETED),
	[CKPT_S_BG_LIVE] = S(COMPLETED),
	[CKPT_S_COMPLETED] = S(CAPTURED),
	[CKPT_S_CAPTURED] = S(SETTLED),
	[CKPT_S_SETTLED] = S(DONE),
	[CKPT_S_DONE] = 0,
	[CKPT_S_FAILED] = 0,
};
#undef S

/* Every phase but the two ends may fail; nothing else skips a step. */
static void
ckpt_state_set(struct ckpt *c, enum ckpt_state to)
{
	assert(to == CKPT_S_FAILED ? c->state != CKPT_S_DONE &&
	    c->state != CKPT_S_FAILED : (ckpt_next[c->state] & (1u << to)) != 0);
	c->state = to;
}

/* A migration is pending: QEMU took it and has not ended it. */
static int
ckpt_migrating(const struct ckpt *c)
{
	switch (c->state) {
	case CKPT_S_LIVE:
	case CKPT_S_SWITCHOVER:
	case CKPT_S_CUT:
	case CKPT_S_BG_SETUP:
	case CKPT_S_BG_LIVE:
		return c->mig < CKPT_MIG_COMPLETED;
	default:
		return 0;
	}
}

/* The manifest's "mode". */
static const char *
ckpt_mode_name(enum ckpt_mode m)
{
	switch (m) {
	case CKPT_MODE_LIVE:
		return "live";
	case CKPT_MODE_PAUSE:
		return "pause";
	case CKPT_MODE_BACKGROUND:
		return "background";
	case CKPT_MODE_DISK_ONLY:
		return "disk-only";
	}
	return "?";
}

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
	free(d->drive);
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
		if (device != NULL && *device != '\0')
			d->drive = xstrdup(device);
		else if (node == NULL) {
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

static int
discover(struct ckpt *c, struct err *e)
{
	json_t *r = NULL, *caps = NULL, *params = NULL;
	struct blockinfo *bi = NULL;
	struct vm_status st;
	struct vm_migration mig;
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
	c->parent = store_find_parent(c->store, c->uuid, c->vm_name);
	if (c->parent != NULL)
		c->parent_m = store_manifest_read(c->store, c->parent, NULL);
	if (vm_disks_query(c->q, &bi, &nbi, e) < 0 ||
	    collect_disks(c, bi, nbi, e) < 0)
		goto out;
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
	    "pause_before_switchover_set", c->mode != CKPT_MODE_BACKGROUND);
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
	enum ckpt_mig m = CKPT_MIG_NONE;
	const char *s;

	if (strcmp(ev->name, "MIGRATION") == 0) {
		s = json_str(ev->data, "status");
		if (s == NULL)
			return;
		if (strcmp(s, "pre-switchover") == 0)
			m = CKPT_MIG_PRE_SWITCHOVER;
		else if (strcmp(s, "completed") == 0)
			m = CKPT_MIG_COMPLETED;
		else if (strcmp(s, "cancelled") == 0)
			m = CKPT_MIG_CANCELLED;
		else if (strcmp(s, "failed") == 0)
			m = CKPT_MIG_FAILED;
		if (m > c->mig)
			c->mig = m;
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

/* After a failed transaction QEMU's rollback leaves no overlay behind;
 * after a timeout or disconnect they stay: they may be in use. */
static int
cut_disks(struct ckpt *c, struct err *e)
{
	struct err le = ERR_INIT;
	struct vm_overlay *ov;
	struct stat st;
	size_t i;
	int rc;

	if (c->ndisks == 0)
		return 0;
	for (i = 0; i < c->ndisks; i++)
		if (lstat(c->disks[i].overlay, &st) == 0)
			return err_set(e, ERR_FAIL, "overlay '%s' for disk '%s' "
			    "appeared meanwhile: not overwritten",
			    c->disks[i].overlay, c->disks[i].device);
	ov = xcalloc(c->ndisks, sizeof(*ov));
	for (i = 0; i < c->ndisks; i++) {
		ov[i].device = c->disks[i].drive;
		ov[i].node = c->disks[i].node;
		ov[i].file = c->disks[i].overlay;
		ov[i].node_name = c->disks[i].overlay_node;
	}
	rc = vm_overlays_cut(c->q, ov, c->ndisks, &le);
	free(ov);
	if (rc < 0)
		return err_propagate(e, &le, "cannot cut the disks");
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
	if (c->mode == CKPT_MODE_PAUSE)
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
	if (c->mode != CKPT_MODE_LIVE && c->was_running) {
		if (vm_stop(c->q, e) < 0)
			return -1;
		c->stopped_by_us = 1;
	}
	/*
	 * Background: the image will be memory as QEMU finds it when its
	 * migration thread stops the guest for the setup; we stopped it
	 * first, so that is now, and the disks are cut at this instant.
	 */
	if (c->mode == CKPT_MODE_BACKGROUND) {
		ckpt_state_set(c, CKPT_S_CUTTING);
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
	ckpt_state_set(c, c->mode == CKPT_MODE_BACKGROUND ? CKPT_S_BG_SETUP :
	    CKPT_S_LIVE);
	return 0;
}

static void
report_progress(struct ckpt *c, const char *phase, int query)
{
	struct ckpt_progress p;
	struct vm_migration mig;
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
	if (query && vm_migration_query(c->q, &mig, NULL) == 0 &&
	    mig.has_ram) {
		p.ram_total = mig.ram_total;
		p.remaining = mig.ram_remaining;
		p.dirty_rate = mig.dirty_rate;
		if (p.rate > p.dirty_rate)
			p.eta_s = (double)p.remaining /
			    (double)(p.rate - p.dirty_rate);
	}
	c->last_progress = now;
	c->last_bytes = bytes;
	c->o->progress(c->o->progress_opaque, &p);
}

/* cont (retried while QEMU is still finishing the migration). */
static int
resume_guest(struct ckpt *c, struct err *e)
{
	if (vm_resume(c->q, e) < 0)
		return -1;
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
	struct vm_status st;

	ckpt_state_set(c, CKPT_S_BG_LIVE);
	c->bg_recheck = now_mono_ms() + BG_RECHECK_MS;
	if (vm_status(c->q, &st, e) < 0)
		return -1;
	if (!st.running)
		return resume_guest(c, e);
	c->stopped_by_us = 0;
	return 0;
}

static int
bg_recheck(struct ckpt *c, struct err *e)
{
	struct vm_status st;

	c->bg_recheck = 0;
	if (vm_status(c->q, &st, e) < 0)
		return -1;
	return st.state == VM_RS_PAUSED ? resume_guest(c, e) : 0;
}

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

/* At pre-switchover: the guest is stopped; cut the disks, continue. */
static int
do_switchover(struct ckpt *c, struct err *e)
{
	ckpt_state_set(c, CKPT_S_SWITCHOVER);
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
	ckpt_state_set(c, CKPT_S_CUT);
	return qmp_do(c->q, "migrate-continue", json_pack("{s:s}", "state",
	    "pre-switchover"), e);
}

static int
migration_error(struct ckpt *c, struct err *e)
{
	struct vm_migration mig;

	vm_migration_query(c->q, &mig, NULL);
	if (c->mig != CKPT_MIG_FAILED)
		return err_set(e, ERR_FAIL, "the migration was cancelled by "
		    "someone else");
	return err_set(e, ERR_FAIL, "the migration failed%s%s",
	    mig.error_desc[0] != '\0' ? ": " : "", mig.error_desc);
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

/* QEMU sent everything: cont a guest it, or we, still hold. */
static int
completed(struct ckpt *c, struct err *e)
{
	int held = c->state != CKPT_S_BG_LIVE || c->stopped_by_us;

	ckpt_state_set(c, CKPT_S_COMPLETED);
	return c->was_running && held ? resume_guest(c, e) : 0;
}

/* --timeout with CKPT_TIMEOUT_STOP. */
static int
force(struct ckpt *c, struct err *e)
{
	/* Stopped, the guest dirties nothing: it converges, and as the
	 * guest waits now, at full speed. */
	c->forced = 1;
	ingest_overflow(c->ing, 1);
	if (!c->stopped_by_us && c->was_running && c->state != CKPT_S_CUT) {
		if (vm_stop(c->q, e) < 0)
			return -1;
		c->stopped_by_us = 1;
	}
	return unthrottle(c, e);
}

static const char *
phase_name(const struct ckpt *c)
{
	switch (c->state) {
	case CKPT_S_COMPLETED:
		return "saving";
	case CKPT_S_CUT:
		return "switchover";
	case CKPT_S_BG_SETUP:
	case CKPT_S_BG_LIVE:
		return "background";
	default:
		return "live";
	}
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
		if (c->mig >= CKPT_MIG_CANCELLED)
			return migration_error(c, e);
		switch (c->state) {
		case CKPT_S_LIVE:
			if (c->mig == CKPT_MIG_PRE_SWITCHOVER) {
				if (do_switchover(c, e) < 0)
					return -1;
				continue;
			}
			if (c->mig == CKPT_MIG_COMPLETED)
				return err_set(e, ERR_FAIL, "the migration "
				    "completed without a pre-switchover pause");
			break;
		case CKPT_S_BG_SETUP:
			if (!c->forced && ingest_pages(c->ing) > 0) {
				if (bg_resume(c, e) < 0)
					return -1;
				continue;
			}
			/* FALLTHROUGH */
		case CKPT_S_BG_LIVE:
		case CKPT_S_CUT:
			if (c->mig == CKPT_MIG_COMPLETED &&
			    completed(c, e) < 0)
				return -1;
			break;
		default:
			break;
		}
		if (c->bg_recheck != 0 && !c->forced &&
		    now_mono_ms() >= c->bg_recheck) {
			if (bg_recheck(c, e) < 0)
				return -1;
		}
		if (c->state == CKPT_S_COMPLETED &&
		    ingest_finished(c->ing) &&
		    (c->bg_recheck == 0 || c->forced))
			break;
		now = now_mono_ms();
		if (deadline != 0 && now >= deadline &&
		    c->state != CKPT_S_COMPLETED && !c->forced) {
			if (c->o->on_timeout == CKPT_TIMEOUT_ABORT)
				return err_set(e, ERR_TIMEOUT, "the migration "
				    "did not converge within %d s",
				    c->o->timeout_s);
			if (force(c, e) < 0)
				return -1;
		}
		report_progress(c, phase_name(c),
		    c->state != CKPT_S_COMPLETED);

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
	ckpt_state_set(c, CKPT_S_CAPTURED);
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
	struct vm_status st;

	return vm_status(c->q, &st, NULL) == 0;
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
	struct vm_status st;
	int alive;

	if (c->q == NULL)
		return;
	/* Cancel a pending migration and wait (bounded) for it to end. */
	if (ckpt_migrating(c))
		vm_migration_cancel(c->q, VM_CANCEL_WAIT_MS, NULL);
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
		goto out;
	}
	if ((c->was_running || c->stopped_by_us) &&
	    vm_status(c->q, &st, NULL) == 0 && vm_stopped(&st) &&
	    resume_guest(c, &le) < 0) {
		attention(c, e, "the guest could not be resumed", le.msg);
		err_clear(&le);
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
out:
	ckpt_state_set(c, err_isset(e) ? CKPT_S_FAILED : CKPT_S_SETTLED);
}

/* ---- disk-only ---------------------------------------------------------- */

static int
disk_only(struct ckpt *c, struct err *e)
{
	struct err le = ERR_INIT;
	json_t *r;

	ckpt_state_set(c, CKPT_S_CUTTING);
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
		if (vm_stop(c->q, e) < 0)
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
	ckpt_state_set(c, CKPT_S_CAPTURED);
	return 0;
}

/* ---- the manifest ------------------------------------------------------- */

static json_t *
build_manifest(struct ckpt *c, const char *parent)
{
	struct manifest_input in;
	struct manifest_disk *disks;
	json_t *m;
	size_t i;

	memset(&in, 0, sizeof(in));
	disks = xcalloc(c->ndisks ? c->ndisks : 1, sizeof(*disks));
	for (i = 0; i < c->ndisks; i++) {
		const struct disk *d = &c->disks[i];

		disks[i].device = d->device;
		disks[i].qdev = d->qdev;
		disks[i].node = d->node;
		disks[i].file = d->file;
		disks[i].format = d->format;
		disks[i].backing = d->backing;
		disks[i].overlay = d->overlay;
		disks[i].overlay_node = d->overlay_node;
	}
	in.name = c->name;
	in.created = c->created;
	in.parent = parent;
	in.parent_m = c->parent_m;
	in.vm_name = c->vm_name;
	in.vm_uuid = c->uuid;
	in.qemu = c->qemu_version;
	in.machine = c->machine;
	in.mode = ckpt_mode_name(c->mode);
	in.forced = c->forced;
	in.quiesced = c->o->quiesce;
	in.memory = c->mode != CKPT_MODE_DISK_ONLY;
	in.mem_file_bytes = c->img.file_bytes;
	in.ram_bytes = c->img.ram_bytes;
	in.pages = c->img.pages;
	in.zero_pages = c->img.zero_pages;
	in.stream_bytes = ingest_bytes(c->ing);
	in.disks = disks;
	in.ndisks = c->ndisks;
	in.total_s = (double)(now_mono_ms() - c->t0) / 1000.0;
	if (c->stop_ts != 0 && c->resume_ts >= c->stop_ts)
		in.paused_ms = (c->resume_ts - c->stop_ts) * 1000.0;
	else if (c->stop_mono != 0 && c->resume_mono >= c->stop_mono)
		in.paused_ms = (double)(c->resume_mono - c->stop_mono);
	in.passes = c->passes;
	in.qemu_downtime_ms = c->mode == CKPT_MODE_DISK_ONLY ? -1 :
	    c->qemu_downtime;
	in.frozen = c->o->quiesce;
	in.frozen_ms = c->freeze_ms;
	m = manifest_build(&in);
	free(disks);
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
	c->state = CKPT_S_START;
	c->mode = o->disk_only ? CKPT_MODE_DISK_ONLY : o->background ?
	    CKPT_MODE_BACKGROUND : o->pause ? CKPT_MODE_PAUSE : CKPT_MODE_LIVE;
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
	ckpt_state_set(c, CKPT_S_PREPARED);
	if (sig_interrupted(e))
		goto settle;
	if (apply_changes(c, e) < 0)
		goto settle;
	if (c->mode == CKPT_MODE_DISK_ONLY) {
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
			struct vm_migration mig;

			if (vm_migration_query(c->q, &mig, NULL) == 0)
				c->qemu_downtime = mig.downtime_ms;
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
	ckpt_state_set(c, CKPT_S_DONE);
	*manifest = m;
	m = NULL;
	rc = 0;
out:
	if (rc < 0 && c->state != CKPT_S_FAILED)
		ckpt_state_set(c, CKPT_S_FAILED);
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
