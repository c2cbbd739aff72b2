/*
 * checkpoint.c - ckpt_run() (checkpoint.h; ckpt_recover() is in
 * recover.c): the run and its state machine, the recovery note, the
 * capability and parameter changes and settle(), which every path after
 * them goes through to put the guest back; the disk cut; disk-only; the
 * manifest.  Discovery is in ckplan.c, the memory capture in ckcapture.c.
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
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <assert.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "checkpoint_int.h"
#include "diskswap.h"
#include "ingest.h"
#include "launch.h"
#include "manifest.h"
#include "restoredir.h"
#include "sig.h"
#include "store.h"
#include "util.h"
#include "vm.h"

#define RESUME_EVENT_MS 2000

/* ---- the checkpoint's state -------------------------------------------- */

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
void
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

/* ---- the recovery note -------------------------------------------------- */

/* What recover needs to finish or undo each disk swap (diskswap.h). */
static json_t *
swap_note(const struct ckpt *c)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; i < c->ndisks; i++)
		json_array_append_new(a, diskswap_note(&c->disks[i].sw));
	return a;
}

int
ckpt_note_write(struct ckpt *c, struct err *e)
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
	json_object_set_new(note, "swaps", swap_note(c));
	rc = store_note_write(c->store, note, e);
	json_decref(note);
	if (rc == 0)
		c->note_written = 1;
	return rc;
}

/* ---- the disk cut ------------------------------------------------------- */

/* e becomes "...: the disk swap is not finished: run 'snapctl recover'". */
static void
attention_swap(struct ckpt *c, struct err *e)
{
	size_t len = strlen(e->msg);

	snprintf(e->msg + len, sizeof(e->msg) - len, "; the disk swap is not "
	    "finished: run 'snapctl -s %s -d %s recover'", c->socket_abs,
	    store_path(c->store));
	e->kind = ERR_ATTENTION;
}

/* Before the capture: every disk's state linked, its overlay made. */
static int
prepare_swaps(struct ckpt *c, struct err *e)
{
	size_t i, k;

	for (i = 0; i < c->ndisks; i++)
		if (diskswap_prepare(&c->disks[i].sw, e) < 0) {
			for (k = 0; k < i; k++)
				diskswap_undo(&c->disks[k].sw);
			err_prefix(e, "disk '%s': ", c->disks[i].device);
			return -1;
		}
	/* A restored VM's path is a recorded restore overlay: its record
	 * learns the new overlay before the cut (restoredir.h).  Best
	 * effort: a record that did not learn it makes the sweep keep the
	 * file, never remove it. */
	for (i = 0; i < c->ndisks; i++)
		(void)restoredir_follow_swap(store_path(c->store),
		    c->disks[i].sw.path, c->disks[i].sw.tmp, NULL);
	c->swaps_prepared = 1;
	diskswap_test_hold("prepared");
	return 0;
}

/* The cut did not happen: the files go as they came. */
static void
undo_swaps(struct ckpt *c)
{
	size_t i;

	if (!c->swaps_prepared || c->disks_cut || c->cut_unknown)
		return;
	for (i = 0; i < c->ndisks; i++)
		diskswap_undo(&c->disks[i].sw);
	c->swaps_prepared = 0;
}

/* The directories of the swapped disks, once the guest runs again. */
static int
sync_swaps(struct ckpt *c, struct err *e)
{
	size_t i;

	for (i = 0; i < c->ndisks; i++)
		if (c->disks[i].sw.renamed &&
		    diskswap_sync(&c->disks[i].sw, e) < 0)
			return -1;
	return 0;
}

/*
 * One transaction cuts every disk onto the overlay prepare_swaps() made
 * (QEMU's mode "existing"); then each overlay is renamed over the VM's
 * path.  After an error reply QEMU rolled back: the swaps are undone
 * later; after a timeout or a disconnect QEMU may have cut, and recover
 * decides (the recovery note stays).
 */
int
ckpt_cut_disks(struct ckpt *c, struct err *e)
{
	struct err le = ERR_INIT;
	struct vm_overlay *ov;
	size_t i;
	int rc;

	if (c->ndisks == 0)
		return 0;
	ov = xcalloc(c->ndisks, sizeof(*ov));
	for (i = 0; i < c->ndisks; i++) {
		ov[i].device = c->disks[i].drive;
		ov[i].node = c->disks[i].node;
		ov[i].file = c->disks[i].sw.tmp;
		ov[i].node_name = c->disks[i].overlay_node;
		ov[i].existing = 1;
	}
	rc = vm_overlays_cut(c->q, ov, c->ndisks, &le);
	free(ov);
	if (rc < 0) {
		if (le.qmp_class[0] == '\0')
			c->cut_unknown = 1;
		err_propagate(e, &le, "cannot cut the disks");
		if (c->cut_unknown)
			attention_swap(c, e);
		return -1;
	}
	c->disks_cut = 1;
	for (i = 0; i < c->ndisks; i++)
		if (diskswap_finish(&c->disks[i].sw, &le) < 0) {
			c->cut_unknown = 1;
			err_propagate(e, &le, NULL);
			attention_swap(c, e);
			return -1;
		}
	return 0;
}

/* Sleep ms (test hook), returning early on a signal. */
void
ckpt_hold(int ms)
{
	uint64_t end = now_mono_ms() + (uint64_t)ms;

	while (now_mono_ms() < end && sig_caught() == 0)
		poll(NULL, 0, 20);
}

/* ---- the changes ------------------------------------------------------- */

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



/* cont (retried while QEMU is still finishing the migration). */
int
ckpt_resume_guest(struct ckpt *c, struct err *e)
{
	if (vm_resume(c->q, e) < 0)
		return -1;
	c->stopped_by_us = 0;
	if (c->resume_mono == 0)
		c->resume_mono = now_mono_ms();
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
	    ckpt_resume_guest(c, &le) < 0) {
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
	if (ckpt_cut_disks(c, e) < 0)
		return -1;
	if (thaw(c, e) < 0)
		return -1;
	if (c->stopped_by_us && ckpt_resume_guest(c, e) < 0)
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
		disks[i].file = d->sw.layer;
		disks[i].format = d->format;
		disks[i].backing = d->backing;
		disks[i].overlay = d->sw.path;
		disks[i].swapped = 1;
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
	in.own_bytes = c->img.data_bytes;
	in.shared_bytes = c->img.shared_bytes;
	in.base = c->base != NULL ? c->parent : NULL;
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
	in.compaction_cpu_s = c->img.cpu_s;
	in.receive_cpu_s = c->img.receive_cpu_s;
	m = manifest_build(&in);
	free(disks);
	/* How the VM was started, for restore --start; a VM whose record
	 * cannot be read still gets its checkpoint (launch says why). */
	if (m != NULL) {
		json_object_set_new(m, MF_LAUNCH, launch_record(c->q));
		json_object_set_new(m, MF_SUMMARY, launch_summary(c->q, NULL));
		if (json_object_get(m, MF_SUMMARY) == NULL)
			json_object_set_new(m, MF_SUMMARY, json_null());
	}
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
		buf_addf(&b, "%s'%s'", i ? ", " : "", c->disks[i].sw.layer);
	{
		size_t len = strlen(e->msg);

		snprintf(e->msg + len, sizeof(e->msg) - len, "; the disks "
		    "were cut: the guest writes on at its own path%s, the "
		    "state it had is %s (kept)", c->ndisks > 1 ? "s" : "",
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
	img_close(c->base);
	if (c->sv[0] >= 0)
		close(c->sv[0]);
	if (c->sv[1] >= 0)
		close(c->sv[1]);
	qmp_close(c->agent);
	qmp_close(c->q);
	for (i = 0; i < c->ndisks; i++)
		ckpt_disk_free(&c->disks[i]);
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
	json_decref(c->skipped);
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

/* --dry-run: discovery, and the plan as ckpt_run() describes it. */
static int
dry_run(struct ckpt *c, json_t **plan, struct err *e)
{
	struct err le = ERR_INIT;
	struct statvfs sv;
	json_t *disks, *room = json_null(), *freej = json_null();
	uint64_t ram = 0;
	size_t i;

	c->store = store_open(c->o->store, 0, NULL);
	if (c->store != NULL && store_exists(c->store, c->name))
		return err_set(e, ERR_FAIL, "checkpoint '%s' already exists "
		    "in '%s'", c->name, store_path(c->store));
	c->q = qmp_open(c->o->socket, c->o->qmp_timeout_ms, &le);
	if (c->q == NULL)
		return err_propagate(e, &le, NULL);
	if (c->o->trace != NULL)
		qmp_set_trace(c->q, c->o->trace, c->o->trace_opaque);
	if (ckpt_discover(c, e) < 0)
		return -1;
	disks = json_array();
	for (i = 0; i < c->ndisks; i++)
		json_array_append_new(disks, json_pack("{s:s, s:s?, s:s?, "
		    "s:s, s:s}", "device", c->disks[i].device, "file",
		    c->disks[i].sw.layer, "format", c->disks[i].format,
		    "overlay", c->disks[i].sw.path, "vm_path",
		    c->disks[i].sw.path));
	if (c->mode != CKPT_MODE_DISK_ONLY) {
		ram = ckpt_guest_ram(c);
		/* The man page's plan: three times the RAM + 200 MiB. */
		room = json_integer((json_int_t)(3 * ram + (200ull << 20)));
	}
	if (c->store != NULL && statvfs(store_path(c->store), &sv) == 0)
		freej = json_integer((json_int_t)((uint64_t)sv.f_bavail *
		    (uint64_t)sv.f_frsize));
	*plan = json_pack("{s:b, s:s, s:s, s:s, s:{s:s?, s:s?}, s:s?, s:o, "
	    "s:O, s:I, s:o, s:o}", "dry_run", 1, "name", c->name, "store",
	    c->o->store, "mode", ckpt_mode_name(c->mode), "vm", "name",
	    c->vm_name, "uuid", c->uuid, "parent", c->parent, "disks", disks,
	    "skipped", c->skipped, "ram_bytes", (json_int_t)ram,
	    "room_needed", room, "store_free", freej);
	if (*plan == NULL)
		return err_set(e, ERR_FAIL, "cannot build the plan");
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
	uint64_t start;
	pid_t pid;
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

	c->skipped = json_array();
	if (o->dry_run) {
		rc = dry_run(c, manifest, e);
		goto out;
	}
	if ((c->store = store_open(o->store, 1, e)) == NULL)
		goto out;
	if (store_lock(c->store, o->lock_wait_ms, e) < 0)
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
	if (ckpt_discover(c, e) < 0)
		goto out;
	if ((c->stage = store_stage_new(c->store, c->name, e)) == NULL)
		goto out;
	if (ckpt_note_write(c, e) < 0)
		goto out;
	if (sig_interrupted(e) || prepare_swaps(c, e) < 0)
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
		if (ckpt_capture(c, e) < 0)
			goto settle;
		/* The guest runs again; wait briefly for its RESUME event
		 * (QEMU's clock measures the pause). */
		if (c->was_running && c->resume_ts == 0) {
			struct qmp_event *ev;

			ev = qmp_wait_event(c->q, "RESUME", NULL,
			    RESUME_EVENT_MS, NULL);
			if (ev != NULL) {
				ckpt_handle_event(c, ev);
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
		if (c->o->hold_commit_ms > 0)
			ckpt_hold(c->o->hold_commit_ms);
		if (ingest_commit(c->ing, &c->img, e) < 0)
			goto settle;
	}
settle:
	settle(c, e);
	if (!err_isset(e) && sync_swaps(c, e) < 0)
		attention_swap(c, e);
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
	/* Best effort: without it the next checkpoint of this process takes
	 * the newest of the same VM as its parent, as before. */
	if (vm_process(c->q, &pid, &start) == 0)
		store_last_write(c->store, pid, start, c->name, NULL);
	ckpt_state_set(c, CKPT_S_DONE);
	*manifest = m;
	m = NULL;
	rc = 0;
out:
	if (rc < 0 && c->state != CKPT_S_FAILED)
		ckpt_state_set(c, CKPT_S_FAILED);
	undo_swaps(c);
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
