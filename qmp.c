/*
 * qmp.c - the QMP and guest-agent client (qmp.h): a capped line reader over
 * a non-blocking socket, ids matched to replies, SCM_RIGHTS,
 * guest-sync-delimited for the agent, the greeting and opening.  The event
 * queue is qmpevent.c, connecting the socket qmpconn.c (qmp_int.h).
 * Every wait is a poll() against an absolute deadline; nothing QEMU sends
 * is trusted (Xen's libxl_qmp.c, libvirt's qemu_monitor_json.c).
 */
#include <sys/types.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "qmp_int.h"
#include "util.h"

#define QMP_READ_CHUNK 65536
#define QMP_MAX_SKIPPED 64	/* replies to other ids before giving up */
#define QMP_SLICE_MS 200	/* longest poll() while a cancel hook is set */

static int
timeout_or_default(int timeout_ms)
{
	return timeout_ms > 0 ? timeout_ms : QMP_DEFAULT_TIMEOUT_MS;
}

/* "10 s", "0.3 s": for messages. */
static const char *
fmt_secs(int ms, char out[32])
{
	if (ms % 1000 == 0)
		snprintf(out, 32, "%d s", ms / 1000);
	else
		snprintf(out, 32, "%.1f s", ms / 1000.0);
	return out;
}

void
qmp_trace_line(struct qmp *q, const char *dir, const char *line)
{
	if (q->trace != NULL)
		q->trace(q->trace_opaque, dir, line);
}

int
qmp_is_cancelled(struct qmp *q)
{
	return q->cancelled != NULL && q->cancelled(q->cancel_opaque);
}

int
qmp_wait_fd(struct qmp *q, int fd, short events, uint64_t deadline,
    const char *what, struct err *e)
{
	struct pollfd pfd;
	uint64_t now;
	int ms, n;

	for (;;) {
		if (qmp_is_cancelled(q))
			return err_set(e, ERR_INTR, "interrupted while %s",
			    what);
		now = now_mono_ms();
		if (now >= deadline)
			ms = 0;
		else
			ms = deadline - now > INT32_MAX ? INT32_MAX :
			    (int)(deadline - now);
		if (q->cancelled != NULL && ms > QMP_SLICE_MS)
			ms = QMP_SLICE_MS;
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		n = poll(&pfd, 1, ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return err_sys(e, ERR_QEMU, "poll");
		}
		if (n > 0)
			return 1;
		if (now_mono_ms() >= deadline)
			return QMP_TIMEOUT;
	}
}

static int
closed(struct qmp *q, const char *what, struct err *e)
{
	q->broken = 1;
	return err_set(e, ERR_QEMU, "QEMU closed the connection while %s",
	    what);
}

static int
check_usable(struct qmp *q, struct err *e)
{
	if (q->broken)
		return err_set(e, ERR_QEMU, "the connection to QEMU at '%s' "
		    "is no longer usable", q->addr);
	return 0;
}

/*
 * One read() into the input buffer.  0 when bytes arrived (or none were
 * there: EAGAIN), QMP_ERROR on disconnect or failure.  *got tells which.
 */
static int
read_some(struct qmp *q, const char *what, size_t *got, struct err *e)
{
	ssize_t n;

	*got = 0;
	if (q->start > 0) {
		/* Compact once per read, not once per line. */
		buf_consume(&q->in, q->start);
		q->scanned -= q->start;
		q->start = 0;
	}
	/* A long reply is not a reason to keep its buffer. */
	if (q->in.len == 0 && q->in.cap > 4 * QMP_READ_CHUNK)
		buf_release(&q->in);
	buf_grow(&q->in, QMP_READ_CHUNK);
	for (;;) {
		n = read(q->fd, q->in.data + q->in.len,
		    q->in.cap - q->in.len - 1);
		if (n >= 0 || errno != EINTR)
			break;
	}
	if (n == 0)
		return closed(q, what, e);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno == ECONNRESET)
			return closed(q, what, e);
		q->broken = 1;
		return err_sys(e, ERR_QEMU, "reading from QEMU while %s",
		    what);
	}
	q->in.len += (size_t)n;
	q->in.data[q->in.len] = '\0';
	*got = (size_t)n;
	return 0;
}

/* Drop the line handed out last time. */
static void
consume_taken(struct qmp *q)
{
	q->start += q->taken;
	q->taken = 0;
	if (q->scanned < q->start)
		q->scanned = q->start;
	if (q->start == q->in.len)
		q->start = q->scanned = q->in.len = 0;
}

/*
 * A complete line from the buffer, without its "\r\n", NUL-terminated in
 * place; valid until the next call.  1 found, 0 none yet, QMP_ERROR when
 * the partial line is over the cap.
 */
static int
buffered_line(struct qmp *q, char **line, size_t *len, const char *what,
    struct err *e)
{
	uint8_t *nl, *p;
	size_t n;

	consume_taken(q);
	if (q->in.len == 0)
		return 0;
	nl = memchr(q->in.data + q->scanned, '\n', q->in.len - q->scanned);
	if (nl == NULL) {
		q->scanned = q->in.len;
		if (q->in.len - q->start > QMP_MAX_LINE) {
			q->broken = 1;
			return err_set(e, ERR_QEMU, "message from QEMU longer "
			    "than %u MiB while %s", QMP_MAX_LINE >> 20, what);
		}
		return 0;
	}
	p = q->in.data + q->start;
	n = (size_t)(nl - p);
	if (n > QMP_MAX_LINE) {
		q->broken = 1;
		return err_set(e, ERR_QEMU, "message from QEMU longer than "
		    "%u MiB while %s", QMP_MAX_LINE >> 20, what);
	}
	q->taken = n + 1;
	*nl = '\0';
	if (n > 0 && p[n - 1] == '\r')
		p[--n] = '\0';
	*line = (char *)p;
	*len = n;
	return 1;
}

/*
 * The next non-empty line, waiting until the deadline.  0, QMP_TIMEOUT or
 * QMP_ERROR.  An agent's 0xFF delimiter and anything before it on the line
 * are dropped (guest-sync-delimited puts it before its reply).
 */
static int
read_line(struct qmp *q, uint64_t deadline, const char *what, char **line,
    size_t *len, struct err *e)
{
	uint8_t *ff;
	size_t got;
	int rc;

	for (;;) {
		rc = buffered_line(q, line, len, what, e);
		if (rc < 0)
			return rc;
		if (rc > 0) {
			if (q->agent &&
			    (ff = memrchr(*line, 0xff, *len)) != NULL) {
				qmp_trace_line(q, "<-",
				    "(input up to 0xff dropped)");
				*len -= (size_t)(ff + 1 - (uint8_t *)*line);
				*line = (char *)ff + 1;
			}
			if (*len == 0)
				continue;
			qmp_trace_line(q, "<-", *line);
			return 0;
		}
		rc = qmp_wait_fd(q, q->fd, POLLIN, deadline, what, e);
		if (rc < 0)
			return rc;
		if (read_some(q, what, &got, e) < 0)
			return QMP_ERROR;
	}
}

/*
 * The next message, which must be a JSON object (new reference), and the
 * length of its line.
 */
static int
read_msg(struct qmp *q, uint64_t deadline, const char *what, json_t **out,
    size_t *lenp, struct err *e)
{
	json_error_t jerr;
	json_t *msg;
	char *line;
	size_t len;
	int rc;

	*out = NULL;
	if ((rc = read_line(q, deadline, what, &line, &len, e)) < 0)
		return rc;
	msg = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
	if (msg == NULL)
		return err_set(e, ERR_QEMU, "malformed JSON from QEMU while "
		    "%s: %s", what, jerr.text);
	if (!json_is_object(msg)) {
		json_decref(msg);
		return err_set(e, ERR_QEMU, "unexpected message from QEMU "
		    "while %s: not a JSON object", what);
	}
	*out = msg;
	*lenp = len;
	return 0;
}

/* ---- messages ---------------------------------------------------------- */

enum msg_kind { MSG_EVENT, MSG_REPLY, MSG_OTHER };

static enum msg_kind
classify(const json_t *msg)
{
	if (json_is_string(json_object_get(msg, "event")))
		return MSG_EVENT;
	if (json_object_get(msg, "return") != NULL ||
	    json_object_get(msg, "error") != NULL)
		return MSG_REPLY;
	return MSG_OTHER;
}

/*
 * Take apart a reply: its "return" (new reference), or NULL with e filled
 * from its "error".
 */
static json_t *
reply_value(const json_t *msg, const char *cmd, struct err *e)
{
	const json_t *error, *ret;
	const char *cls, *desc;

	error = json_object_get(msg, "error");
	if (error != NULL) {
		cls = json_string_value(json_object_get(error, "class"));
		desc = json_string_value(json_object_get(error, "desc"));
		if (cls == NULL || desc == NULL) {
			err_set(e, ERR_QEMU, "malformed error reply to '%s'",
			    cmd);
			return NULL;
		}
		if (e != NULL && !err_isset(e)) {
			err_set(e, ERR_FAIL, "%s", desc);
			snprintf(e->qmp_class, sizeof(e->qmp_class), "%s",
			    cls);
		}
		return NULL;
	}
	ret = json_object_get(msg, "return");
	if (ret == NULL) {
		err_set(e, ERR_QEMU, "malformed reply to '%s'", cmd);
		return NULL;
	}
	return json_incref((json_t *)ret);
}

/*
 * Queue the events among the complete lines already read, so that a
 * caller's poll() on the socket sees all that is left; late replies and
 * garbage are dropped (the trace shows them).
 */
static int
drain(struct qmp *q, const char *what, struct err *e)
{
	json_error_t jerr;
	json_t *msg;
	char *line;
	size_t len;
	int rc;

	while ((rc = buffered_line(q, &line, &len, what, e)) > 0) {
		if (len == 0)
			continue;
		qmp_trace_line(q, "<-", line);
		msg = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
		if (json_is_object(msg) && classify(msg) == MSG_EVENT)
			qmp_evq_push(q, qmp_evq_from_msg(msg), len);
		json_decref(msg);
	}
	return rc;
}

/* Send all of data; with fd >= 0, pass it in the first sendmsg. */
static int
send_all(struct qmp *q, const void *data, size_t len, int fd,
    uint64_t deadline, const char *cmd, struct err *e)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	char what[160], secs[32];
	struct cmsghdr *cmsg;
	struct msghdr mh;
	struct iovec iov;
	size_t off = 0;
	ssize_t n;
	int rc;

	snprintf(what, sizeof(what), "sending '%s'", cmd);
	while (off < len) {
		rc = qmp_wait_fd(q, q->fd, POLLOUT, deadline, what, e);
		if (rc == QMP_TIMEOUT) {
			if (off > 0)	/* a partial command is on the wire */
				q->broken = 1;
			return err_set(e, ERR_QEMU, "cannot send '%s' to QEMU "
			    "within %s", cmd, fmt_secs(q->timeout_ms, secs));
		}
		if (rc < 0) {
			if (off > 0)
				q->broken = 1;
			return QMP_ERROR;
		}
		memset(&mh, 0, sizeof(mh));
		iov.iov_base = (char *)data + off;
		iov.iov_len = len - off;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (fd >= 0 && off == 0) {
			memset(cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof(cbuf);
			cmsg = CMSG_FIRSTHDR(&mh);
			cmsg->cmsg_level = SOL_SOCKET;
			cmsg->cmsg_type = SCM_RIGHTS;
			cmsg->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
		}
		n = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN ||
			    errno == EWOULDBLOCK)
				continue;
			q->broken = 1;
			if (errno == EPIPE || errno == ECONNRESET)
				return closed(q, what, e);
			return err_sys(e, ERR_QEMU, "cannot send '%s' to QEMU",
			    cmd);
		}
		off += (size_t)n;
	}
	return 0;
}

/* Trace and send one JSON message with its newline. */
static int
send_msg(struct qmp *q, const json_t *msg, int fd, uint64_t deadline,
    const char *cmd, struct err *e)
{
	struct buf b = BUF_INIT;
	char *s;
	int rc;

	s = json_dumps(msg, JSON_COMPACT);
	if (s == NULL)
		return err_set(e, ERR_FAIL, "cannot encode '%s'", cmd);
	qmp_trace_line(q, "->", s);
	buf_addstr(&b, s);
	buf_addc(&b, '\n');
	rc = send_all(q, b.data, b.len, fd, deadline, cmd, e);
	buf_release(&b);
	free(s);
	return rc;
}

static int agent_sync(struct qmp *q, uint64_t deadline, struct err *e);

static json_t *
execute(struct qmp *q, const char *cmd, json_t *args, int fd, struct err *e)
{
	char what[160], secs[32];
	json_t *req = NULL, *msg = NULL, *ret = NULL;
	const json_t *id;
	uint64_t deadline;
	enum msg_kind kind;
	int64_t myid = 0;
	size_t len;
	int skipped = 0, rc;

	if (check_usable(q, e) < 0)
		goto out;
	if (cmd == NULL || *cmd == '\0') {
		err_set(e, ERR_FAIL, "no QMP command given");
		goto out;
	}
	if (args != NULL && !json_is_object(args)) {
		err_set(e, ERR_FAIL, "the arguments of '%s' must be a JSON "
		    "object", cmd);
		goto out;
	}
	if (fd >= 0 && q->family != AF_UNIX) {
		err_set(e, ERR_FAIL, "cannot pass a file descriptor with '%s' "
		    "over TCP", cmd);
		goto out;
	}
	deadline = now_mono_ms() + (uint64_t)q->timeout_ms;
	if (q->agent && q->need_sync && agent_sync(q, deadline, e) < 0)
		goto out;

	req = json_pack("{s:s}", "execute", cmd);
	if (args != NULL) {
		json_object_set_new(req, "arguments", args);
		args = NULL;
	}
	if (!q->agent) {
		myid = q->next_id++;
		json_object_set_new(req, "id", json_integer(myid));
	}
	if (send_msg(q, req, fd, deadline, cmd, e) < 0)
		goto out;

	snprintf(what, sizeof(what), "waiting for the reply to '%s'", cmd);
	for (;;) {
		json_decref(msg);
		rc = read_msg(q, deadline, what, &msg, &len, e);
		if (rc == QMP_TIMEOUT) {
			err_set(e, ERR_QEMU, "no reply to '%s' within %s", cmd,
			    fmt_secs(q->timeout_ms, secs));
			break;
		}
		if (rc < 0)
			break;
		kind = classify(msg);
		if (kind == MSG_EVENT) {
			qmp_evq_push(q, qmp_evq_from_msg(msg), len);
			continue;
		}
		if (kind == MSG_OTHER) {
			err_set(e, ERR_QEMU, "unexpected message from QEMU "
			    "while %s", what);
			break;
		}
		/* A late reply to a command we gave up on has an old id.
		 * One without an id is QEMU failing to parse our line. */
		id = json_object_get(msg, "id");
		if (!q->agent && id != NULL && (!json_is_integer(id) ||
		    json_integer_value(id) != myid)) {
			if (++skipped > QMP_MAX_SKIPPED) {
				err_set(e, ERR_QEMU, "too many replies to "
				    "other commands while %s", what);
				break;
			}
			continue;
		}
		ret = reply_value(msg, cmd, e);
		if (!q->agent)
			drain(q, what, NULL);
		goto out;
	}
	/* Abandoned: an agent's late reply has no id to tell it apart. */
	if (q->agent)
		q->need_sync = 1;
out:
	json_decref(msg);
	json_decref(req);
	json_decref(args);
	return ret;
}

json_t *
qmp_execute(struct qmp *q, const char *cmd, json_t *args, struct err *e)
{
	return execute(q, cmd, args, -1, e);
}

json_t *
qmp_call(struct qmp *q, const char *cmd, json_t *args, struct err *e)
{
	struct err le = ERR_INIT;
	json_t *r;

	r = qmp_execute(q, cmd, args, &le);
	if (r == NULL && e != NULL && !err_isset(e)) {
		*e = le;
		err_prefix(e, "%s: ", cmd);
	}
	return r;
}

int
qmp_do(struct qmp *q, const char *cmd, json_t *args, struct err *e)
{
	json_t *r = qmp_call(q, cmd, args, e);

	if (r == NULL)
		return -1;
	json_decref(r);
	return 0;
}

json_t *
qmp_execute_fd(struct qmp *q, const char *cmd, json_t *args, int fd,
    struct err *e)
{
	if (fd < 0) {
		json_decref(args);
		err_set(e, ERR_FAIL, "no file descriptor to pass with '%s'",
		    cmd);
		return NULL;
	}
	return execute(q, cmd, args, fd, e);
}

/* ---- the guest agent --------------------------------------------------- */

static int64_t
sync_id(void)
{
	uint32_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)(now_mono_ns() ^ ((uint64_t)getpid() << 16));
	return (int64_t)(r & 0x7fffffff) + 1;
}

/*
 * Resynchronise: 0xFF makes the agent drop its partial input; its reply to
 * guest-sync-delimited is preceded by 0xFF, so what came before (replies an
 * earlier client abandoned) is skipped.
 */
static int
agent_sync(struct qmp *q, uint64_t deadline, struct err *e)
{
	static const char what[] = "waiting for the reply to "
	    "'guest-sync-delimited'";
	static const uint8_t ff = 0xff;
	json_t *req = NULL, *msg = NULL;
	json_error_t jerr;
	char *line, secs[32];
	size_t len;
	int64_t id = sync_id();
	int rc = QMP_ERROR, n, skipped = 0;
	uint8_t *mark;

	qmp_trace_line(q, "->", "(0xff)");
	if (send_all(q, &ff, 1, -1, deadline, "guest-sync-delimited", e) < 0)
		goto out;
	req = json_pack("{s:s, s:{s:I}}", "execute", "guest-sync-delimited",
	    "arguments", "id", (json_int_t)id);
	if (send_msg(q, req, -1, deadline, "guest-sync-delimited", e) < 0)
		goto out;

	/* Everything up to the marker is stale, newline or not. */
	for (;;) {
		consume_taken(q);
		mark = q->in.len == q->start ? NULL : memchr(q->in.data +
		    q->start, 0xff, q->in.len - q->start);
		if (mark != NULL) {
			if (mark != q->in.data + q->start)
				qmp_trace_line(q, "<-",
				    "(input up to 0xff dropped)");
			q->start = q->scanned = (size_t)(mark + 1 - q->in.data);
			break;
		}
		if (q->in.len > q->start)
			qmp_trace_line(q, "<-", "(input before 0xff dropped)");
		q->start = q->scanned = q->in.len = 0;
		n = qmp_wait_fd(q, q->fd, POLLIN, deadline, what, e);
		if (n == QMP_TIMEOUT)
			goto timeout;
		if (n < 0)
			goto out;
		if (read_some(q, what, &len, e) < 0)
			goto out;
	}
	for (;;) {
		n = read_line(q, deadline, what, &line, &len, e);
		if (n == QMP_TIMEOUT)
			goto timeout;
		if (n < 0)
			goto out;
		json_decref(msg);
		msg = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
		if (json_is_object(msg) && json_is_integer(json_object_get(msg,
		    "return")) && json_integer_value(json_object_get(msg,
		    "return")) == id)
			break;
		if (++skipped > QMP_MAX_SKIPPED) {
			err_set(e, ERR_QEMU, "no reply to "
			    "'guest-sync-delimited' among %d messages",
			    QMP_MAX_SKIPPED);
			goto out;
		}
	}
	q->need_sync = 0;
	rc = 0;
	goto out;
timeout:
	err_set(e, ERR_QEMU, "no reply to 'guest-sync-delimited' within %s "
	    "(is the guest agent running?)", fmt_secs(q->timeout_ms, secs));
out:
	if (rc < 0)
		q->need_sync = 1;
	json_decref(msg);
	json_decref(req);
	return rc;
}

/* Check the greeting and keep its "QMP" member. */
static int
take_greeting(struct qmp *q, json_t *msg, struct err *e)
{
	json_t *qmp, *ver;
	json_int_t v[3];
	const char *names[] = { "major", "minor", "micro" };
	size_t i;

	qmp = json_object_get(msg, "QMP");
	ver = json_object_get(json_object_get(qmp, "version"), "qemu");
	if (!json_is_object(qmp) || !json_is_object(ver) ||
	    !json_is_array(json_object_get(qmp, "capabilities")))
		return err_set(e, ERR_QEMU, "'%s' is not a QMP monitor: "
		    "unexpected greeting", q->addr);
	for (i = 0; i < 3; i++) {
		if (!json_is_integer(json_object_get(ver, names[i])))
			return err_set(e, ERR_QEMU, "'%s' is not a QMP "
			    "monitor: no version in the greeting", q->addr);
		v[i] = json_integer_value(json_object_get(ver, names[i]));
		q->version[i] = v[i] < 0 || v[i] > INT32_MAX ? 0 : (int)v[i];
	}
	q->greeting = json_incref(qmp);
	return 0;
}

struct qmp *
qmp_open_with(const char *addr, const struct qmp_config *cfg, struct err *e)
{
	struct qmp *q;
	json_t *msg = NULL, *ret = NULL;
	char what[160], secs[32];
	uint64_t deadline;
	size_t len;
	int rc;

	q = xcalloc(1, sizeof(*q));
	q->fd = -1;
	q->agent = cfg->agent;
	q->next_id = 1;
	q->timeout_ms = timeout_or_default(cfg->timeout_ms);
	q->addr = xstrdup(addr != NULL ? addr : "");
	q->trace = cfg->trace;
	q->trace_opaque = cfg->trace_opaque;
	q->cancelled = cfg->cancelled;
	q->cancel_opaque = cfg->cancel_opaque;

	if (addr == NULL || *addr == '\0') {
		err_set(e, ERR_USAGE, "no QMP socket address given");
		goto fail;
	}
	deadline = now_mono_ms() +
	    (uint64_t)(cfg->connect_ms > 0 ? cfg->connect_ms : 0);
	if (strncmp(addr, "tcp:", 4) == 0)
		rc = qmp_connect_tcp(q, addr, deadline, e);
	else
		rc = qmp_connect_unix(q, addr, deadline, e);
	if (rc < 0)
		goto fail;

	deadline = now_mono_ms() + (uint64_t)q->timeout_ms;
	if (q->agent) {
		if (agent_sync(q, deadline, e) < 0)
			goto fail;
		return q;
	}

	/* QEMU greets one client at a time: a connection that gets no
	 * greeting is usually queued behind another client. */
	snprintf(what, sizeof(what), "waiting for the QMP greeting from "
	    "'%s'", addr);
	for (;;) {
		rc = read_msg(q, deadline, what, &msg, &len, e);
		if (rc == QMP_TIMEOUT) {
			err_set(e, ERR_QEMU, "no QMP greeting from '%s' within "
			    "%s (is another client connected?)", addr,
			    fmt_secs(q->timeout_ms, secs));
			goto fail;
		}
		if (rc < 0)
			goto fail;
		if (classify(msg) != MSG_EVENT)
			break;
		qmp_evq_push(q, qmp_evq_from_msg(msg), len);
		json_decref(msg);
	}
	if (take_greeting(q, msg, e) < 0)
		goto fail;
	ret = qmp_execute(q, "qmp_capabilities", NULL, e);
	if (ret == NULL)
		goto fail;
	if (!json_is_object(ret)) {
		err_set(e, ERR_QEMU, "unexpected reply to 'qmp_capabilities' "
		    "from '%s'", addr);
		goto fail;
	}
	json_decref(ret);
	json_decref(msg);
	return q;
fail:
	json_decref(ret);
	json_decref(msg);
	qmp_close(q);
	return NULL;
}

struct qmp *
qmp_open(const char *addr, int timeout_ms, struct err *e)
{
	struct qmp_config cfg = QMP_CONFIG_INIT;

	cfg.connect_ms = cfg.timeout_ms = timeout_or_default(timeout_ms);
	return qmp_open_with(addr, &cfg, e);
}

struct qmp *
qmp_open_agent(const char *addr, int timeout_ms, struct err *e)
{
	struct qmp_config cfg = QMP_CONFIG_INIT;

	cfg.connect_ms = cfg.timeout_ms = timeout_or_default(timeout_ms);
	cfg.agent = 1;
	return qmp_open_with(addr, &cfg, e);
}

/* ---- the rest of the interface ----------------------------------------- */

void
qmp_set_timeout(struct qmp *q, int timeout_ms)
{
	q->timeout_ms = timeout_or_default(timeout_ms);
}

void
qmp_set_trace(struct qmp *q, qmp_trace_fn fn, void *opaque)
{
	q->trace = fn;
	q->trace_opaque = opaque;
}

void
qmp_set_cancel(struct qmp *q, int (*cancelled)(void *opaque), void *opaque)
{
	q->cancelled = cancelled;
	q->cancel_opaque = opaque;
}

void
qmp_version(const struct qmp *q, int *major, int *minor, int *micro)
{
	if (major != NULL)
		*major = q->version[0];
	if (minor != NULL)
		*minor = q->version[1];
	if (micro != NULL)
		*micro = q->version[2];
}

const json_t *
qmp_greeting(const struct qmp *q)
{
	return q->greeting;
}

struct qmp_event *
qmp_wait_event(struct qmp *q, const char *name, const json_t *match,
    int timeout_ms, struct err *e)
{
	struct qmp_event *ev = NULL;
	json_t *msg = NULL;
	char what[160], secs[32];
	uint64_t deadline;
	size_t i, len;
	int rc;

	for (i = 0; i < q->nevents; i++)
		if (qmp_evq_matches(q->evq[q->evq_head + i].ev, name, match)) {
			q->evq_noted = 0;
			return qmp_evq_take(q, i);
		}
	if (check_usable(q, e) < 0)
		return NULL;
	if (timeout_ms < 0)
		timeout_ms = q->timeout_ms;
	deadline = now_mono_ms() + (uint64_t)timeout_ms;
	if (name != NULL)
		snprintf(what, sizeof(what), "waiting for event '%s'", name);
	else
		snprintf(what, sizeof(what), "waiting for an event");
	for (;;) {
		rc = read_msg(q, deadline, what, &msg, &len, e);
		if (rc == QMP_TIMEOUT) {
			err_set(e, ERR_TIMEOUT, "no %s%s%s event within %s",
			    name ? "'" : "", name ? name : "",
			    name ? "'" : "", fmt_secs(timeout_ms, secs));
			break;
		}
		if (rc < 0)
			break;
		if (classify(msg) == MSG_EVENT) {
			ev = qmp_evq_from_msg(msg);
			if (qmp_evq_matches(ev, name, match)) {
				drain(q, what, NULL);
				break;
			}
			qmp_evq_push(q, ev, len);
			ev = NULL;
		}
		/* Anything else is a late reply nobody waits for. */
		json_decref(msg);
		msg = NULL;
	}
	json_decref(msg);
	return ev;
}
int
qmp_pump(struct qmp *q, struct err *e)
{
	static const char what[] = "reading events";
	size_t got;
	int i;

	if (check_usable(q, e) < 0 || drain(q, what, e) < 0)
		return -1;
	/* Bounded, so a chatty QEMU cannot keep the caller here. */
	for (i = 0; i < 16; i++) {
		if (read_some(q, what, &got, e) < 0)
			return -1;
		if (got == 0)
			break;
		if (drain(q, what, e) < 0)
			return -1;
	}
	return 0;
}
int
qmp_usable(const struct qmp *q)
{
	return !q->broken;
}

int
qmp_fd(const struct qmp *q)
{
	return q->fd;
}

void
qmp_close(struct qmp *q)
{
	if (q == NULL)
		return;
	if (q->fd >= 0)
		close(q->fd);
	qmp_evq_release(q);
	json_decref(q->greeting);
	buf_release(&q->in);
	free(q->addr);
	free(q);
}

int
qmp_peer_cred(const struct qmp *q, pid_t *pid, uid_t *uid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (q == NULL || q->fd < 0 ||
	    getsockopt(q->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
	    len != sizeof(cred) || cred.pid <= 0)
		return -1;
	if (pid != NULL)
		*pid = cred.pid;
	if (uid != NULL)
		*uid = cred.uid;
	return 0;
}

int
qmp_peer_pid(const struct qmp *q, pid_t *pid)
{
	return qmp_peer_cred(q, pid, NULL);
}
