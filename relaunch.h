/*
 * relaunch.h - the QEMU command line that starts a VM again from a
 * checkpoint's record of how it was started (launch.h), its disks on the
 * checkpoint's state.  Never prints, never exits.
 *
 * What is rewritten (the record's arguments, in order; "--opt" is "-opt"):
 *   -incoming X, -S, -loadvm X             dropped (restore adds its own)
 *   -drive ...,file=F (a checkpoint disk)  file= and format= the disk's
 *                                          state in the checkpoint
 *   -blockdev node N (a checkpoint disk)   N becomes the state's format
 *                                          over a file node of its own;
 *                                          N's former "file" node dropped
 * and for a second instance beside a still-running original (dir given):
 *   -daemonize, -pidfile X, -qmp X, -qmp-pretty X, -monitor X, -mon X,
 *   -D X, -spice X                         dropped
 *   -vnc X                                 -vnc none
 *   -serial file:|unix:|tcp:|telnet:|udp:|pipe:|pty  file:DIR/serialN.log
 *   -chardev socket|udp|pipe,id=I          -chardev null,id=I
 *   -chardev file,id=I,path=P              path=DIR/chardev-I.log
 *   disk files                             opened with file.locking=off:
 *                                          the original holds them as
 *                                          its backing files, and the
 *                                          restore's overlay goes on top
 *                                          before the guest runs
 * Then extra, appended: an option of extra replaces every recorded one of
 * the same name that has the same id= (node-name= for -blockdev), and for
 * -m, -smp, -machine/-M, -cpu, -accel, -name, -uuid, -kernel, -initrd,
 * -append, -vnc, -display, -boot, -rtc, -k every recorded one of that
 * name.
 */
#ifndef SNAPCTL_RELAUNCH_H
#define SNAPCTL_RELAUNCH_H

#include <jansson.h>

#include "err.h"

/*
 * The command line for checkpoint manifest m (borrowed, checked; name
 * names it in messages): argv[0] the recorded binary, then the rewritten
 * arguments as above, then extra (NULL-terminated, may be NULL).  dir
 * NULL: for the original's place once it is gone (only the -incoming,
 * -S, -loadvm and disk rewrites) with "-incoming defer" appended; else
 * for a second instance, files in dir, no -incoming (restore.c adds it).
 * Returns a NULL-terminated vector, free with relaunch_free(), or NULL
 * with e filled: ERR_FAIL "checkpoint 'c1' has no record of how its VM
 * was started (REASON): restore it with --exec -- QEMU ARGS...", "...
 * cannot find disk 'vd0' in the recorded command line ...".
 */
char **relaunch_argv(const json_t *m, const char *name, const char *dir,
    char *const *extra, struct err *e);

/*
 * As relaunch_argv(), with flags: RELAUNCH_KEEP_DISKS leaves every disk
 * option as recorded (the VM's own paths, which revert made hold the
 * checkpoint's state: revert.h), without file.locking=off.
 */
#define RELAUNCH_KEEP_DISKS 0x1
char **relaunch_argv_flags(const json_t *m, const char *name,
    const char *dir, char *const *extra, unsigned how, struct err *e);

void relaunch_free(char **argv);

#endif
