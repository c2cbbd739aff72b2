/*
 * ckcapture.c - the memory capture of ckpt_run() (checkpoint_int.h):
 * getfd and migrate into the ingest pipeline (ingest.h), then the loop
 * that follows QEMU's events and switches on the run's state: the disk
 * cut at pre-switchover (live, pause) or the guest's resumption after
 * QEMU's setup (background), --timeout, the resumption at completion,
 * progress reports, until the stream has ended.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "checkpoint_int.h"
#include "ingest.h"
#include "manifest.h"
#include "sig.h"
#include "store.h"
#include "util.h"
#include "vm.h"

#define CKPT_CACHE_BYTES (64u << 20)	/* the image writer's chunk cache */
#define SPOOL_SLACK (64ull << 20)	/* file spool: RAM size + this */
#define TAIL_SLACK (16ull << 20)	/* device state, index, headers */
#define SOCK_BUF (8 << 20)		/* both ends of the socketpair */
#define LOOP_SLICE_MS 100
#define PROGRESS_MS 500
#define BG_RECHECK_MS 100		/* see bg_resume() */

/* ---- events --------------------------------------------------------------- */

void
ckpt_handle_event(struct ckpt *c, const struct qmp_event *ev)
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
		ckpt_handle_event(c, ev);
		qmp_event_free(ev);
	}
	if (le.kind == ERR_TIMEOUT)
		return 0;
	err_set(e, ERR_QEMU, "QEMU went away during the checkpoint (%s)",
	    le.msg);
	return -1;
}

/* ---- the capture -------------------------------------------------------- */

static void
set_bufsize(int fd, int opt_force, int opt)
{
	int v = SOCK_BUF;

	if (setsockopt(fd, SOL_SOCKET, opt_force, &v, sizeof(v)) < 0)
		setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v));
}

/* The guest's RAM (base + hotplugged), 1 GiB when QEMU will not say. */
uint64_t
ckpt_guest_ram(struct ckpt *c)
{
	json_t *r = qmp_execute(c->q, "query-memory-size-summary", NULL, NULL);
	uint64_t b = (uint64_t)json_integer_value(json_object_get(r,
	    "base-memory")) + (uint64_t)json_integer_value(json_object_get(r,
	    "plugged-memory"));

	json_decref(r);
	return b != 0 ? b : 1ull << 30;
}

/*
 * The guest is stopped for the cut (state): note when it stopped, the
 * test hold, and the last moment a signal still ends the run with nothing
 * cut.
 */
static int
guest_held(struct ckpt *c, enum ckpt_state state, struct err *e)
{
	ckpt_state_set(c, state);
	if (c->stop_mono == 0)
		c->stop_mono = now_mono_ms();
	if (c->o->hold_switchover_ms > 0)
		ckpt_hold(c->o->hold_switchover_ms);
	return sig_interrupted(e) ? -1 : 0;
}

/*
 * The parent's image, when the parent is in this store and its image
 * opens with its packs (storepack.h): the new image shares the frames of
 * the chunks that did not change (save.h).  Else a full image; either way
 * the progress says which.
 */
static void
open_base(struct ckpt *c)
{
	struct ckpt_progress p;
	struct err le = ERR_INIT;
	const json_t *mem = json_object_get(c->parent_m, MF_MEMORY);
	const char *file = json_str(mem, MF_MEM_PATH);
	char *path, *note;

	if (c->parent == NULL || c->store == NULL)
		note = xstrdup("full image: no parent checkpoint");
	else if (c->parent_m == NULL)
		note = xasprintf("full image: the manifest of parent '%s' "
		    "cannot be read", c->parent);
	else if (file == NULL || *file == '.' || strchr(file, '/') != NULL)
		note = xasprintf("full image: parent '%s' has no memory "
		    "image", c->parent);
	else {
		path = xasprintf("%s/%s/%s", store_path(c->store), c->parent,
		    file);
		c->base = img_open(path, &le);
		free(path);
		note = c->base != NULL ? xasprintf("incremental on parent "
		    "'%s'", c->parent) : xasprintf("full image: the image of "
		    "parent '%s' does not open: %s", c->parent, le.msg);
	}
	if (c->o->progress != NULL) {
		memset(&p, 0, sizeof(p));
		p.phase = "base";
		p.elapsed_s = (double)(now_mono_ms() - c->t0) / 1000.0;
		p.eta_s = -1;
		p.note = note;
		c->o->progress(c->o->progress_opaque, &p);
	}
	free(note);
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
	open_base(c);
	io.img.base = c->base;
	io.img.base_hint = c->base != NULL ? c->parent : NULL;
	c->ram_bytes = ckpt_guest_ram(c);
	io.spool_file_max = c->ram_bytes + SPOOL_SLACK;
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
		if (guest_held(c, CKPT_S_CUTTING, e) < 0 ||
		    ckpt_cut_disks(c, e) < 0)
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
		return ckpt_resume_guest(c, e);
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
	return st.state == VM_RS_PAUSED ? ckpt_resume_guest(c, e) : 0;
}

/*
 * What the rest of the checkpoint may still write to the store, given
 * rest, a bound on the stream bytes still to come: the image's log (its
 * temporary file, already counted by the free space) grows by the chunk
 * cache, the spool's pending bytes and rest (compressed is at most raw,
 * plus frame headers), and holds up to IMG_DEAD_HELD_MAX of dead frames
 * before it punches them; the last pass may also sit in the spool's file;
 * the commit writes the index (80 bytes a chunk) and the device state
 * after the frames, and copies nothing (it moves frames down within the
 * file, which then shrinks).
 */
static uint64_t
room_needed(struct ckpt *c, uint64_t rest)
{
	uint64_t grow = CKPT_CACHE_BYTES + IMG_DEAD_HELD_MAX +
	    ingest_pending(c->ing) + rest;

	grow += grow / 32 + TAIL_SLACK;
	return grow + rest + c->ram_bytes / IMG_CHUNK_BYTES * IMG_ENTRY2_SIZE;
}

/*
 * Before the disks are cut: fail (ERR_NOSPC) unless the store has room
 * for the rest, so that a store short of room fails while the checkpoint
 * can still be undone.  The bound first takes the guest's RAM for what
 * remains; a store with that much room does not wait: the pause stays
 * short.  Otherwise the image first takes in what QEMU sent so far (a
 * store that fills up meanwhile fails here too), and QEMU says what it
 * has left for the last pass.
 */
static int
room_check(struct ckpt *c, struct err *e)
{
	struct statvfs sv;
	struct vm_migration mig;
	uint64_t need;

	if (statvfs(c->stage, &sv) < 0)
		return 0;
	need = room_needed(c, c->ram_bytes);
	if ((uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize >= need)
		return 0;
	while (ingest_pending(c->ing) > 0) {
		if (ingest_check(c->ing, e) < 0)
			return -1;
		if (sig_interrupted(e))
			return -1;
		usleep(1000);
	}
	if (ingest_check(c->ing, e) < 0)
		return -1;
	if (vm_migration_query(c->q, &mig, NULL) == 0 && mig.has_ram)
		need = room_needed(c, mig.ram_remaining);
	if (statvfs(c->stage, &sv) < 0 ||
	    (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize >= need)
		return 0;
	return err_set(e, ERR_NOSPC, "store '%s' is short of room: %llu MiB "
	    "free, the rest of the checkpoint may need %llu MiB (the disks "
	    "were not cut)", store_path(c->store),
	    (unsigned long long)(((uint64_t)sv.f_bavail *
	    (uint64_t)sv.f_frsize) >> 20),
	    (unsigned long long)((need + (1 << 20) - 1) >> 20));
}

/* At pre-switchover: the guest is stopped; cut the disks, continue. */
static int
do_switchover(struct ckpt *c, struct err *e)
{
	if (guest_held(c, CKPT_S_SWITCHOVER, e) < 0)
		return -1;
	if (ingest_check(c->ing, e) < 0)
		return -1;
	if (room_check(c, e) < 0)
		return -1;
	if (ckpt_cut_disks(c, e) < 0)
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
		if (ckpt_note_write(c, e) < 0)
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
	return c->was_running && held ? ckpt_resume_guest(c, e) : 0;
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

int
ckpt_capture(struct ckpt *c, struct err *e)
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
		/* From the cut on a signal waits: cancelling then would
		 * keep the overlays with no checkpoint for them. */
		if (c->state != CKPT_S_CUT && c->state != CKPT_S_COMPLETED &&
		    sig_interrupted(e))
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
