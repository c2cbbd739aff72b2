/*
 * cmd_ckpt.c - the "checkpoint" and "recover" commands: option parsing,
 * the progress line, and printing the manifest or a short summary.  The
 * work is checkpoint.c's.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "checkpoint.h"
#include "qmp.h"
#include "sig.h"
#include "snapctl.h"
#include "store.h"
#include "storeops.h"
#include "util.h"

#define MAX_EXCLUDE 64

enum {
	OPT_PAUSE = 256, OPT_DISK_ONLY, OPT_QUIESCE, OPT_AGENT, OPT_DOWNTIME,
	OPT_BANDWIDTH, OPT_TIMEOUT, OPT_ON_TIMEOUT, OPT_EXCLUDE,
	OPT_OVERLAY_DIR, OPT_LEVEL, OPT_THREADS, OPT_MODE, OPT_PROGRESS,
	OPT_DRY_RUN,
};

#define PROGRESS_LINE_S 1.0	/* off a terminal: a line a second at most */

struct progress_line {
	int drawn;		/* a \r-line is on the terminal */
	int lines;		/* --progress off a terminal: whole lines */
	double last_s;		/* elapsed_s of the last line */
};

static void
draw_progress(void *opaque, const struct ckpt_progress *p)
{
	struct progress_line *pl = opaque;
	char rec[32], rate[32], dirty[32], rem[32], eta[32];

	/* One whole line, whatever the mode. */
	if (strcmp(p->phase, "base") == 0) {
		fprintf(stderr, "%ssnapctl: %s\n", pl->drawn ? "\r\033[K" :
		    "", p->note != NULL ? p->note : "");
		fflush(stderr);
		pl->drawn = 0;
		return;
	}

	format_bytes(p->received, rec);
	format_bytes(p->rate, rate);
	/* QEMU knows the dirty rate from the second pass on. */
	if (p->dirty_rate == 0 && p->pass < 2)
		snprintf(dirty, sizeof(dirty), "?");
	else
		format_bytes(p->dirty_rate, dirty);
	format_bytes(p->remaining, rem);
	if (p->eta_s >= 0 && p->eta_s < 360000)
		snprintf(eta, sizeof(eta), "%.0f s", p->eta_s);
	else
		snprintf(eta, sizeof(eta), "?");
	if (pl->lines) {
		if (pl->last_s > 0 && p->elapsed_s - pl->last_s <
		    PROGRESS_LINE_S)
			return;
		pl->last_s = p->elapsed_s;
	} else
		fputs("\r\033[K", stderr);
	if (strcmp(p->phase, "live") == 0)
		fprintf(stderr, "snapctl: %5.1f s  %s received (%s/s)  "
		    "pass %d  dirty %s/s  remaining %s  ETA %s%s",
		    p->elapsed_s, rec, rate, p->pass, dirty, rem, eta,
		    p->forced ? "  (guest stopped: --timeout)" : "");
	else
		fprintf(stderr, "snapctl: %5.1f s  %s received  %s",
		    p->elapsed_s, rec, p->phase);
	if (pl->lines)
		fputc('\n', stderr);
	fflush(stderr);
	pl->drawn = !pl->lines;
}

static void
print_summary(const json_t *m)
{
	const json_t *mem = json_object_get(m, "memory");
	const json_t *t = json_object_get(m, "timings");
	const json_t *d;
	const char *parent = json_string_value(json_object_get(m, "parent"));
	char a[32], b[32];
	size_t i;

	printf("checkpoint '%s' (%s%s%s%s)\n",
	    json_string_value(json_object_get(m, "name")),
	    json_string_value(json_object_get(m, "mode")),
	    json_is_true(json_object_get(m, "forced")) ?
	    ", forced by --timeout" : "",
	    parent ? ", parent " : "", parent ? parent : "");
	if (json_is_object(mem)) {
		format_bytes((uint64_t)json_integer_value(json_object_get(mem,
		    "bytes_on_disk")), a);
		format_bytes((uint64_t)json_integer_value(json_object_get(mem,
		    "ram_bytes")), b);
		printf("memory: %s on disk for %s of RAM (%lld pages, %lld "
		    "zero)\n", a, b,
		    (long long)json_integer_value(json_object_get(mem,
		    "pages")),
		    (long long)json_integer_value(json_object_get(mem,
		    "zero_pages")));
	}
	printf("guest paused %.1f ms; total %.1f s; %lld passes",
	    json_number_value(json_object_get(t, "paused_ms")),
	    json_number_value(json_object_get(t, "total_s")),
	    (long long)json_integer_value(json_object_get(t, "passes")));
	if (json_object_get(t, "compaction_cpu_s") != NULL)
		printf("; CPU %.2f s compacting, %.2f s receiving",
		    json_number_value(json_object_get(t, "compaction_cpu_s")),
		    json_number_value(json_object_get(t, "receive_cpu_s")));
	printf("\n");
	json_array_foreach(json_object_get(m, "disks"), i, d)
		printf("disk %s: checkpoint in '%s', the guest writes on at its "
		    "own path '%s'\n", json_string_value(json_object_get(d, "device")),
		    json_string_value(json_object_get(d, "file")),
		    json_string_value(json_object_get(d, "overlay")));
}

/* MiB, rounded up, or "?" for null. */
static void
format_mib(const json_t *v, char out[32])
{
	if (!json_is_integer(v))
		snprintf(out, 32, "?");
	else
		snprintf(out, 32, "%lld MiB", (long long)
		    ((json_integer_value(v) + (1 << 20) - 1) >> 20));
}

static void
print_plan(const json_t *p)
{
	const json_t *d;
	char need[32], avail[32];
	size_t i;

	printf("would checkpoint '%s' (%s) into '%s'\n", json_str(p, "name"),
	    json_str(p, "mode"), json_str(p, "store"));
	json_array_foreach(json_object_get(p, "disks"), i, d)
		printf("disk %s: '%s' (%s) would be cut: its state kept as "
		    "'%s', the guest writing on at '%s'\n",
		    json_str(d, "device"), json_str(d, "vm_path"),
		    json_str(d, "format") ? json_str(d, "format") : "?",
		    json_str(d, "file"), json_str(d, "vm_path"));
	json_array_foreach(json_object_get(p, "skipped"), i, d)
		printf("disk %s: '%s' left alone (%s)\n", json_str(d, "device"),
		    json_str(d, "file") ? json_str(d, "file") : "?",
		    json_str(d, "why"));
	if (json_is_integer(json_object_get(p, "room_needed"))) {
		format_mib(json_object_get(p, "room_needed"), need);
		format_mib(json_object_get(p, "store_free"), avail);
		printf("room: up to %s in the store, which has %s free\n", need,
		    avail);
	}
}

/*
 * A live checkpoint (the guest ran during the capture) of a QEMU older
 * than 9.0 under TCG: such a QEMU can let guest RAM writes escape the
 * migration's dirty log (fixed by QEMU commit 03bfc2188f, in 9.0), so the
 * image may hold stale pages and the restored guest crash (issue 15: a
 * kernel BUG or a hang after about one restore in four under heavy block
 * I/O).  --pause and --mode background send every page with the guest
 * stopped or write-protected and are not affected; KVM keeps its own dirty
 * log.  One line on stderr, after the checkpoint was made; -q silences it.
 * Asked on a connection of its own: a QEMU it cannot ask is not warned
 * about.
 */
static void
note_tcg_live(const json_t *m)
{
	struct qmp *q = NULL;
	json_t *kvm = NULL, *st = NULL;
	const char *ver = json_str(json_object_get(m, "vm"), "qemu");
	const char *mode = json_str(m, "mode");
	int maj, min, mic;

	if (options.verbosity < 0 || mode == NULL ||
	    strcmp(mode, "live") != 0 || ver == NULL ||
	    sscanf(ver, "%d.%d.%d", &maj, &min, &mic) != 3 || maj >= 9)
		return;
	if ((q = cmd_qmp_connect(NULL)) == NULL)
		return;
	kvm = qmp_execute(q, "query-kvm", NULL, NULL);
	st = qmp_execute(q, "query-status", NULL, NULL);
	/* Stopped now, it was stopped before: nothing ran during the
	 * capture (a forced finish resumes the guest). */
	if (json_is_false(json_object_get(kvm, "enabled")) &&
	    json_is_true(json_object_get(st, "running")))
		warnx_("QEMU %s without KVM can miss guest writes in a live "
		    "checkpoint (a QEMU bug fixed in 9.0); if a restore of "
		    "it crashes the guest, use --pause or --mode background",
		    ver);
	json_decref(kvm);
	json_decref(st);
	qmp_close(q);
}

static const struct option checkpoint_opts[] = {
	{ "mode", required_argument, NULL, OPT_MODE },
	{ "pause", no_argument, NULL, OPT_PAUSE },
	{ "disk-only", no_argument, NULL, OPT_DISK_ONLY },
	{ "quiesce", no_argument, NULL, OPT_QUIESCE },
	{ "agent", required_argument, NULL, OPT_AGENT },
	{ "downtime", required_argument, NULL, OPT_DOWNTIME },
	{ "bandwidth", required_argument, NULL, OPT_BANDWIDTH },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "on-timeout", required_argument, NULL, OPT_ON_TIMEOUT },
	{ "exclude", required_argument, NULL, OPT_EXCLUDE },
	{ "overlay-dir", required_argument, NULL, OPT_OVERLAY_DIR },
	{ "level", required_argument, NULL, OPT_LEVEL },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "progress", no_argument, NULL, OPT_PROGRESS },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ NULL, 0, NULL, 0 },
};

/* One option of checkpoint into o. */
static int
checkpoint_opt(struct ckpt_opts *o, const char **exclude,
    const struct cmd_opt *opt, struct err *e)
{
	const char *arg = opt->arg, *why;
	uint64_t v;
	int ms;

	switch (opt->id) {
	case OPT_MODE:
		if (strcmp(arg, "live") == 0)
			o->background = 0;
		else if (strcmp(arg, "background") == 0)
			o->background = 1;
		else
			return err_set(e, ERR_USAGE, "invalid --mode '%s': "
			    "live or background", arg);
		break;
	case OPT_PAUSE:
		o->pause = 1;
		break;
	case OPT_DISK_ONLY:
		o->disk_only = 1;
		break;
	case OPT_QUIESCE:
		o->quiesce = 1;
		break;
	case OPT_AGENT:
		o->agent = arg;
		break;
	case OPT_DOWNTIME:
		if (opt_int("--downtime", arg, 0, 2000000, &ms, e) < 0)
			return -1;
		o->downtime_ms = ms;
		break;
	case OPT_BANDWIDTH:
		if (parse_size(arg, &v, &why) < 0 || v == 0)
			return err_set(e, ERR_USAGE, "invalid --bandwidth "
			    "'%s': %s", arg, v == 0 ? "must not be 0" : why);
		if (v > INT64_MAX)
			return err_set(e, ERR_USAGE, "invalid --bandwidth "
			    "'%s': too large", arg);
		o->bandwidth = v;
		break;
	case OPT_TIMEOUT:
		return opt_int("--timeout", arg, 1, 86400 * 7, &o->timeout_s,
		    e);
	case OPT_ON_TIMEOUT:
		if (strcmp(arg, "stop") == 0)
			o->on_timeout = CKPT_TIMEOUT_STOP;
		else if (strcmp(arg, "abort") == 0)
			o->on_timeout = CKPT_TIMEOUT_ABORT;
		else
			return err_set(e, ERR_USAGE, "invalid --on-timeout "
			    "'%s': stop or abort", arg);
		break;
	case OPT_EXCLUDE:
		if (o->nexclude == MAX_EXCLUDE)
			return err_set(e, ERR_USAGE, "too many --exclude "
			    "options");
		exclude[o->nexclude++] = arg;
		break;
	case OPT_OVERLAY_DIR:
		o->overlay_dir = arg;
		break;
	case OPT_LEVEL:
		return opt_int("--level", arg, 1, 19, &o->level, e);
	case OPT_THREADS:
		return opt_int("--threads", arg, 1, 64, &o->threads, e);
	}
	return 0;
}

/* What checkpoint and recover take from the global options. */
static void
from_options(const char **socket, const char **store, int *qmp_timeout_ms,
    int *lock_wait_ms, qmp_trace_fn *trace)
{
	*socket = options.socket;
	*store = options.dir;
	*qmp_timeout_ms = options.timeout_ms;
	*lock_wait_ms = options.lock_wait_ms;
	if (trace_enabled())
		*trace = trace_qmp;
}

static int
cmd_checkpoint(const struct cmd_args *a, struct err *e)
{
	struct ckpt_opts o = CKPT_OPTS_INIT;
	struct progress_line pl = { 0 };
	const char *exclude[MAX_EXCLUDE], *hold;
	json_t *m = NULL;
	int i, sig, progress = 0, rc = -1;

	for (i = 0; i < a->nopts; i++) {
		if (a->opts[i].id == OPT_PROGRESS)
			progress = 1;
		else if (a->opts[i].id == OPT_DRY_RUN)
			o.dry_run = 1;
		else if (checkpoint_opt(&o, exclude, &a->opts[i], e) < 0)
			return -1;
	}
	if (o.agent != NULL && !o.quiesce)
		return err_set(e, ERR_USAGE, "--agent is for --quiesce");
	if (o.background && (o.pause || o.disk_only))
		return err_set(e, ERR_USAGE, "--mode background excludes %s",
		    o.pause ? "--pause" : "--disk-only");
	if (o.pause && o.disk_only && o.quiesce)
		return err_set(e, ERR_USAGE, "--pause and --quiesce exclude "
		    "each other: a stopped guest cannot answer its agent");
	o.exclude = exclude;
	o.name = a->argc > 0 ? a->argv[0] : NULL;
	from_options(&o.socket, &o.store, &o.qmp_timeout_ms, &o.lock_wait_ms,
	    &o.trace);
	if (progress_enabled() || (progress && options.verbosity >= 0)) {
		pl.lines = !progress_enabled();
		o.progress = draw_progress;
		o.progress_opaque = &pl;
	}
	/* Test only: see checkpoint.h. */
	hold = getenv("SNAPCTL_TEST_HOLD_SWITCHOVER_MS");
	if (hold != NULL && *hold != '\0' && opt_int(
	    "SNAPCTL_TEST_HOLD_SWITCHOVER_MS", hold, 0, 600000,
	    &o.hold_switchover_ms, e) < 0)
		return -1;
	hold = getenv("SNAPCTL_TEST_HOLD_COMMIT_MS");
	if (hold != NULL && *hold != '\0' && opt_int(
	    "SNAPCTL_TEST_HOLD_COMMIT_MS", hold, 0, 600000,
	    &o.hold_commit_ms, e) < 0)
		return -1;

	sig_catch();
	rc = ckpt_run(&o, &m, e);
	sig = sig_caught();
	sig_release();
	if (pl.drawn)
		fputs("\r\033[K", stderr);
	if (rc < 0)
		return -1;
	if (o.dry_run) {
		print_done(m, print_plan);
		json_decref(m);
		return 0;
	}
	if (sig != 0)
		warnx_("%s came after the disks were cut; the checkpoint was "
		    "completed", sig_name(sig));
	note_tcg_live(m);
	print_done(m, print_summary);
	json_decref(m);
	return 0;
}

static const struct option recover_opts[] = {
	{ "agent", required_argument, NULL, OPT_AGENT },
	{ NULL, 0, NULL, 0 },
};

static void
print_recovered(const json_t *rep)
{
	const json_t *a;
	size_t i;

	json_array_foreach(json_object_get(rep, "actions"), i, a)
		printf("%s\n", json_string_value(a));
	if (json_str(rep, "status") != NULL)
		printf("guest is %s\n", json_str(rep, "status"));
}

/*
 * A merge a killed delete or prune --disks left (STORE/.merge.json):
 * finished, with the VM at -s when given.  *rep gets {"merge": REPORT,
 * "actions": [...]} when there was one.  1 if there was, 0 if not, -1.
 */
static int
recover_merge(json_t **rep, struct err *e)
{
	struct storeops_delete_opts o = STOREOPS_DELETE_OPTS_INIT;
	struct qmp_config cfg;
	struct store *s = NULL;
	json_t *out = NULL, *acts, *m;
	size_t i;
	int rc = -1;

	*rep = NULL;
	if ((s = store_open(options.dir, 0, e)) == NULL)
		return -1;
	if (store_lock(s, options.lock_wait_ms, e) < 0)
		goto out;
	if (options.socket != NULL) {
		if (cmd_qmp_config(&cfg, e) < 0)
			goto out;
		o.socket = options.socket;
		o.qmp = &cfg;
	}
	o.disks = 1;
	sig_catch();
	rc = storeops_merge_pending(s, &o, &out, e);
	sig_release();
	if (out == NULL)
		goto out;
	acts = json_array();
	json_array_foreach(json_object_get(out, "merged"), i, m)
		if (json_is_true(json_object_get(m, "merged")))
			json_array_append_new(acts, json_sprintf("finished "
			    "merging '%s' into '%s'", json_str(m, "from"),
			    json_str(m, "into")));
	json_array_foreach(json_object_get(out, "disks"), i, m)
		if (json_is_true(json_object_get(m, "removed")))
			json_array_append_new(acts, json_sprintf("removed "
			    "'%s'", json_str(m, "file")));
	json_array_foreach(json_object_get(out, "merged"), i, m)
		if (!json_is_true(json_object_get(m, "merged")))
			json_array_append_new(acts, json_sprintf("left '%s' "
			    "of deleted checkpoint '%s' unmerged: %s",
			    json_str(m, "file"), json_str(m, "checkpoint"),
			    json_str(m, "reason")));
	*rep = json_pack("{s:o, s:o}", "merge", out, "actions", acts);
	if (rc == 0)
		rc = 1;
out:
	store_close(s);
	return rc;
}

static int
cmd_recover(const struct cmd_args *a, struct err *e)
{
	struct ckpt_recover_opts o = CKPT_RECOVER_OPTS_INIT;
	struct store *s = NULL;
	json_t *rep = NULL, *mrep = NULL, *note;
	int i, merged;

	for (i = 0; i < a->nopts; i++)
		o.agent = a->opts[i].arg;	/* --agent, the only one */
	if (options.socket == NULL && options.dir == NULL)
		return err_set(e, ERR_USAGE, "recover: give the VM's QMP "
		    "socket (-s) or the store (-d) whose recovery note names "
		    "it");
	from_options(&o.socket, &o.store, &o.qmp_timeout_ms, &o.lock_wait_ms,
	    &o.trace);
	if (options.dir != NULL) {
		merged = recover_merge(&mrep, e);
		if (merged < 0) {
			if (mrep != NULL)
				print_done(mrep, print_recovered);
			json_decref(mrep);
			return -1;
		}
		/* Only a merge to finish: no VM to ask. */
		if (merged && options.socket == NULL &&
		    (s = store_open(options.dir, 0, NULL)) != NULL) {
			note = store_note_read(s, NULL);
			store_close(s);
			if (note == NULL) {
				print_done(mrep, print_recovered);
				json_decref(mrep);
				return 0;
			}
			json_decref(note);
		}
	}
	if (ckpt_recover(&o, &rep, e) < 0) {
		json_decref(mrep);
		return -1;
	}
	if (mrep != NULL) {
		json_array_extend(json_object_get(mrep, "actions"),
		    json_object_get(rep, "actions"));
		json_object_set(rep, "actions", json_object_get(mrep,
		    "actions"));
		json_object_set(rep, "merge", json_object_get(mrep, "merge"));
	}
	print_done(rep, print_recovered);
	json_decref(rep);
	json_decref(mrep);
	return 0;
}

const struct cmd_entry cmd_checkpoint_entry = {
	"checkpoint", "[--mode live|background | --pause | --disk-only "
	"[--quiesce --agent SOCKET]] "
	"[--downtime MS] [--bandwidth RATE] [--timeout SEC "
	"[--on-timeout stop|abort]] [--exclude DEVICE]... "
	"[--overlay-dir DIR] [--level N] [--threads N] [--progress] [--dry-run] [NAME]",
	"take a consistent live checkpoint of memory and disks",
	"  --mode background    memory as at the start (QEMU's background\n"
	"                       snapshot), disks cut at that instant; a\n"
	"                       stopped guest is captured as with --pause\n"
	"  --pause              keep the guest stopped during the capture\n"
	"  --disk-only          cut the disks only, no memory\n"
	"  --quiesce            with --disk-only: freeze filesystems\n"
	"  --agent SOCKET       the guest agent socket for --quiesce\n"
	"  --downtime MS        QEMU's downtime-limit for the switchover\n"
	"  --bandwidth RATE     max-bandwidth, bytes/s, K/M/G suffixes\n"
	"                       (default 64G: unlimited)\n"
	"  --timeout SEC        past it, stop the guest to finish "
	"(\"forced\")\n"
	"  --on-timeout abort   ... or give up instead (exit 7)\n"
	"  --exclude DEVICE     leave this disk alone (repeatable)\n"
	"  --overlay-dir DIR    the disks' states here, not beside the\n"
	"                       images (same filesystem: hard links)\n"
	"  --level N, --threads N  zstd level and threads for the image\n"
	"  --progress           progress lines also when stderr is not a\n"
	"                       terminal (a line a second at most)\n"
	"  --dry-run            say what would be cut and where, and the\n"
	"                       room needed; change nothing\n"
	"NAME defaults to the UTC time to the millisecond\n"
	"(20261123T081500.123Z).  The checkpoint goes to STORE/NAME.  Each\n"
	"writable disk keeps its own path as the VM's current disk (a new\n"
	"qcow2 overlay there); the state it had goes to\n"
	"<image-stem>.NAME.qcow2 beside it, the overlay's backing file, so\n"
	"the VM's unchanged command line starts it with every write.  A\n"
	"disk that is not qcow2 is refused (exit 1): --exclude it.  The\n"
	"memory image is incremental on the parent's when the parent is\n"
	"in the store: unchanged chunks name the frames already there\n"
	"(--progress says which, or why the image is full).",
	"", checkpoint_opts, 0, 1, CMD_NEEDS_SOCKET | CMD_NEEDS_STORE |
	CMD_JSON, cmd_checkpoint,
};

const struct cmd_entry cmd_recover_entry = {
	"recover", "[--agent SOCKET]",
	"resume a guest an interrupted checkpoint left stopped",
	"Finishes or undoes the disk swap of each disk (with -d: the\n"
	"recovery note lists them; also when QEMU is gone), cancels a\n"
	"pending migration, thaws filesystems (--agent), puts back the\n"
	"migration settings recorded in STORE/.recover.json (with -d),\n"
	"resumes the guest.  -s may be left out when -d is given: the\n"
	"recovery note names the socket.  With -d it first finishes a\n"
	"disk merge a killed delete or prune --disks left\n"
	"(STORE/.merge.json); then no -s is needed without a note.",
	"", recover_opts, 0, 0, CMD_JSON, cmd_recover,
};
