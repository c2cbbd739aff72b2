/*
 * ingest.h - one migration stream from a file descriptor into a compact
 * memory image: a reader thread drains the fd into a spool (spool.h), so
 * the sender never waits on the parser; a feeder thread takes the spool
 * into the stream parser (stream.h), which fills an image writer (save.h)
 * that compresses on threads of its own.  Used by a live checkpoint (the
 * fd is QEMU's migration socket) and by compact (a raw stream file).
 *
 * With opts.direct the feeder reads the fd itself instead (no reader,
 * no spool): for a sender that may wait, this saves a thread and the
 * hand-over between two (the spool copies nothing: the reader reads into
 * its blocks and the parser parses them in place).
 *
 * The owner polls: ingest_wake_fd() becomes readable when something it
 * may act on happened (the first page record, a failure, the end of the
 * stream); the accessors below read the state at any time.  Every thread
 * blocks all signals, so SIGINT reaches the owner's thread.  All but
 * ingest_start(), ingest_result(), ingest_machine() and ingest_commit()
 * take NULL (an ingest never made: nothing read, nothing failed).  Never prints, never exits.
 */
#ifndef SNAPCTL_INGEST_H
#define SNAPCTL_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "save.h"

struct ingest_opts {
	struct img_opts img;	/* the image writer's */
	const char *name;	/* the fd in messages ("cannot read NAME");
				 * NULL: "the migration stream" */
	const char *spool_dir;	/* overflow file here; NULL: memory only */
	uint64_t spool_file_max;/* bytes the overflow file may hold */
	int direct;		/* the sender can wait (a file, a pipe from
				 * a program: compact): the parser's thread
				 * reads the fd itself in large blocks and
				 * parses them in place; no reader thread,
				 * no spool, ingest_overflow() is a no-op */
};
#define INGEST_OPTS_INIT { IMG_OPTS_INIT, NULL, NULL, 0, 0 }

struct ingest;

/*
 * An ingest into the image that will be named path once committed
 * (img_writer_new(): an existing path is an error).  No thread runs yet.
 * NULL with e filled.
 */
struct ingest *ingest_new(const char *path, const struct ingest_opts *o,
    struct err *e);

/*
 * Start reading fd (borrowed: the caller closes it, after ingest_stop())
 * until end of file.  After a failure the reader goes on reading and
 * discarding, so a sender never blocks on us, until EOF or ingest_stop().
 * 0, or -1 with e filled (no thread left running).
 */
int ingest_start(struct ingest *g, int fd, struct err *e);

/*
 * Allow (1) or forbid (0) the spool to overflow into a file in spool_dir
 * (up to spool_file_max bytes): the reader then never waits for the
 * parser.  Without a spool_dir, nothing.
 */
void ingest_overflow(struct ingest *g, int allow);

/* A descriptor that polls readable after each event; -1 before _new(). */
int ingest_wake_fd(const struct ingest *g);

/* Consume the events ingest_wake_fd() signalled (never blocks). */
void ingest_wake_clear(struct ingest *g);

/* Stream bytes read from the fd so far. */
uint64_t ingest_bytes(const struct ingest *g);

/* Page records parsed so far (the first one wakes the owner). */
uint64_t ingest_pages(const struct ingest *g);

/* Bytes read and not yet parsed (in the spool's memory and file). */
uint64_t ingest_pending(const struct ingest *g);

/*
 * 0, or -1 with e filled by the first failure of either thread so far:
 * reading the fd, the spool's file, the parser (a malformed stream) or the
 * image writer (ERR_NOSPC when the disk is full).  A stream that merely
 * stops early is not a failure here: see ingest_result().
 */
int ingest_check(struct ingest *g, struct err *e);

/* 1 once both threads are done: EOF parsed, a failure, or a stop. */
int ingest_finished(const struct ingest *g);

/*
 * End the threads and wait for them: if the stream is not finished, the
 * rest is not parsed (ingest_result() fails); the fd is shut down for
 * reading if a socket, so a sender still connected sees it closed.
 * Idempotent; fine before ingest_start().
 */
void ingest_stop(struct ingest *g);

/*
 * After ingest_stop(): 0 if the whole stream arrived and was parsed, else
 * -1 with e filled: the failure (as ingest_check()), or why the parser
 * found the stream incomplete ("stream truncated at offset N ...", also
 * for a stream stopped before its end).
 */
int ingest_result(struct ingest *g, struct err *e);

/* The machine type from the configuration section; "" before it. */
const char *ingest_machine(const struct ingest *g);

/*
 * After a successful ingest_result(): commit the image under its name
 * (img_writer_commit()), filling st if not NULL (its cpu_s then counts
 * the feeder thread too: compaction's CPU, receive_cpu_s the reader's).
 * 0, or -1 with e filled.
 */
int ingest_commit(struct ingest *g, struct img_stats *st, struct err *e);

/*
 * Stop (as ingest_stop()) and free everything; an image not committed is
 * removed with its temporary files.  NULL is fine.
 */
void ingest_free(struct ingest *g);

#endif
