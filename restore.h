/*
 * restore.h - put a QEMU that waits with -incoming defer back at a
 * checkpoint's instant.  Everything that can be checked is checked before
 * QEMU is touched: the memory image's every checksum, each disk file
 * against the manifest (present, format, backing, unchanged), and the VM
 * against the checkpoint (waiting for a migration, machine type, RAM
 * blocks and sizes, each disk opened on the file that holds the
 * checkpoint's disk state).  Then a fresh overlay goes on every disk in one
 * transaction (in STORE/.restores or the given directory, recorded in the
 * store: restoredir.h), so the checkpoint's files are never written and it
 * can be restored again; the regenerated stream goes to QEMU over a file
 * descriptor; the guest is resumed.  Optionally snapctl starts that QEMU
 * itself.  Never prints.
 */
#ifndef SNAPCTL_RESTORE_H
#define SNAPCTL_RESTORE_H

#include <jansson.h>

#include "err.h"
#include "qmp.h"

#define RESTORE_DEFAULT_TIMEOUT_S 600
#define RESTORE_EXEC_CONNECT_S 30	/* for a QEMU started with --exec */

struct restore_opts {
	const char *socket;	/* QMP address of the waiting QEMU */
	const char *store;
	const char *name;
	int paused;		/* leave the guest paused after the load */
	/*
	 * Lazy: postcopy.  The guest runs once its device state is in; its
	 * pages follow, those it touches first.  Needs postcopy-ram (Linux
	 * userfaultfd) and 4 KiB pages in the VM; the call returns once
	 * QEMU has every page.
	 */
	int lazy;
	int dry_run;		/* every check, and nothing else */
	/* NULL: STORE/.restores; each overlay recorded (restoredir.h) */
	const char *overlay_dir;
	/*
	 * Non-NULL: start QEMU as exec_argv[0] with exec_argv[1..] plus
	 * "-incoming defer -S -qmp unix:SOCKET,server=on,wait=off" (socket
	 * must be a path), in a session of its own, stdin from /dev/null,
	 * stdout and stderr to exec_log (NULL: SOCKET.log, created 0600).
	 * It is left running on success and killed on failure.
	 */
	char *const *exec_argv;
	const char *exec_log;
	/*
	 * Start QEMU from the checkpoint's record of how its VM was started
	 * (relaunch.h), with start_extra (may be NULL) appended, in a new
	 * 0700 directory $XDG_RUNTIME_DIR (else $TMPDIR, else
	 * /tmp)/snapctl-NAME.XXXXXX holding its QMP socket qmp.sock (unless
	 * socket, which must not exist yet, names another), log qemu.log
	 * (unless exec_log) and serial files; then as exec_argv.
	 */
	int start;
	char *const *start_extra;
	/*
	 * With start: the disks stay as the record names them, the VM's own
	 * paths, which revert made fresh overlays on the checkpoint's states
	 * (revert.h): no overlay of restore's, and each disk must be opened
	 * on the manifest's "vm_path" whose backing file is the state.
	 */
	int keep_disks;
	int timeout_s;		/* the load; 0: RESTORE_DEFAULT_TIMEOUT_S */
	int connect_ms;		/* retry a missing socket this long */
	int qmp_timeout_ms;	/* 0: qmp.h's default */
	qmp_trace_fn trace;	/* may be NULL */
	void *trace_opaque;
	/*
	 * Test only (SNAPCTL_TEST_RESTORE_HOLD_MS): sleep this long after
	 * the checks, before the overlays are cut (a signal ends the sleep),
	 * and again, eager, once the stream's first MiB went to QEMU, so a
	 * test can signal snapctl at either point.
	 */
	int test_hold_ms;
};
#define RESTORE_OPTS_INIT { NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, \
	0, NULL, 0, 0, 0, 0, NULL, NULL, 0 }

/*
 * Restore checkpoint o->name of store o->store into the QEMU at o->socket.
 * On success returns 0 and *report (new reference) says what was done:
 * {name, socket, qemu, machine, pid (with exec_argv or start, else
 * null), dir and log (start: QEMU's directory and log), swept (the
 * restore overlays of the sweep after the restore that it removed:
 * [{file, checkpoint}]), status
 * ("running", "paused", or "checked" for a dry run), mode ("eager" or
 * "lazy"), disks: [{device, file, overlay}], memory: {stream_bytes, pages,
 * lazy: requests, pages_on_request}, timings: {check_s, load_s (until the
 * guest can run), total_s, lazy: memory_s (until QEMU had every page)}}.
 *
 * On failure -1 with e filled.  Refusals come before QEMU is touched:
 * ERR_USAGE (bad name or options), ERR_FAIL (no such checkpoint, a
 * disk-only one, a damaged memory image), ERR_MISMATCH (a disk file that
 * changed, or a VM that is not waiting, has another machine type, other
 * RAM blocks or sizes, lacks a disk or opened another file for it, lacks
 * a device with an id or a memory backend of the recorded summary or has
 * one of another type or size: see launch_compare(); lazy:
 * a RAM block the checkpoint lacks, pages over 4 KiB), ERR_QEMU (cannot
 * reach QEMU).  Later failures (QEMU refuses the transaction or the
 * stream, dies) remove the overlays snapctl made, as the guest never ran
 * on them; with exec_argv or start the QEMU snapctl started is killed
 * first and waited for (it may be making an overlay of a cut it was not
 * heard out on), its directory removed (start) unless the message names
 * its log, and
 * QEMU's own reason from its log ("Unknown savevm section ...") is the
 * message's.  Once QEMU
 * has loaded the checkpoint (a deferred signal, a failed "cont") they
 * stay, named in the message: "...; the guest is paused on overlay 'F'".
 *
 * Signals (sig_caught()): until the overlays are cut, one stops the
 * restore with ERR_INTR and QEMU still waits, untouched.  From the cut on
 * QEMU cannot go back to waiting (its disks are on the overlays; once
 * its load began, a stream cut short makes 7.2 exit and leaves 10.0
 * unable to take another), so the signal is deferred: an eager restore
 * loads the whole checkpoint with QEMU's autostart off and then fails
 * with ERR_INTR, the guest paused on the overlays (named in the message,
 * kept); a lazy one completes (0).  With exec_argv an eager restore
 * stops at once, as the QEMU is killed anyway.
 *
 * A transaction a QEMU not snapctl's never answered (a timeout) leaves
 * the overlays and their records, still naming this process, to the
 * sweep, as that QEMU may yet make and open them; the message names them:
 * "...; left for the sweep, as QEMU may yet open overlay 'F'".
 *
 * A failure after the guest ran (a lazy restore whose QEMU died) keeps
 * the overlays, which hold the guest's writes, and names them in the
 * message: "...; the guest ran on overlay 'FILE'" ("the guest may have
 * run on" when a QEMU it did not start died before its RESUME reached
 * snapctl: from the start of a lazy load QEMU may run the guest).
 */
int restore_run(const struct restore_opts *o, json_t **report,
    struct err *e);

#endif
