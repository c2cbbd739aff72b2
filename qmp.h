/*
 * qmp.h - a client for QEMU's QMP monitor and for the QEMU guest agent.
 *
 * One connection, used from one thread.  Every wait is bounded (the
 * connection's timeout); events that arrive while waiting for a reply are
 * queued with their timestamps.  Nothing QEMU sends is trusted: replies are
 * size-capped, their types checked, and the event queue is bounded in
 * count and in memory (below).  Never prints, never exits; the trace hook
 * is how a caller sees the wire.
 */
#ifndef SNAPCTL_QMP_H
#define SNAPCTL_QMP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define QMP_DEFAULT_TIMEOUT_MS 10000
#define QMP_MAX_LINE (64u << 20)	/* longest reply accepted */

/*
 * The event queue holds at most QMP_MAX_EVENTS events and at most
 * QMP_MAX_EVENT_BYTES of them, counting an event as its JSON text plus an
 * estimate of what the parsed value costs (some 100 bytes a value, more
 * for an object), so the bound holds in memory for any JSON.  When full,
 * room is made by dropping the oldest event that a newer queued event of
 * the same name supersedes, or the oldest event when all queued names
 * differ: a flood pushes out its own kind, and the newest event of every
 * name (a STOP or RESUME queued before the flood) stays until nothing
 * else is left to drop.  An event costing more than the byte bound alone
 * is dropped.
 * Drops are counted (qmp_queue_stats()) and noted once on the trace.  A
 * qmp_wait_event() for a name sees every event that arrives while it
 * waits: matching ones are never queued, so never dropped.
 */
#define QMP_MAX_EVENTS 1024
#define QMP_MAX_EVENT_BYTES (4u << 20)

struct qmp;

/* Called for every line sent ("->") and received ("<-"). */
typedef void (*qmp_trace_fn)(void *opaque, const char *dir,
    const char *line);

/* An asynchronous event, as received. */
struct qmp_event {
	char *name;		/* "MIGRATION" */
	json_t *data;		/* the "data" member, or NULL (owned) */
	double timestamp;	/* QEMU's, seconds since the epoch */
};

/*
 * Connect to addr — a UNIX socket path or "tcp:HOST:PORT" — read the
 * greeting and negotiate capabilities.  A socket that does not exist yet or
 * refuses is retried until timeout_ms.  NULL with e filled (ERR_QEMU:
 * "cannot connect to '/run/vm.qmp': No such file or directory").
 */
struct qmp *qmp_open(const char *addr, int timeout_ms, struct err *e);

/* How to connect, for qmp_open_with(). */
struct qmp_config {
	int connect_ms;		/* a missing socket file or a refused
				   connection is retried this long; 0: once */
	int timeout_ms;		/* the greeting and every later wait */
	int agent;		/* a guest agent, as qmp_open_agent() */
	qmp_trace_fn trace;	/* as qmp_set_trace(), from the first byte */
	void *trace_opaque;
	int (*cancelled)(void *opaque);	/* as qmp_set_cancel() */
	void *cancel_opaque;
};
#define QMP_CONFIG_INIT { QMP_DEFAULT_TIMEOUT_MS, QMP_DEFAULT_TIMEOUT_MS, \
	0, NULL, NULL, NULL, NULL }

/*
 * qmp_open() or qmp_open_agent() with separate budgets for connecting and
 * for replies, and the hooks installed before the greeting is read.  A
 * socket path whose directory does not exist fails at once, as does a path
 * that is not a socket.
 */
struct qmp *qmp_open_with(const char *addr, const struct qmp_config *cfg,
    struct err *e);

/*
 * Connect to a guest agent socket: no greeting; resynchronise with
 * guest-sync-delimited (discarding input up to the 0xFF marker) so stale
 * replies of an earlier client are not taken for ours.
 */
struct qmp *qmp_open_agent(const char *addr, int timeout_ms, struct err *e);

/* Timeout for every later wait (replies, reads), in ms; <= 0: default. */
void qmp_set_timeout(struct qmp *q, int timeout_ms);

/*
 * While cancelled(opaque) returns non-zero, every wait ends with ERR_INTR
 * ("interrupted while waiting for the reply to 'stop'").  It is asked at
 * least every 200 ms and whenever a signal interrupts poll(); e.g. a
 * sig_caught() wrapper, removed (NULL) before cleanup that needs QMP.  A
 * reply that arrives after its command was given up on is skipped.
 */
void qmp_set_cancel(struct qmp *q, int (*cancelled)(void *opaque),
    void *opaque);

/* Install the trace hook (NULL: none). */
void qmp_set_trace(struct qmp *q, qmp_trace_fn fn, void *opaque);

/* QEMU's version from the greeting (0.0.0 for an agent). */
void qmp_version(const struct qmp *q, int *major, int *minor, int *micro);

/* The greeting's "QMP" object (borrowed; NULL for an agent). */
const json_t *qmp_greeting(const struct qmp *q);

/*
 * Run cmd with args (stolen; may be NULL) and wait for its reply.  Returns
 * the "return" value (new reference), or NULL with e filled: for an error
 * reply ERR_FAIL with e->qmp_class set and e->msg = QEMU's "desc"; for a
 * timeout, disconnect or malformed reply ERR_QEMU.
 */
json_t *qmp_execute(struct qmp *q, const char *cmd, json_t *args,
    struct err *e);

/*
 * qmp_execute() for callers that run many commands: a failure's message is
 * "CMD: " + the reason, and e keeps an error already set (the first one
 * wins).  qmp_do() is the same for commands whose reply does not matter:
 * 0 or -1.
 */
json_t *qmp_call(struct qmp *q, const char *cmd, json_t *args,
    struct err *e);
int qmp_do(struct qmp *q, const char *cmd, json_t *args, struct err *e);

/*
 * Same, passing fd (borrowed: still the caller's to close) to QEMU with
 * SCM_RIGHTS in the same sendmsg as the command (getfd, add-fd).  UNIX
 * sockets only.
 */
json_t *qmp_execute_fd(struct qmp *q, const char *cmd, json_t *args, int fd,
    struct err *e);

/*
 * Wait for an event.  With name non-NULL, wait for the first queued or new
 * event of that name (others stay queued); with name NULL, for any event.
 * If match is non-NULL the event's data must contain its members with equal
 * values (e.g. {"status":"completed"}).  Returns the event (caller frees
 * with qmp_event_free), or NULL with e filled: ERR_TIMEOUT after timeout_ms
 * (-1: the connection's timeout), ERR_QEMU on disconnect.
 */
struct qmp_event *qmp_wait_event(struct qmp *q, const char *name,
    const json_t *match, int timeout_ms, struct err *e);

/* Take the oldest queued event without waiting, or NULL. */
struct qmp_event *qmp_pop_event(struct qmp *q);

/* The state of the event queue, for callers and tests. */
struct qmp_queue_stats {
	size_t events;		/* queued now */
	size_t bytes;		/* their cost against QMP_MAX_EVENT_BYTES */
	uint64_t dropped;	/* events dropped since the connection opened */
};
void qmp_queue_stats(const struct qmp *q, struct qmp_queue_stats *st);

/*
 * Read whatever the socket holds now without blocking, queueing events
 * (late replies are dropped).  0, or -1 with e filled on disconnect.  For
 * callers that poll(qmp_fd()): every call leaves the messages it has read
 * in the queue, so poll() only needs to show new bytes.
 */
int qmp_pump(struct qmp *q, struct err *e);

/*
 * 1 while the connection can carry commands; 0 once QEMU closed it or sent
 * something that broke the framing (every call then fails with ERR_QEMU).
 */
int qmp_usable(const struct qmp *q);

/* The socket, for poll(); do not read or write it. */
int qmp_fd(const struct qmp *q);

void qmp_event_free(struct qmp_event *ev);

/* Close and free; NULL is fine. */
void qmp_close(struct qmp *q);

/*
 * The process at the other end of a UNIX-socket connection (SO_PEERCRED):
 * for a QMP socket, QEMU itself.  0 with *pid, or -1 (a TCP connection, or
 * the kernel would not say).
 */
#include <sys/types.h>
int qmp_peer_pid(const struct qmp *q, pid_t *pid);

/* The same, with the peer's user id too (either pointer may be NULL). */
int qmp_peer_cred(const struct qmp *q, pid_t *pid, uid_t *uid);

#endif
