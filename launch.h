/*
 * launch.h - how a VM was started, recorded in a checkpoint's manifest:
 * the QEMU binary and argument vector of the process at the other end of
 * the QMP socket ("launch"), and a summary QEMU gives over QMP that does
 * not depend on reading that process ("summary"); and comparing a QEMU
 * waiting for a restore with that summary.  Never prints, never exits.
 *
 * Manifest members (both optional, added by checkpoints since issue 14):
 *   "launch":  {"readable": bool, "reason": string or null, "pid": int or
 *              null, "exe": string or null, "argv": [string...] or null}
 *   "summary": {"machine": string, "ram_bytes": int, "cpus": int,
 *              "memdevs": [{"id", "size"}], "devices": [{"id" (null for a
 *              device without one), "type", "bus"}]}
 */
#ifndef SNAPCTL_LAUNCH_H
#define SNAPCTL_LAUNCH_H

#include <jansson.h>

#include "err.h"
#include "qmp.h"

#define MF_LAUNCH "launch"
#define MF_SUMMARY "summary"

/*
 * The process at the other end of q's socket (SO_PEERCRED): its
 * /proc/PID/exe (" (deleted)" removed: the file QEMU was started from;
 * when that path is gone, argv[0]) and /proc/PID/cmdline.  Never fails:
 * when they cannot be read (a TCP socket, another user's QEMU, a peer
 * that is not QEMU, such as a proxy) "readable" is false and "reason"
 * says why.  New reference.
 */
json_t *launch_record(struct qmp *q);

/*
 * The summary of the VM behind q: machine type (without "-machine"), RAM
 * (query-memory-size-summary), vCPUs (query-cpus-fast), memory backends
 * (query-memdev) and the user's devices (/machine/peripheral, with ids,
 * and /machine/peripheral-anon) with their type and bus.  New reference,
 * or NULL with e filled (ERR_QEMU, the command and QEMU's reason).
 */
json_t *launch_summary(struct qmp *q, struct err *e);

/*
 * Compare the VM behind q with summary (borrowed; NULL or without
 * devices: 0, nothing to compare).  Every device with an id in the
 * summary must be in the VM with the same type, and every memory backend
 * with the same size.  0, or -1 with e filled: ERR_MISMATCH "the VM has no
 * device 'usb0' (qemu-xhci on /machine/q35/pcie.0) that checkpoint 'c1'
 * holds: ...", ERR_QEMU when QEMU cannot be asked.  name names the
 * checkpoint in messages.
 */
int launch_compare(struct qmp *q, const json_t *summary, const char *name,
    struct err *e);

/*
 * Check the optional "launch" and "summary" members of manifest m
 * (borrowed) are of the types above.  0, or -1 with e filled (ERR_FAIL,
 * "'SHOWN': invalid manifest: launch.argv must be ...").
 */
int launch_check(const json_t *m, const char *shown, struct err *e);

#endif
