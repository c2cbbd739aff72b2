/*
 * qmp_int.h - the inside of the QMP client, shared by its files only:
 * qmp.c (the wire, commands, the agent, opening), qmpevent.c (the event
 * queue) and qmpconn.c (connecting sockets).  Everyone else sees the
 * opaque struct qmp of qmp.h.
 */
#ifndef SNAPCTL_QMP_INT_H
#define SNAPCTL_QMP_INT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "qmp.h"
#include "util.h"

struct qent {
	struct qmp_event *ev;
	size_t cost;
	int superseded;		/* a newer event of its name is queued */
};

struct qmp {
	int fd;
	int family;		/* AF_UNIX, AF_INET, AF_INET6 */
	int agent;
	int timeout_ms;
	int broken;		/* the stream can no longer be trusted */
	int need_sync;		/* agent: a reply was abandoned */
	int64_t next_id;
	char *addr;

	struct buf in;
	size_t start;		/* in.data[start..] is not consumed yet */
	size_t scanned;		/* in.data[start..scanned] holds no '\n' */
	size_t taken;		/* the line handed out last, to consume */

	json_t *greeting;	/* the "QMP" member */
	int version[3];

	/* The event queue: evq[evq_head .. evq_head + nevents), oldest
	 * first; evq_bytes is the sum of their costs (event_cost()). */
	struct qent *evq;
	size_t evq_head;
	size_t nevents;
	size_t evq_cap;
	size_t evq_bytes;
	uint64_t evq_dropped;
	int evq_noted;		/* the trace has said the queue is full */

	qmp_trace_fn trace;
	void *trace_opaque;
	int (*cancelled)(void *);
	void *cancel_opaque;
};


/* What read_line() and the waits return besides 0. */
#define QMP_ERROR (-1)		/* e filled */
#define QMP_TIMEOUT (-2)	/* deadline passed; e untouched */

/* qmp.c */
/* Hand a line to the trace hook, if one is set. */
void qmp_trace_line(struct qmp *q, const char *dir, const char *line);
/* The cancel hook says stop. */
int qmp_is_cancelled(struct qmp *q);
/*
 * Wait for events on fd until the deadline (ms, monotonic).  1 when ready,
 * QMP_TIMEOUT, or QMP_ERROR (cancelled or poll failed).
 */
int qmp_wait_fd(struct qmp *q, int fd, short events, uint64_t deadline,
    const char *what, struct err *e);

/* qmpevent.c */
/* An event from a message with a string "event" member.  Never NULL. */
struct qmp_event *qmp_evq_from_msg(const json_t *msg);
/*
 * Queue ev (stolen; read as len bytes of JSON) within QMP_MAX_EVENTS and
 * QMP_MAX_EVENT_BYTES, dropping older events to make room.
 */
void qmp_evq_push(struct qmp *q, struct qmp_event *ev, size_t len);
/* Take the i-th oldest queued event out (i < q->nevents); caller owns it. */
struct qmp_event *qmp_evq_take(struct qmp *q, size_t i);
/* ev is named name (NULL: any) and its data holds every member of match. */
int qmp_evq_matches(const struct qmp_event *ev, const char *name,
    const json_t *match);
/* Free every queued event and the queue. */
void qmp_evq_release(struct qmp *q);

/* qmpconn.c: on success q->fd and q->family are set. */
/* Connect to a UNIX socket, retrying ENOENT/ECONNREFUSED until deadline. */
int qmp_connect_unix(struct qmp *q, const char *path, uint64_t deadline,
    struct err *e);
/* Connect to "tcp:HOST:PORT", retrying ECONNREFUSED until deadline. */
int qmp_connect_tcp(struct qmp *q, const char *addr, uint64_t deadline,
    struct err *e);

#endif
