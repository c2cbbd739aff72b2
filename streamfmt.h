/*
 * streamfmt.h - the wire format of QEMU's migration stream, named once for
 * the parser (stream.c) and the writer (streamgen.c): record types, ram
 * record flags, migration commands, and the limits both sides enforce.
 * Private to the stream code.  Spec: ../shared/docs/qemu-migration-stream.md.
 */
#ifndef SNAPCTL_STREAMFMT_H
#define SNAPCTL_STREAMFMT_H

#include <stddef.h>
#include <stdint.h>

#include "stream.h"

/* Top-level record types (QEMU_VM_*, migration/savevm.h). */
#define VM_EOF			0x00
#define VM_SECTION_START	0x01
#define VM_SECTION_PART		0x02
#define VM_SECTION_END		0x03
#define VM_SECTION_FULL		0x04
#define VM_SUBSECTION		0x05
#define VM_VMDESCRIPTION	0x06
#define VM_CONFIGURATION	0x07
#define VM_COMMAND		0x08
#define VM_SECTION_FOOTER	0x7e

#define VM_FILE_MAGIC		0x5145564du	/* "QEVM" */
#define VM_FILE_VERSION		3u
#define VM_FILE_VERSION_COMPAT	2u		/* SaveVM v2, obsolete */

/* RAM record flags: the low 12 bits of the record word (RAM_SAVE_FLAG_*). */
#define RAM_FLAG_FULL		0x001u	/* obsolete, never sent */
#define RAM_FLAG_ZERO		0x002u
#define RAM_FLAG_MEM_SIZE	0x004u
#define RAM_FLAG_PAGE		0x008u
#define RAM_FLAG_EOS		0x010u
#define RAM_FLAG_CONTINUE	0x020u
#define RAM_FLAG_XBZRLE		0x040u
#define RAM_FLAG_HOOK		0x080u
#define RAM_FLAG_COMPRESS_PAGE	0x100u	/* 7.2 only */
#define RAM_FLAG_MULTIFD_FLUSH	0x200u	/* 8.0 and later */
#define RAM_FLAGS_MASK		((uint64_t)STREAM_PAGE_SIZE - 1)

#define RAM_IDSTR		"ram"
#define RAM_INSTANCE		0u
#define RAM_VERSION		4u

/* Migration commands (enum qemu_vm_cmd, migration/savevm.c). */
enum mig_cmd {
	MIG_CMD_INVALID = 0,
	MIG_CMD_OPEN_RETURN_PATH,
	MIG_CMD_PING,
	MIG_CMD_POSTCOPY_ADVISE,
	MIG_CMD_POSTCOPY_LISTEN,
	MIG_CMD_POSTCOPY_RUN,
	MIG_CMD_POSTCOPY_RAM_DISCARD,
	MIG_CMD_PACKAGED,
	MIG_CMD_ENABLE_COLO,
	MIG_CMD_POSTCOPY_RESUME,
	MIG_CMD_RECV_BITMAP,
	MIG_CMD_SWITCHOVER_START,
	MIG_CMD_MAX
};

#define BLOCKS_MAX		4096u	/* refuse longer MEM_SIZE lists */
#define ESC_MAX			(4 * 255 + 1)	/* an escaped cstr8 */

/*
 * s[0..n) (at most 255 bytes) for a message, in out: printable ASCII as
 * is, anything else as \xNN, so that a message stays one line whatever the
 * stream holds.  Returns out.
 */
const char *stream_esc(char out[ESC_MAX], const void *s, size_t n);
/* The same for a NUL-terminated name. */
const char *stream_esc_str(char out[ESC_MAX], const char *s);

#endif
