/*
 * manifest.h - a checkpoint's manifest (STORE/NAME/manifest.json): its key
 * names, checking one that was read, typed access to the fields the
 * commands read, whether two checkpoints are of the same VM, and building
 * the manifest a checkpoint writes.  Never prints, never exits.
 */
#ifndef SNAPCTL_MANIFEST_H
#define SNAPCTL_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define MANIFEST_FILE "manifest.json"
#define MANIFEST_VERSION 1
#define MANIFEST_MEMORY_FILE "memory.img"

/* The keys, named once. */
#define MF_VERSION "snapctl_manifest"	/* integer, MANIFEST_VERSION */
#define MF_NAME "name"
#define MF_CREATED "created"		/* UTC, 20261123T081500Z */
#define MF_PARENT "parent"		/* string or null */
#define MF_VM "vm"			/* {name, uuid, qemu, machine} */
#define MF_VM_NAME "name"
#define MF_VM_UUID "uuid"
#define MF_VM_QEMU "qemu"
#define MF_VM_MACHINE "machine"
#define MF_MODE "mode"
#define MF_FORCED "forced"
#define MF_QUIESCED "quiesced"
#define MF_MEMORY "memory"		/* object, or null (disk-only) */
#define MF_MEM_PATH "path"
#define MF_MEM_BYTES "bytes_on_disk"
#define MF_MEM_RAM "ram_bytes"
#define MF_MEM_PAGES "pages"
#define MF_MEM_ZERO "zero_pages"
#define MF_MEM_STREAM "stream_bytes"
#define MF_MEM_OWN "own_bytes"		/* frames in the image itself */
#define MF_MEM_SHARED "shared_bytes"	/* frames it reads from packs */
#define MF_MEM_BASE "base"		/* the checkpoint whose image it
					 * shares frames with, or null */
#define MF_DISKS "disks"		/* array of objects */
#define MF_DISK_DEVICE "device"
#define MF_DISK_FILE "file"
#define MF_DISK_OVERLAY "overlay"
#define MF_DISK_VM_PATH "vm_path"	/* the VM's own path: its current disk */
/* Version 2 disks (issue 11): the checkpoint's state is a layer in its own
 * directory; the VM's disk never moves.  See layer.h. */
#define MF_DISK_PATH "path"		/* the VM's own disk file */
#define MF_DISK_FORMAT "format"		/* its format: "qcow2", "raw", ... */
#define MF_DISK_VSIZE "virtual_size"
#define MF_DISK_LAYER "layer"		/* file name in STORE/NAME/ */
#define MF_DISK_LAYER_BASE "layer_base"	/* checkpoint whose layer backs it, or null */
#define MF_DISK_LAYER_BYTES "layer_bytes"
#define MF_DISK_LAYER_MTIME "layer_mtime_ns"
#define MF_DISK_BITMAP "bitmap"		/* dirty bitmap on the VM's node, or null */
#define MF_DISK_SYNC "sync"		/* "full" or "incremental" */
#define MF_DELETED "deleted"		/* true: being deleted, kept for a holder */
#define MF_TIMINGS "timings"
#define MF_SNAPCTL "snapctl"		/* the version that wrote it */

/*
 * Check that m (borrowed) is a manifest this snapctl reads, every field of
 * the type and range manifest_build() writes: MF_VERSION the integer
 * MANIFEST_VERSION; "name" a string equal to dirname (unless dirname is
 * NULL); "created", "mode" strings, the mode one of live, pause,
 * background, disk-only; "parent" a string or null; "vm" an object of
 * strings or nulls; "memory" null or an object with a "path" naming a file
 * of the checkpoint's directory and non-negative integer sizes and counts;
 * "disks" an array of objects with string "device" and "overlay", "format"
 * a QEMU image format (qcow2, raw, ...) or null, "size" and "mtime_ns"
 * non-negative integers or null, the other members strings or null;
 * "timings" non-negative numbers.  shown names the file in the message.
 * 0, or -1 with e filled (ERR_FAIL), one line naming the field: "'x' is not
 * a snapctl manifest", "'x': manifest version 2 is not supported (this
 * snapctl reads version 1)", "'x': invalid manifest: disks must be an
 * array", "'x': invalid manifest: memory.pages must be a non-negative
 * integer", ...
 */
int manifest_check(const json_t *m, const char *shown, const char *dirname,
    struct err *e);

/*
 * Typed access to a manifest that passed manifest_check().  Every pointer
 * is borrowed from the manifest (NULL when absent or of another type) and
 * lives as long as it.
 */
struct manifest {
	const char *name;
	const char *created;
	const char *parent;
	const char *mode;
	const char *vm_name;
	const char *vm_uuid;
	const char *qemu;
	const char *machine;
	const json_t *memory;	/* NULL: no memory image (disk-only) */
	const char *memory_path;	/* relative to STORE/NAME */
	const json_t *disks;	/* an array, or NULL (json_array_foreach
				 * takes NULL as empty) */
};
void manifest_get(const json_t *m, struct manifest *out);

/*
 * 1 if manifest m records the VM with this uuid and name, else 0.  A NULL
 * uuid or name matches a member that is absent, null or no string.  The
 * one rule for "same VM": a checkpoint's parent, prune's groups.
 */
int manifest_vm_is(const json_t *m, const char *uuid, const char *name);

/* 1 if manifests a and b record the same VM (manifest_vm_is()), else 0. */
int manifest_same_vm(const json_t *a, const json_t *b);

/* What a checkpoint knows of one disk, for manifest_build(). */
struct manifest_disk {
	const char *device;	/* device name or qdev id; required */
	const char *qdev;
	const char *node;
	const char *file;	/* the checkpoint's state of the disk */
	const char *format;
	const char *backing;
	const char *overlay;	/* required */
	const char *overlay_node;	/* required */
	int swapped;		/* file is a name this checkpoint made for
				 * the state (diskswap.h) and overlay the VM's
				 * own path: "file_made_by" is the checkpoint
				 * itself, "vm_path" names the overlay, and
				 * the overlay gets no identity (it is the
				 * VM's disk, never snapctl's to delete) */
};

/* What a checkpoint knows, for manifest_build().  Strings are borrowed. */
struct manifest_input {
	const char *name;	/* required */
	const char *created;	/* required */
	const char *parent;	/* may be NULL */
	const json_t *parent_m;	/* the parent's manifest, borrowed, or NULL */
	const char *vm_name;
	const char *vm_uuid;
	const char *qemu;	/* required */
	const char *machine;
	const char *mode;	/* "live", "pause", "background", "disk-only" */
	int forced;
	int quiesced;
	int memory;		/* 0: no memory image ("memory": null) */
	uint64_t mem_file_bytes, ram_bytes, pages, zero_pages, stream_bytes;
	uint64_t own_bytes, shared_bytes;	/* frames: own, from packs */
	const char *base;	/* the base's checkpoint, or NULL: full */
	const struct manifest_disk *disks;
	size_t ndisks;
	double total_s;
	double paused_ms;	/* rounded to the microsecond */
	int passes;
	int64_t qemu_downtime_ms;	/* < 0: not recorded */
	int frozen;		/* record frozen_ms */
	uint64_t frozen_ms;
	/* With memory: CPU seconds snapctl spent compacting the stream
	 * (parse, cache, hash, compress, commit) and receiving it. */
	double compaction_cpu_s, receive_cpu_s;
};

/*
 * The manifest for in, MF_VERSION MANIFEST_VERSION: each disk with the
 * size and mtime_ns its file has now (null when it cannot be looked at),
 * and "file_made_by", the parent's name when the disk's file is the
 * overlay the parent made for that device (so delete --disks still knows
 * after the parent is gone), the checkpoint's own name for a swapped
 * disk's state file.  New reference, or NULL when a required
 * string is missing.
 */
json_t *manifest_build(const struct manifest_input *in);

#endif
