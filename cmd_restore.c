/*
 * cmd_restore.c - the "restore" command: options, and printing what was
 * done.  The work is restore.c's.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "restore.h"
#include "revert.h"
#include "sig.h"
#include "snapctl.h"
#include "util.h"

enum {
	OPT_PAUSED = 256, OPT_DRY_RUN, OPT_OVERLAY_DIR, OPT_TIMEOUT, OPT_EXEC,
	OPT_EXEC_LOG, OPT_LAZY, OPT_START, OPT_DISCARD,
};

static void
print_summary(const json_t *r)
{
	const json_t *d, *t = json_object_get(r, "timings");
	const json_t *m = json_object_get(r, "memory");
	const char *status = json_string_value(json_object_get(r, "status"));
	size_t i;

	if (strcmp(status, "checked") == 0) {
		printf("checkpoint '%s' fits the QEMU at '%s' (%s, QEMU %s); "
		    "nothing was changed\n",
		    json_string_value(json_object_get(r, "name")),
		    json_string_value(json_object_get(r, "socket")),
		    json_string_value(json_object_get(r, "machine")),
		    json_string_value(json_object_get(r, "qemu")));
		return;
	}
	if (json_object_get(r, "dir") != NULL) {
		/* What a script needs first: where to talk, whom to stop. */
		printf("socket %s\n", json_string_value(json_object_get(r,
		    "socket")));
		printf("pid %" JSON_INTEGER_FORMAT "\n", json_integer_value(
		    json_object_get(r, "pid")));
		printf("dir %s\n", json_string_value(json_object_get(r,
		    "dir")));
	}
	printf("restored '%s' into the QEMU at '%s'%s: guest %s\n",
	    json_string_value(json_object_get(r, "name")),
	    json_string_value(json_object_get(r, "socket")),
	    json_is_integer(json_object_get(r, "pid")) ? " (started by "
	    "snapctl)" : "", status);
	json_array_foreach(json_object_get(r, "disks"), i, d)
		printf("disk %s: '%s', the guest now writes to '%s'\n",
		    json_string_value(json_object_get(d, "device")),
		    json_string_value(json_object_get(d, "file")),
		    json_string_value(json_object_get(d, "overlay")));
	json_array_foreach(json_object_get(r, "swept"), i, d)
		printf("removed '%s' (restore overlay of checkpoint '%s'): no "
		    "process holds it\n", json_str(d, "file"),
		    json_str(d, "checkpoint") ? json_str(d, "checkpoint") : "?");
	printf("checks %.2f s, load %.2f s, total %.2f s\n",
	    json_number_value(json_object_get(t, "check_s")),
	    json_number_value(json_object_get(t, "load_s")),
	    json_number_value(json_object_get(t, "total_s")));
	if (json_object_get(t, "memory_s") != NULL)
		printf("lazy: the guest could run after the load; all its "
		    "memory was in after %.2f s (%" JSON_INTEGER_FORMAT
		    " pages sent on its %" JSON_INTEGER_FORMAT " requests)\n",
		    json_number_value(json_object_get(t, "memory_s")),
		    json_integer_value(json_object_get(m, "pages_on_request")),
		    json_integer_value(json_object_get(m, "requests")));
}

static const struct option restore_opts[] = {
	{ "paused", no_argument, NULL, OPT_PAUSED },
	{ "lazy", no_argument, NULL, OPT_LAZY },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "overlay-dir", required_argument, NULL, OPT_OVERLAY_DIR },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "exec", no_argument, NULL, OPT_EXEC },
	{ "exec-log", required_argument, NULL, OPT_EXEC_LOG },
	{ "start", no_argument, NULL, OPT_START },
	{ NULL, 0, NULL, 0 },
};

static int
cmd_restore(const struct cmd_args *a, struct err *e)
{
	struct restore_opts o = RESTORE_OPTS_INIT;
	json_t *rep = NULL;
	const char *hold;
	int i, exec = 0, start = 0, rc;

	for (i = 0; i < a->nopts; i++) {
		switch (a->opts[i].id) {
		case OPT_PAUSED:
			o.paused = 1;
			break;
		case OPT_LAZY:
			o.lazy = 1;
			break;
		case OPT_DRY_RUN:
			o.dry_run = 1;
			break;
		case OPT_OVERLAY_DIR:
			o.overlay_dir = a->opts[i].arg;
			break;
		case OPT_TIMEOUT:
			if (opt_int("--timeout", a->opts[i].arg, 1, 86400,
			    &o.timeout_s, e) < 0)
				return -1;
			break;
		case OPT_EXEC:
			exec = 1;
			break;
		case OPT_EXEC_LOG:
			o.exec_log = a->opts[i].arg;
			break;
		case OPT_START:
			start = 1;
			break;
		}
	}
	if (exec && start)
		return err_set(e, ERR_USAGE, "restore: --exec and --start "
		    "exclude each other");
	/* NAME, then with --exec the QEMU command line after "--". */
	if (a->ndash == 0)
		return err_set(e, ERR_USAGE, "restore: missing arguments");
	if (a->ndash > 1 || (!exec && !start && a->ndash < a->argc))
		return err_set(e, ERR_USAGE, "restore: unexpected argument "
		    "'%s' (a QEMU command line goes after --exec --, extra "
		    "QEMU arguments after --start --)", a->argv[1]);
	if (exec && a->ndash == a->argc)
		return err_set(e, ERR_USAGE, "restore: --exec needs a QEMU "
		    "command line: restore NAME --exec -- qemu-system-x86_64 "
		    "ARGS...");
	if (o.exec_log != NULL && !exec && !start)
		return err_set(e, ERR_USAGE, "--exec-log is for --exec and "
		    "--start");
	/* --start makes its own socket: SNAPCTL_SOCKET is likely the
	 * original VM's, only an explicit -s names one. */
	if (!start && options.socket == NULL)
		return err_set(e, ERR_USAGE, "restore: no QMP socket: use -s "
		    "or SNAPCTL_SOCKET");
	o.name = a->argv[0];
	o.exec_argv = exec ? a->argv + a->ndash : NULL;
	o.start = start;
	o.start_extra = start ? a->argv + a->ndash : NULL;
	o.socket = start && options.socket == getenv("SNAPCTL_SOCKET") ?
	    NULL : options.socket;
	o.store = options.dir;
	o.qmp_timeout_ms = options.timeout_ms;
	if (cmd_connect_timeout(&o.connect_ms, e) < 0)
		return -1;
	if (trace_enabled())
		o.trace = trace_qmp;
	/* Test only: see restore.h. */
	hold = getenv("SNAPCTL_TEST_RESTORE_HOLD_MS");
	if (hold != NULL && *hold != '\0' && opt_int(
	    "SNAPCTL_TEST_RESTORE_HOLD_MS", hold, 0, 600000, &o.test_hold_ms,
	    e) < 0)
		return -1;

	sig_catch();
	rc = restore_run(&o, &rep, e);
	if (rc == 0 && o.lazy && sig_caught())
		warnx_("%s came during the lazy restore; it finished "
		    "sending the guest's memory first",
		    sig_name(sig_caught()));
	else if (rc == 0 && sig_caught())
		warnx_("%s came as the guest was resumed; the restore was "
		    "complete", sig_name(sig_caught()));
	sig_release();
	if (rc < 0)
		return -1;
	print_result(rep, print_summary);
	json_decref(rep);
	return 0;
}

const struct cmd_entry cmd_restore_entry = {
	"restore", "[--paused] [--lazy] [--dry-run] [--overlay-dir DIR] "
	"[--timeout SEC] NAME [--exec [--exec-log FILE] -- QEMU ARGS... | "
	"--start [--exec-log FILE] [-- EXTRA ARGS...]]",
	"load a checkpoint into a QEMU waiting with -incoming defer",
	"  --paused             leave the guest paused after the load\n"
	"  --lazy               postcopy: the guest runs once its devices\n"
	"                       are in, its pages follow (those it touches\n"
	"                       first); snapctl returns when all are in\n"
	"  --dry-run            run every check, change nothing\n"
	"  --overlay-dir DIR    new overlays here, not in STORE/.restores\n"
	"  --timeout SEC        give up loading after SEC (default 600)\n"
	"  --exec -- QEMU ARGS  start QEMU with ARGS plus -incoming defer,\n"
	"                       -S and a QMP monitor on -s SOCKET; it is\n"
	"                       left running (killed if the restore fails)\n"
	"  --exec-log FILE      QEMU's output (default SOCKET.log)\n"
	"  --start [-- EXTRA]   start QEMU as the checkpoint recorded it\n"
	"                       (binary, arguments), disks on the\n"
	"                       checkpoint's state, with its own QMP socket,\n"
	"                       log and serial files in a new directory\n"
	"                       (prints socket, pid, dir); EXTRA arguments\n"
	"                       are appended, replacing recorded ones of\n"
	"                       the same option and id (see the man page)\n"
	"Checks the memory image, the disk files and the VM (machine type,\n"
	"RAM blocks, disks opened on the checkpoint's files: see 'snapctl\n"
	"info NAME') before touching QEMU; then puts a fresh overlay\n"
	"STORE/.restores/<stem>.restore-TIME.qcow2 (the stem of the\n"
	"checkpoint's state file: d0.c1 for d0.c1.qcow2; 0600, recorded in\n"
	"the store) on every disk, so the checkpoint can be restored\n"
	"again, loads the memory and resumes the guest.  Then it sweeps:\n"
	"restore overlays no process holds any more are removed (see\n"
	"'snapctl help sweep'); so are those of a checkpoint deleted.",
	"", restore_opts, 1, -1, CMD_NEEDS_STORE |
	CMD_JSON | CMD_OPTS_ANYWHERE | CMD_CKPT_ARGS, cmd_restore,
};

/* ---- revert ------------------------------------------------------------ */

static void
print_revert(const json_t *r)
{
	const json_t *d, *rs = json_object_get(r, "restore");
	int dry = json_is_true(json_object_get(r, "dry_run"));
	size_t i;

	json_array_foreach(json_object_get(r, "disks"), i, d) {
		if (json_is_true(json_object_get(d, "already"))) {
			printf("disk %s: '%s' already is a new overlay on '%s' "
			    "(checkpoint '%s'), left as it is\n",
			    json_str(d, "device"), json_str(d, "path"),
			    json_str(d, "state"), json_str(r, "name"));
			continue;
		}
		printf("disk %s: '%s' %s a new overlay on '%s'",
		    json_str(d, "device"), json_str(d, "path"),
		    dry ? "would become" : "is now", json_str(d, "state"));
		if (json_str(d, "kept") != NULL)
			printf("; the disk it replace%s %s '%s'", dry ? "s" :
			    "d", dry ? "would be kept as" : "is kept as",
			    json_str(d, "kept"));
		else if (json_is_true(json_object_get(d, "discarded")))
			printf("; the disk it replace%s (snapctl made it) %s",
			    dry ? "s" : "d", dry ? "would be discarded" :
			    "was discarded");
		if (json_str(d, "note") != NULL)
			printf(" (%s)", json_str(d, "note"));
		fputc('\n', stdout);
	}
	if (rs != NULL)
		print_summary(rs);
}

static const struct option revert_opts[] = {
	{ "discard", no_argument, NULL, OPT_DISCARD },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "start", no_argument, NULL, OPT_START },
	{ "exec-log", required_argument, NULL, OPT_EXEC_LOG },
	{ NULL, 0, NULL, 0 },
};

static int
cmd_revert(const struct cmd_args *a, struct err *e)
{
	struct revert_opts o = REVERT_OPTS_INIT;
	struct restore_opts ro = RESTORE_OPTS_INIT;
	json_t *rep = NULL, *rrep = NULL;
	int i, start = 0, rc;

	for (i = 0; i < a->nopts; i++) {
		switch (a->opts[i].id) {
		case OPT_DISCARD:
			o.discard = 1;
			break;
		case OPT_DRY_RUN:
			o.dry_run = 1;
			break;
		case OPT_START:
			start = 1;
			break;
		case OPT_EXEC_LOG:
			ro.exec_log = a->opts[i].arg;
			break;
		}
	}
	if (a->ndash == 0)
		return err_set(e, ERR_USAGE, "revert: missing arguments");
	if (a->ndash > 1 || (!start && a->ndash < a->argc))
		return err_set(e, ERR_USAGE, "revert: unexpected argument "
		    "'%s' (extra QEMU arguments go after --start --)",
		    a->argv[1]);
	if (start && o.dry_run)
		return err_set(e, ERR_USAGE, "revert: --dry-run and --start "
		    "exclude each other");
	if (ro.exec_log != NULL && !start)
		return err_set(e, ERR_USAGE, "revert: --exec-log is for "
		    "--start");
	o.name = a->argv[0];
	o.store = options.dir;
	o.lock_wait_ms = options.lock_wait_ms;
	sig_catch();
	rc = revert_run(&o, &rep, e);
	if (rc == 0 && start) {
		ro.name = o.name;
		ro.store = options.dir;
		ro.start = 1;
		ro.keep_disks = 1;
		ro.start_extra = a->argv + a->ndash;
		ro.socket = options.socket == getenv("SNAPCTL_SOCKET") ?
		    NULL : options.socket;
		ro.qmp_timeout_ms = options.timeout_ms;
		if (trace_enabled())
			ro.trace = trace_qmp;
		if (cmd_connect_timeout(&ro.connect_ms, e) < 0 ||
		    restore_run(&ro, &rrep, e) < 0) {
			err_prefix(e, "reverted, but --start failed: ");
			rc = -1;
		} else
			json_object_set_new(rep, "restore", rrep);
	}
	sig_release();
	if (rc == 0)
		print_result(rep, print_revert);
	json_decref(rep);
	return rc;
}

const struct cmd_entry cmd_revert_entry = {
	"revert", "[--discard] [--dry-run] NAME [--start [--exec-log FILE] "
	"[-- EXTRA ARGS...]]",
	"make a stopped VM's own disk paths hold a checkpoint's disks",
	"  --discard            drop the disk each path held instead of\n"
	"                       keeping it, when snapctl made it (a\n"
	"                       checkpoint's or revert's overlay)\n"
	"  --dry-run            run every check, say what would change\n"
	"  --start [-- EXTRA]   then start QEMU as the checkpoint recorded it,\n"
	"                       on those paths, and load its memory (as\n"
	"                       restore --start: prints socket, pid, dir)\n"
	"  --exec-log FILE      QEMU's output (default DIR/qemu.log)\n"
	"For each disk of NAME: refused (exit 4) while a process holds the\n"
	"VM's path P open (stop the VM first) or when the checkpoint's state\n"
	"file S changed, is missing or was replaced; else a new empty 0600\n"
	"overlay on S is renamed over P, and the disk P held is kept as\n"
	"STEM.pre-revert-NAME.qcow2 beside it.  The VM's unchanged command\n"
	"line then boots from NAME's disks; its next checkpoint names NAME\n"
	"as its parent.  Killed midway, run it again: each step is\n"
	"idempotent.",
	"", revert_opts, 1, -1, CMD_NEEDS_STORE | CMD_JSON |
	CMD_OPTS_ANYWHERE | CMD_CKPT_ARGS, cmd_revert,
};
