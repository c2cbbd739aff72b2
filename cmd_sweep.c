/*
 * cmd_sweep.c - the "sweep" command: remove the restore overlays no
 * process holds any more (restoredir.h), and say what stays and why.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "restoredir.h"
#include "snapctl.h"
#include "store.h"
#include "util.h"

enum {
	OPT_DRY_RUN = 256,
};

static void
print_swept(const json_t *r)
{
	print_files(json_object_get(r, "restores"),
	    json_is_true(json_object_get(r, "dry_run")));
}

static int
cmd_sweep(const struct cmd_args *a, struct err *e)
{
	struct store *s = NULL;
	json_t *rep = NULL, *out = NULL;
	int dry_run = a->nopts > 0, unseen = 0, rc = -1;	/* --dry-run */

	/* The lock, as delete takes it: one sweep at a time, none while
	 * a delete or prune works (restores need no lock, restoredir.h). */
	if ((s = store_open(options.dir, 0, e)) == NULL ||
	    (!dry_run && store_lock(s, options.lock_wait_ms, e) < 0))
		goto out;
	rc = restoredir_sweep(options.dir, dry_run, &rep, &unseen, e);
	if (rc == 0 && unseen > 0)
		warnx_("%d processes could not be looked at: files they hold "
		    "open were not seen", unseen);
	if (rep != NULL) {
		out = json_pack("{s:b, s:O}", "dry_run", dry_run, "restores",
		    rep);
		print_done(out, print_swept);
	}
out:
	json_decref(out);
	json_decref(rep);
	store_close(s);
	return rc;
}

static const struct option sweep_opts[] = {
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ NULL, 0, NULL, 0 },
};

const struct cmd_entry cmd_sweep_entry = {
	"sweep", "[--dry-run]",
	"remove the restore overlays no process holds any more",
	"  --dry-run   say what would be removed, change nothing\n"
	"A restore overlay (STORE/.restores, or an --overlay-dir of\n"
	"restore, as the store's records say) goes once no process holds\n"
	"it open and no checkpoint names it (a checkpoint of the restored\n"
	"VM names it as its VM's disk) or has it in a backing chain; with\n"
	"it go its record and the hidden .NAME.snapctl-* links of that\n"
	"file a checkpoint's disk swap left.  A file without a record, or\n"
	"another file than recorded, is never removed.  Every overlay\n"
	"removed and kept is reported with the reason.  restore,\n"
	"delete and prune sweep too.  Takes the store's lock (exit 5 when\n"
	"busy).",
	"", sweep_opts, 0, 0, CMD_NEEDS_STORE | CMD_JSON | CMD_OPTS_ANYWHERE,
	cmd_sweep,
};
