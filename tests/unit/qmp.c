/*
 * tests/unit/qmp.c - the QMP client against a scripted fake peer: a thread
 * on the other end of a real socket that sends exactly what a test says
 * (split, late, malformed, huge) and checks the exact bytes it receives
 * (curl's test servers).  Connection retries, ids, events, timeouts, fd
 * passing and guest-agent resynchronisation.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "qmp.h"
#include "util.h"
#include "tap.h"

#define PEER_WAIT_MS 10000	/* no peer step waits longer than this */

static char tmpdir[64];
static int nsock;

/* ---- the fake peer ----------------------------------------------------- */

struct peer;
typedef void (*script_fn)(struct peer *p, int fd);

struct peer {
	char path[108];
	char addr[128];		/* what the client connects to */
	int lfd;
	int tcp;
	int listen_delay_ms;	/* create the socket only after this */
	int refuse_ms;		/* bound but not listening for this long */
	script_fn script;
	pthread_t th;
	char fail[600];		/* the first thing that went wrong */
	int wfd;		/* scratch for a test */
	int64_t n;		/* scratch */
};

static void __attribute__((format(printf, 2, 3)))
pfail(struct peer *p, const char *fmt, ...)
{
	va_list ap;

	if (p->fail[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(p->fail, sizeof(p->fail), fmt, ap);
	va_end(ap);
}

static void
psleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int
psend_len(struct peer *p, int fd, const void *s, size_t len)
{
	size_t off = 0;
	ssize_t n;

	while (off < len) {
		n = send(fd, (const char *)s + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

static void
psend(struct peer *p, int fd, const char *s)
{
	if (psend_len(p, fd, s, strlen(s)) < 0)
		pfail(p, "peer: send: %s", strerror(errno));
}

/* One byte per send(), with pauses, so no read sees a whole message. */
static void
psend_slow(struct peer *p, int fd, const char *s)
{
	for (; *s != '\0'; s++) {
		if (psend_len(p, fd, s, 1) < 0) {
			pfail(p, "peer: send: %s", strerror(errno));
			return;
		}
		if ((*s & 7) == 0)
			usleep(100);
	}
}

static int
pread_byte(struct peer *p, int fd, char *c)
{
	struct pollfd pfd = { fd, POLLIN, 0 };
	ssize_t n;

	for (;;) {
		if (poll(&pfd, 1, PEER_WAIT_MS) == 0) {
			pfail(p, "peer: nothing from the client in %d ms",
			    PEER_WAIT_MS);
			return -1;
		}
		n = read(fd, c, 1);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			pfail(p, "peer: the client closed the connection");
			return -1;
		}
		return 0;
	}
}

/* Read exactly the bytes of want and compare. */
static void
pexpect(struct peer *p, int fd, const char *want)
{
	size_t n = strlen(want), i;
	char *got = xcalloc(1, n + 1);

	for (i = 0; i < n; i++)
		if (pread_byte(p, fd, &got[i]) < 0)
			break;
	if (i == n && memcmp(got, want, n) != 0)
		pfail(p, "peer: expected '%.200s', got '%.200s'", want, got);
	free(got);
}

/* A line (without its newline), newly allocated, or NULL. */
static char *
pline(struct peer *p, int fd)
{
	struct buf b = BUF_INIT;
	char c;

	buf_addstr(&b, "");
	for (;;) {
		if (pread_byte(p, fd, &c) < 0) {
			buf_release(&b);
			return NULL;
		}
		if (c == '\n')
			return (char *)b.data;
		buf_addc(&b, (uint8_t)c);
	}
}

static const char greeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, "
    "\"major\": 7}, \"package\": \"test\"}, \"capabilities\": "
    "[\"oob\"]}}\r\n";

static void
pgreet(struct peer *p, int fd)
{
	psend(p, fd, greeting);
	pexpect(p, fd, "{\"execute\":\"qmp_capabilities\",\"id\":1}\n");
	psend(p, fd, "{\"return\": {}, \"id\": 1}\r\n");
}

static int
make_listener(struct peer *p, int listen_now)
{
	struct sockaddr_un sun;
	int fd;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, p->path, strlen(p->path) + 1);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    (listen_now && listen(fd, 4) < 0)) {
		pfail(p, "peer: cannot listen on %s: %s", p->path,
		    strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static void *
peer_main(void *arg)
{
	struct peer *p = arg;
	struct pollfd pfd;
	sigset_t all;
	int fd;

	/* Signals are for the client's thread (the EINTR test). */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	if (p->listen_delay_ms > 0) {
		psleep(p->listen_delay_ms);
		p->lfd = make_listener(p, 1);
	}
	if (p->refuse_ms > 0) {
		psleep(p->refuse_ms);
		if (listen(p->lfd, 4) < 0)
			pfail(p, "peer: listen: %s", strerror(errno));
	}
	if (p->lfd < 0)
		return NULL;
	pfd.fd = p->lfd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, PEER_WAIT_MS) != 1) {
		pfail(p, "peer: no connection from the client");
		return NULL;
	}
	fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		pfail(p, "peer: accept: %s", strerror(errno));
		return NULL;
	}
	p->script(p, fd);
	close(fd);
	return NULL;
}

static void
peer_start(struct peer *p, script_fn script)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	p->script = script;
	p->lfd = -1;
	snprintf(p->path, sizeof(p->path), "%s/s%d.qmp", tmpdir, ++nsock);
	snprintf(p->addr, sizeof(p->addr), "%s", p->path);
	if (p->tcp) {
		p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(p->lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
		    listen(p->lfd, 4) < 0 ||
		    getsockname(p->lfd, (struct sockaddr *)&sin, &len) < 0)
			pfail(p, "peer: tcp listen: %s", strerror(errno));
		snprintf(p->addr, sizeof(p->addr), "tcp:127.0.0.1:%d",
		    ntohs(sin.sin_port));
	} else if (p->listen_delay_ms == 0) {
		p->lfd = make_listener(p, p->refuse_ms == 0);
	}
	if (pthread_create(&p->th, NULL, peer_main, p) != 0) {
		fprintf(stderr, "cannot start the peer thread\n");
		exit(2);
	}
}

/* Wait for the peer's script to end; 1 if it saw nothing wrong. */
static int
peer_finish(struct peer *p, const char *what)
{
	pthread_join(p->th, NULL);
	if (p->lfd >= 0)
		close(p->lfd);
	unlink(p->path);
	check(p->fail[0] == '\0', "%s: the peer saw what it expected", what);
	if (p->fail[0] != '\0')
		note("%s", p->fail);
	return p->fail[0] == '\0';
}

/* ---- client helpers ---------------------------------------------------- */

struct tracelog {
	struct buf b;
	int lines;
};

static void
trace_to(void *opaque, const char *dir, const char *line)
{
	struct tracelog *t = opaque;

	buf_addf(&t->b, "%s %.300s\n", dir, line);
	t->lines++;
}

static struct qmp *
open_peer(struct peer *p, int timeout_ms, struct err *e)
{
	return qmp_open(p->addr, timeout_ms, e);
}

static const char *
str_member(const json_t *j, const char *key)
{
	const char *s = json_string_value(json_object_get(j, key));

	return s != NULL ? s : "";
}

/* ---- scripts and tests ------------------------------------------------- */

static void
s_basic(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"query-status\",\"id\":2}\n");
	psend(p, fd, "{\"return\": {\"status\": \"running\"}, \"id\": 2}\r\n");
	pexpect(p, fd, "{\"execute\":\"human-monitor-command\",\"arguments\":"
	    "{\"command-line\":\"info version\"},\"id\":3}\n");
	psend(p, fd, "{\"return\": \"7.2.22\\r\\n\", \"id\": 3}\n");
}

static void
t_basic(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct tracelog t = { BUF_INIT, 0 };
	struct qmp_config cfg = QMP_CONFIG_INIT;
	struct qmp *q;
	json_t *r = NULL;
	int ma = -1, mi = -1, mc = -1;

	peer_start(&p, s_basic);
	cfg.trace = trace_to;
	cfg.trace_opaque = &t;
	q = qmp_open_with(p.addr, &cfg, &e);
	check(q != NULL, "greeting and qmp_capabilities: connected (%s)",
	    e.msg);
	if (q != NULL) {
		qmp_version(q, &ma, &mi, &mc);
		check(ma == 7 && mi == 2 && mc == 22, "version from the "
		    "greeting: %d.%d.%d", ma, mi, mc);
		check(json_is_array(json_object_get(qmp_greeting(q),
		    "capabilities")), "qmp_greeting() is the QMP object");
		r = qmp_execute(q, "query-status", NULL, &e);
		check(r != NULL && strcmp(str_member(r, "status"),
		    "running") == 0, "reply matched by id, \\r\\n tolerated");
		json_decref(r);
		r = qmp_execute(q, "human-monitor-command",
		    json_pack("{s:s}", "command-line", "info version"), &e);
		check(json_is_string(r) && strcmp(json_string_value(r),
		    "7.2.22\r\n") == 0, "arguments sent, string return");
		json_decref(r);
	}
	qmp_close(q);
	peer_finish(&p, "basic");
	check(t.b.data != NULL && strstr((char *)t.b.data,
	    "-> {\"execute\":\"qmp_capabilities\",\"id\":1}\n") != NULL &&
	    strstr((char *)t.b.data, "<- {\"QMP\":") != NULL &&
	    t.lines == 7, "trace saw every line both ways from the greeting "
	    "(%d lines)", t.lines);
	buf_release(&t.b);
}

static void
s_slow(struct peer *p, int fd)
{
	psend_slow(p, fd, greeting);
	pexpect(p, fd, "{\"execute\":\"qmp_capabilities\",\"id\":1}\n");
	psend_slow(p, fd, "{\"return\": {}, \"id\": 1}\n");
	pexpect(p, fd, "{\"execute\":\"query-name\",\"id\":2}\n");
	psend_slow(p, fd, "{\"event\": \"X\", \"timestamp\": {\"seconds\": 1, "
	    "\"microseconds\": 2}}\n{\"return\": {\"name\": \"vm\"}, "
	    "\"id\": 2}\n");
}

static void
t_byte_by_byte(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	struct qmp_event *ev;
	json_t *r;

	peer_start(&p, s_slow);
	q = open_peer(&p, 5000, &e);
	check(q != NULL, "greeting one byte per read: connected (%s)", e.msg);
	if (q != NULL) {
		r = qmp_execute(q, "query-name", NULL, &e);
		check(r != NULL && strcmp(str_member(r, "name"), "vm") == 0,
		    "event and reply one byte per read");
		json_decref(r);
		ev = qmp_pop_event(q);
		check(ev != NULL && strcmp(ev->name, "X") == 0,
		    "the event was queued");
		qmp_event_free(ev);
	}
	qmp_close(q);
	peer_finish(&p, "byte by byte");
}

static void
s_events(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"stop\",\"id\":2}\n");
	psend(p, fd,
	    "{\"timestamp\": {\"seconds\": 100, \"microseconds\": 1}, "
	    "\"event\": \"A\", \"data\": {\"n\": 1}}\n"
	    "{\"timestamp\": {\"seconds\": 101, \"microseconds\": 500000}, "
	    "\"event\": \"B\"}\n"
	    "{\"timestamp\": {\"seconds\": 102, \"microseconds\": 0}, "
	    "\"event\": \"A\", \"data\": {\"n\": 2, \"x\": \"y\"}}\n"
	    "{\"return\": {}, \"id\": 2}\n"
	    "{\"timestamp\": {\"seconds\": 103, \"microseconds\": 0}, "
	    "\"event\": \"AFTER\"}\n");
	psleep(150);
	psend(p, fd, "{\"timestamp\": {\"seconds\": 104, \"microseconds\": "
	    "0}, \"event\": \"D\"}\n");
	psend(p, fd, "{\"timestamp\": {\"seconds\": 105, \"microseconds\": "
	    "0}, \"event\": \"C\"}\n");
	psleep(100);
	psend(p, fd, "{\"timestamp\": {\"seconds\": 106, \"microseconds\": "
	    "0}, \"event\": \"PUMPED\"}\n");
	psleep(100);
}

static void
t_events(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	struct qmp_event *ev;
	struct pollfd pfd;
	json_t *r, *match;
	uint64_t t0;
	int got = 0;

	peer_start(&p, s_events);
	q = open_peer(&p, 5000, &e);
	check(q != NULL, "events: connected (%s)", e.msg);
	if (q == NULL) {
		peer_finish(&p, "events");
		return;
	}
	r = qmp_execute(q, "stop", NULL, &e);
	check(json_is_object(r), "reply after three events");
	json_decref(r);

	ev = qmp_wait_event(q, "B", NULL, 1000, &e);
	check(ev != NULL && ev->timestamp == 101.5 && ev->data == NULL,
	    "wait_event B: taken from the queue, timestamp 101.5");
	qmp_event_free(ev);
	match = json_pack("{s:i}", "n", 2);
	ev = qmp_wait_event(q, "A", match, 1000, &e);
	check(ev != NULL && json_integer_value(json_object_get(ev->data,
	    "n")) == 2, "wait_event A with {\"n\":2} skips the first A");
	qmp_event_free(ev);
	json_decref(match);
	ev = qmp_pop_event(q);
	check(ev != NULL && strcmp(ev->name, "A") == 0 &&
	    ev->timestamp > 100.0000009 && ev->timestamp < 100.0000011,
	    "the first A stayed queued, seconds + microseconds");
	qmp_event_free(ev);
	ev = qmp_pop_event(q);
	check(ev != NULL && strcmp(ev->name, "AFTER") == 0,
	    "an event read along with the reply is queued (no poll needed)");
	qmp_event_free(ev);
	check(qmp_pop_event(q) == NULL, "the queue is empty");

	ev = qmp_wait_event(q, "C", NULL, 2000, &e);
	check(ev != NULL && strcmp(ev->name, "C") == 0,
	    "wait_event C waits for it to arrive");
	qmp_event_free(ev);
	ev = qmp_pop_event(q);
	check(ev != NULL && strcmp(ev->name, "D") == 0,
	    "D, which came while waiting for C, was queued");
	qmp_event_free(ev);

	/* The non-blocking way: poll the fd, pump, pop. */
	t0 = now_mono_ms();
	while (!got && now_mono_ms() - t0 < 3000) {
		pfd.fd = qmp_fd(q);
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 100) == 1) {
			if (qmp_pump(q, &e) < 0)
				break;
			if ((ev = qmp_pop_event(q)) != NULL) {
				got = strcmp(ev->name, "PUMPED") == 0;
				qmp_event_free(ev);
			}
		}
	}
	check(got, "poll(qmp_fd) + qmp_pump queue an event");
	t0 = now_mono_ms();
	r = NULL;
	while (now_mono_ms() - t0 < 3000) {
		pfd.fd = qmp_fd(q);
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 100) == 1 && qmp_pump(q, &e) < 0) {
			r = json_true();
			break;
		}
	}
	check(r != NULL && e.kind == ERR_QEMU && !qmp_usable(q),
	    "qmp_pump reports the disconnect: %s", e.msg);
	qmp_close(q);
	peer_finish(&p, "events");
}

static void
s_wait_timeout(struct peer *p, int fd)
{
	pgreet(p, fd);
	psleep(600);
}

static void
t_wait_event_timeout(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	struct qmp_event *ev;
	uint64_t t0, dt;

	peer_start(&p, s_wait_timeout);
	q = open_peer(&p, 5000, &e);
	t0 = now_mono_ms();
	ev = q ? qmp_wait_event(q, "MIGRATION", NULL, 300, &e) : NULL;
	dt = now_mono_ms() - t0;
	check(ev == NULL && e.kind == ERR_TIMEOUT && dt >= 280 && dt < 1500,
	    "wait_event times out: ERR_TIMEOUT after %llu ms: %s",
	    (unsigned long long)dt, e.msg);
	check(strcmp(e.msg, "no 'MIGRATION' event within 0.3 s") == 0,
	    "the message names the event and the time");
	qmp_close(q);
	peer_finish(&p, "wait_event timeout");
}

static void
s_error(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"nope\",\"id\":2}\n");
	psend(p, fd, "{\"id\": 2, \"error\": {\"class\": \"CommandNotFound\", "
	    "\"desc\": \"The command nope has not been found\"}}\n");
	pexpect(p, fd, "{\"execute\":\"bad\",\"id\":3}\n");
	psend(p, fd, "{\"id\": 3, \"error\": {\"class\": 5}}\n");
}

static void
t_error_reply(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;

	peer_start(&p, s_error);
	q = open_peer(&p, 5000, &e);
	r = q ? qmp_execute(q, "nope", NULL, &e) : NULL;
	check(r == NULL && e.kind == ERR_FAIL &&
	    strcmp(e.qmp_class, "CommandNotFound") == 0 &&
	    strcmp(e.msg, "The command nope has not been found") == 0,
	    "error reply: ERR_FAIL, class and desc");
	err_clear(&e);
	r = q ? qmp_execute(q, "bad", NULL, &e) : NULL;
	check(r == NULL && e.kind == ERR_QEMU && e.qmp_class[0] == '\0',
	    "malformed error reply: ERR_QEMU (%s)", e.msg);
	qmp_close(q);
	peer_finish(&p, "error reply");
}

static void
s_disconnect(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"query-status\",\"id\":2}\n");
	psend(p, fd, "{\"return\": {\"sta");
}

static void
t_disconnect(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;
	uint64_t t0, dt;

	peer_start(&p, s_disconnect);
	q = open_peer(&p, 5000, &e);
	t0 = now_mono_ms();
	r = q ? qmp_execute(q, "query-status", NULL, &e) : NULL;
	dt = now_mono_ms() - t0;
	check(r == NULL && e.kind == ERR_QEMU && dt < 2000 &&
	    strcmp(e.msg, "QEMU closed the connection while waiting for the "
	    "reply to 'query-status'") == 0,
	    "disconnect mid-reply: ERR_QEMU in %llu ms: %s",
	    (unsigned long long)dt, e.msg);
	check(q != NULL && !qmp_usable(q), "the connection is marked "
	    "unusable");
	err_clear(&e);
	r = q ? qmp_execute(q, "query-status", NULL, &e) : NULL;
	check(r == NULL && e.kind == ERR_QEMU, "later commands fail at once: "
	    "%s", e.msg);
	qmp_close(q);
	peer_finish(&p, "disconnect");
}

#define HUGE_LEN (10u << 20)

static void
s_huge(struct peer *p, int fd)
{
	struct buf b = BUF_INIT;

	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"x-huge\",\"id\":2}\n");
	buf_addstr(&b, "{\"return\": \"");
	buf_grow(&b, HUGE_LEN);
	memset(b.data + b.len, 'x', HUGE_LEN);
	b.len += HUGE_LEN;
	buf_addstr(&b, "\", \"id\": 2}\n");
	if (psend_len(p, fd, b.data, b.len) < 0)
		pfail(p, "peer: send: %s", strerror(errno));
	buf_release(&b);
}

static void
t_huge(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;

	peer_start(&p, s_huge);
	q = open_peer(&p, 10000, &e);
	r = q ? qmp_execute(q, "x-huge", NULL, &e) : NULL;
	check(json_is_string(r) && json_string_length(r) == HUGE_LEN,
	    "a 10 MiB reply under the cap is read whole (%s)", e.msg);
	json_decref(r);
	qmp_close(q);
	peer_finish(&p, "huge reply");
}

static void
s_overcap(struct peer *p, int fd)
{
	size_t chunk = 1u << 20, sent = 0;
	char *x = xmalloc(chunk);

	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"x-overcap\",\"id\":2}\n");
	memset(x, 'x', chunk);
	psend(p, fd, "{\"return\": \"");
	/* Until the client hangs up on us. */
	while (sent <= QMP_MAX_LINE + chunk &&
	    psend_len(p, fd, x, chunk) == 0)
		sent += chunk;
	free(x);
}

static void
t_overcap(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;

	peer_start(&p, s_overcap);
	q = open_peer(&p, 20000, &e);
	r = q ? qmp_execute(q, "x-overcap", NULL, &e) : NULL;
	check(r == NULL && e.kind == ERR_QEMU &&
	    strstr(e.msg, "longer than 64 MiB") != NULL,
	    "a reply over the cap fails cleanly: %s", e.msg);
	qmp_close(q);
	peer_finish(&p, "over-cap reply");
}

static void
s_malformed(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"query-status\",\"id\":2}\n");
	psend(p, fd, "{\"return\": nope, \"id\": 2}\n");
	pexpect(p, fd, "{\"execute\":\"query-status\",\"id\":3}\n");
	psend(p, fd, "[1, 2]\n");
	pexpect(p, fd, "{\"execute\":\"query-status\",\"id\":4}\n");
	psend(p, fd, "{\"hello\": 1}\n");
	pexpect(p, fd, "{\"execute\":\"query-status\",\"id\":5}\n");
	psend(p, fd, "{\"return\": {\"status\": \"paused\"}, \"id\": 5}\n");
}

static void
t_malformed(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;

	peer_start(&p, s_malformed);
	q = open_peer(&p, 5000, &e);
	r = q ? qmp_execute(q, "query-status", NULL, &e) : NULL;
	check(r == NULL && e.kind == ERR_QEMU &&
	    strstr(e.msg, "malformed JSON from QEMU while waiting for the "
	    "reply to 'query-status'") != NULL, "malformed JSON: ERR_QEMU: %s",
	    e.msg);
	err_clear(&e);
	r = q ? qmp_execute(q, "query-status", NULL, &e) : NULL;
	check(r == NULL && e.kind == ERR_QEMU &&
	    strstr(e.msg, "not a JSON object") != NULL,
	    "a reply that is not an object: ERR_QEMU: %s", e.msg);
	err_clear(&e);
	r = q ? qmp_execute(q, "query-status", NULL, &e) : NULL;
	check(r == NULL && e.kind == ERR_QEMU, "neither reply nor event: "
	    "ERR_QEMU: %s", e.msg);
	err_clear(&e);
	r = q ? qmp_execute(q, "query-status", NULL, &e) : NULL;
	check(r != NULL && strcmp(str_member(r, "status"), "paused") == 0,
	    "the connection still works after a malformed line");
	json_decref(r);
	qmp_close(q);
	peer_finish(&p, "malformed");
}

static void
s_wrong_id(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"query-name\",\"id\":2}\n");
	psend(p, fd, "{\"return\": {\"name\": \"stale\"}, \"id\": 99}\n"
	    "{\"return\": {\"name\": \"also stale\"}, \"id\": \"2\"}\n"
	    "{\"return\": {\"name\": \"ours\"}, \"id\": 2}\n");
}

static void
t_wrong_id(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;

	peer_start(&p, s_wrong_id);
	q = open_peer(&p, 5000, &e);
	r = q ? qmp_execute(q, "query-name", NULL, &e) : NULL;
	check(r != NULL && strcmp(str_member(r, "name"), "ours") == 0,
	    "replies with other ids are skipped");
	json_decref(r);
	qmp_close(q);
	peer_finish(&p, "wrong id");
}

static void
s_timeout(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"query-status\",\"id\":2}\n");
	pexpect(p, fd, "{\"execute\":\"query-name\",\"id\":3}\n");
	psend(p, fd, "{\"return\": {\"status\": \"late\"}, \"id\": 2}\n"
	    "{\"return\": {\"name\": \"vm\"}, \"id\": 3}\n");
}

static void
t_timeout(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;
	uint64_t t0, dt;

	peer_start(&p, s_timeout);
	q = open_peer(&p, 5000, &e);
	if (q != NULL)
		qmp_set_timeout(q, 300);
	t0 = now_mono_ms();
	r = q ? qmp_execute(q, "query-status", NULL, &e) : NULL;
	dt = now_mono_ms() - t0;
	check(r == NULL && e.kind == ERR_QEMU && dt >= 280 && dt < 1500 &&
	    strcmp(e.msg, "no reply to 'query-status' within 0.3 s") == 0,
	    "no reply: ERR_QEMU after %llu ms: %s", (unsigned long long)dt,
	    e.msg);
	err_clear(&e);
	if (q != NULL)
		qmp_set_timeout(q, 5000);
	r = q ? qmp_execute(q, "query-name", NULL, &e) : NULL;
	check(r != NULL && strcmp(str_member(r, "name"), "vm") == 0,
	    "the late reply to the abandoned command is skipped");
	json_decref(r);
	qmp_close(q);
	peer_finish(&p, "timeout");
}

static volatile sig_atomic_t alarms;

static void
on_alarm(int signo)
{
	(void)signo;
	alarms++;
}

static void
s_eintr(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"query-status\",\"id\":2}\n");
	psleep(300);
	psend(p, fd, "{\"return\": {}, \"id\": 2}\n");
}

static void
t_eintr(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct sigaction sa;
	struct itimerval it = { { 0, 5000 }, { 0, 5000 } }, off = { 0 };
	struct qmp *q;
	json_t *r;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);	/* no SA_RESTART */
	peer_start(&p, s_eintr);
	q = open_peer(&p, 5000, &e);
	setitimer(ITIMER_REAL, &it, NULL);
	r = q ? qmp_execute(q, "query-status", NULL, &e) : NULL;
	setitimer(ITIMER_REAL, &off, NULL);
	check(r != NULL && alarms > 5, "a wait interrupted by %d signals "
	    "still gets its reply (%s)", (int)alarms, e.msg);
	json_decref(r);
	signal(SIGALRM, SIG_DFL);
	qmp_close(q);
	peer_finish(&p, "EINTR");
}

static int
alarmed(void *opaque)
{
	(void)opaque;
	return alarms > 0;
}

static void
s_cancel(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"migrate\",\"id\":2}\n");
	pexpect(p, fd, "{\"execute\":\"migrate_cancel\",\"id\":3}\n");
	psend(p, fd, "{\"return\": {}, \"id\": 2}\n{\"return\": {\"c\": 1}, "
	    "\"id\": 3}\n");
}

static void
t_cancel(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct itimerval it = { { 0, 0 }, { 0, 100000 } };
	struct sigaction sa;
	struct qmp *q;
	json_t *r;
	uint64_t t0, dt;

	/* The signal handler sets a flag, as sig.c's does; the hook reads
	 * it, as a sig_caught() wrapper would. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	peer_start(&p, s_cancel);
	q = open_peer(&p, 5000, &e);
	alarms = 0;
	if (q != NULL)
		qmp_set_cancel(q, alarmed, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	t0 = now_mono_ms();
	r = q ? qmp_execute(q, "migrate", NULL, &e) : NULL;
	dt = now_mono_ms() - t0;
	signal(SIGALRM, SIG_DFL);
	check(r == NULL && e.kind == ERR_INTR && dt >= 80 && dt < 1000,
	    "a signal with the cancel hook set ends the wait with ERR_INTR "
	    "in %llu ms: %s", (unsigned long long)dt, e.msg);
	err_clear(&e);
	if (q != NULL)
		qmp_set_cancel(q, NULL, NULL);
	r = q ? qmp_execute(q, "migrate_cancel", NULL, &e) : NULL;
	check(json_integer_value(json_object_get(r, "c")) == 1,
	    "with the hook removed commands work; the late reply is skipped");
	json_decref(r);
	qmp_close(q);
	peer_finish(&p, "cancel");
}

static void
s_getfd(struct peer *p, int fd)
{
	static const char want[] = "{\"execute\":\"getfd\",\"arguments\":"
	    "{\"fdname\":\"fd0\"},\"id\":2}\n";
	char data[sizeof(want)];
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr mh;
	struct iovec iov;
	struct cmsghdr *cmsg;
	struct pollfd pfd = { fd, POLLIN, 0 };
	ssize_t n;
	int got = -1;

	pgreet(p, fd);
	memset(&mh, 0, sizeof(mh));
	iov.iov_base = data;
	iov.iov_len = sizeof(want) - 1;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	if (poll(&pfd, 1, PEER_WAIT_MS) != 1) {
		pfail(p, "peer: no getfd");
		return;
	}
	n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	if (n <= 0) {
		pfail(p, "peer: recvmsg: %s", strerror(errno));
		return;
	}
	for (cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg))
		if (cmsg->cmsg_level == SOL_SOCKET &&
		    cmsg->cmsg_type == SCM_RIGHTS)
			memcpy(&got, CMSG_DATA(cmsg), sizeof(int));
	if (got < 0) {
		pfail(p, "peer: no SCM_RIGHTS with the first bytes of getfd");
		return;
	}
	if (memcmp(data, want, (size_t)n) != 0)
		pfail(p, "peer: getfd bytes differ: '%.*s'", (int)n, data);
	pexpect(p, fd, want + n);
	/* Prove it is the client's pipe: write into it. */
	if (write(got, "hi", 2) != 2)
		pfail(p, "peer: cannot write to the passed fd");
	close(got);
	psend(p, fd, "{\"return\": {}, \"id\": 2}\n");
}

static void
t_getfd(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;
	char buf[3] = "";
	int pfd[2];

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return;
	peer_start(&p, s_getfd);
	q = open_peer(&p, 5000, &e);
	r = q ? qmp_execute_fd(q, "getfd", json_pack("{s:s}", "fdname",
	    "fd0"), pfd[1], &e) : NULL;
	check(r != NULL, "getfd with SCM_RIGHTS: reply (%s)", e.msg);
	json_decref(r);
	qmp_close(q);
	peer_finish(&p, "fd passing");
	close(pfd[1]);
	check(read(pfd[0], buf, 2) == 2 && memcmp(buf, "hi", 2) == 0,
	    "the peer wrote through the fd it received");
	close(pfd[0]);
}

/* Take the id out of the client's guest-sync-delimited line. */
static int64_t
psync(struct peer *p, int fd)
{
	json_t *j;
	char *line, c = 0;
	int64_t id = -1;

	if (pread_byte(p, fd, &c) < 0 || (unsigned char)c != 0xff) {
		pfail(p, "peer: expected 0xff first, got 0x%02x",
		    (unsigned char)c);
		return -1;
	}
	if ((line = pline(p, fd)) == NULL)
		return -1;
	j = json_loads(line, 0, NULL);
	if (json_unpack(j, "{s:s, s:{s:I}}", "execute", &(const char *){ 0 },
	    "arguments", "id", &id) < 0 || strncmp(line,
	    "{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":",
	    52) != 0)
		pfail(p, "peer: unexpected sync line '%s'", line);
	json_decref(j);
	free(line);
	return id;
}

static void
s_agent(struct peer *p, int fd)
{
	char buf[256];
	int64_t id;

	/* Leftovers of an earlier client, before and after a 0xff. */
	psend(p, fd, "{\"return\": 4242}\n{\"ret");
	if ((id = psync(p, fd)) < 0)
		return;
	snprintf(buf, sizeof(buf), "urn\": {}}\n{\"return\": 7}\ngarb\xff"
	    "{\"return\": 111}\n\xff{\"return\": %lld}\n", (long long)id);
	psend(p, fd, buf);
	pexpect(p, fd, "{\"execute\":\"guest-ping\"}\n");
	psend(p, fd, "{\"return\": {}}\n");
	/* A reply that comes too late: the client resyncs. */
	pexpect(p, fd, "{\"execute\":\"guest-info\"}\n");
	psleep(400);
	psend(p, fd, "{\"return\": {\"version\": \"late\"}}\n");
	if ((id = psync(p, fd)) < 0)
		return;
	snprintf(buf, sizeof(buf), "\xff{\"return\": %lld}\n", (long long)id);
	psend(p, fd, buf);
	pexpect(p, fd, "{\"execute\":\"guest-info\"}\n");
	psend(p, fd, "{\"return\": {\"version\": \"9.9\"}}\n");
}

static void
t_agent(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;
	int ma = -1, mi = -1, mc = -1;

	peer_start(&p, s_agent);
	q = qmp_open_agent(p.addr, 5000, &e);
	check(q != NULL, "agent: guest-sync-delimited through stale input "
	    "(%s)", e.msg);
	if (q != NULL) {
		qmp_version(q, &ma, &mi, &mc);
		check(ma == 0 && mi == 0 && mc == 0 && qmp_greeting(q) == NULL,
		    "agent: no greeting, version 0.0.0");
		r = qmp_execute(q, "guest-ping", NULL, &e);
		check(json_is_object(r), "agent: a command without an id, "
		    "the next reply is its (%s)", e.msg);
		json_decref(r);
		qmp_set_timeout(q, 200);
		r = qmp_execute(q, "guest-info", NULL, &e);
		check(r == NULL && e.kind == ERR_QEMU, "agent: no reply in "
		    "time: %s", e.msg);
		err_clear(&e);
		qmp_set_timeout(q, 5000);
		r = qmp_execute(q, "guest-info", NULL, &e);
		check(strcmp(str_member(r, "version"), "9.9") == 0,
		    "agent: resynchronised before the next command; the late "
		    "reply is not taken (%s)", e.msg);
		json_decref(r);
	}
	qmp_close(q);
	peer_finish(&p, "agent");
}

static void
s_silent(struct peer *p, int fd)
{
	psleep(700);
}

static void
t_agent_silent(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	uint64_t t0 = now_mono_ms(), dt;

	peer_start(&p, s_silent);
	q = qmp_open_agent(p.addr, 300, &e);
	dt = now_mono_ms() - t0;
	check(q == NULL && e.kind == ERR_QEMU && dt < 1500 &&
	    strstr(e.msg, "is the guest agent running?") != NULL,
	    "agent that never answers: bounded, %llu ms: %s",
	    (unsigned long long)dt, e.msg);
	qmp_close(q);
	peer_finish(&p, "silent agent");
}

static void
t_no_greeting(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	uint64_t t0 = now_mono_ms(), dt;

	peer_start(&p, s_silent);
	q = open_peer(&p, 300, &e);
	dt = now_mono_ms() - t0;
	check(q == NULL && e.kind == ERR_QEMU && dt < 1500 &&
	    strstr(e.msg, "no QMP greeting from") != NULL,
	    "no greeting: bounded, %llu ms: %s", (unsigned long long)dt,
	    e.msg);
	peer_finish(&p, "no greeting");
}

static void
s_bad_greeting(struct peer *p, int fd)
{
	psend(p, fd, "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
}

static void
t_bad_greeting(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;

	peer_start(&p, s_bad_greeting);
	q = open_peer(&p, 2000, &e);
	check(q == NULL && e.kind == ERR_QEMU &&
	    strstr(e.msg, "is not a QMP monitor") != NULL,
	    "a greeting without a version is refused: %s", e.msg);
	peer_finish(&p, "bad greeting");
}

static void
s_greet_only(struct peer *p, int fd)
{
	pgreet(p, fd);
}

static void
t_connect_retry(void)
{
	struct peer p = { 0 }, r = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	uint64_t t0, dt;

	p.listen_delay_ms = 300;
	t0 = now_mono_ms();
	peer_start(&p, s_greet_only);
	q = open_peer(&p, 5000, &e);
	dt = now_mono_ms() - t0;
	check(q != NULL && dt >= 250, "a socket that appears later is "
	    "retried (%llu ms) (%s)", (unsigned long long)dt, e.msg);
	qmp_close(q);
	peer_finish(&p, "connect retry (ENOENT)");

	r.refuse_ms = 300;
	t0 = now_mono_ms();
	peer_start(&r, s_greet_only);
	q = open_peer(&r, 5000, &e);
	dt = now_mono_ms() - t0;
	check(q != NULL && dt >= 250, "a refused connection is retried "
	    "(%llu ms) (%s)", (unsigned long long)dt, e.msg);
	qmp_close(q);
	peer_finish(&r, "connect retry (ECONNREFUSED)");
}

static void
t_connect_fail(void)
{
	struct qmp_config cfg = QMP_CONFIG_INIT;
	struct err e = ERR_INIT;
	struct qmp *q;
	char path[128];
	uint64_t t0, dt;
	int fd;

	t0 = now_mono_ms();
	q = qmp_open("/nonexistent-snapctl-dir/vm.qmp", 5000, &e);
	dt = now_mono_ms() - t0;
	check(q == NULL && e.kind == ERR_QEMU && dt < 500 &&
	    strcmp(e.msg, "cannot connect to '/nonexistent-snapctl-dir/"
	    "vm.qmp': No such file or directory") == 0,
	    "no such directory: fails at once (%llu ms): %s",
	    (unsigned long long)dt, e.msg);

	err_clear(&e);
	snprintf(path, sizeof(path), "%s/never.qmp", tmpdir);
	cfg.connect_ms = 300;
	t0 = now_mono_ms();
	q = qmp_open_with(path, &cfg, &e);
	dt = now_mono_ms() - t0;
	check(q == NULL && e.kind == ERR_QEMU && dt >= 280 && dt < 1500 &&
	    e.sys_errno == ENOENT, "a socket that never appears: retried "
	    "for connect_ms (%llu ms)", (unsigned long long)dt);

	err_clear(&e);
	snprintf(path, sizeof(path), "%s/file", tmpdir);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	t0 = now_mono_ms();
	q = qmp_open(path, 5000, &e);
	dt = now_mono_ms() - t0;
	check(q == NULL && e.kind == ERR_QEMU && dt < 500 &&
	    strstr(e.msg, "not a socket") != NULL,
	    "a file that is not a socket: fails at once: %s", e.msg);
	unlink(path);

	err_clear(&e);
	q = qmp_open("tcp:127.0.0.1", 1000, &e);
	check(q == NULL && e.kind == ERR_USAGE, "tcp: without a port: %s",
	    e.msg);
}

static void
s_tcp(struct peer *p, int fd)
{
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"query-name\",\"id\":2}\n");
	psend(p, fd, "{\"return\": {}, \"id\": 2}\n");
}

static void
t_tcp(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	json_t *r;

	p.tcp = 1;
	peer_start(&p, s_tcp);
	q = open_peer(&p, 5000, &e);
	check(q != NULL, "tcp:127.0.0.1:PORT connects (%s)", e.msg);
	r = q ? qmp_execute_fd(q, "getfd", NULL, 0, &e) : NULL;
	check(r == NULL && e.kind == ERR_FAIL && strstr(e.msg, "TCP"),
	    "fd passing over TCP is refused cleanly: %s", e.msg);
	err_clear(&e);
	r = q ? qmp_execute(q, "query-name", NULL, &e) : NULL;
	check(json_is_object(r), "and the connection is still fine");
	json_decref(r);
	err_clear(&e);
	r = q ? qmp_execute(q, "query-name", json_pack("[i]", 1), &e) : NULL;
	check(r == NULL && e.kind == ERR_FAIL, "arguments that are not an "
	    "object are refused (and freed): %s", e.msg);
	qmp_close(q);
	peer_finish(&p, "tcp");
}

#define FLOOD 5000

static void
s_flood(struct peer *p, int fd)
{
	struct buf b = BUF_INIT;
	int i;

	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"query-name\",\"id\":2}\n");
	for (i = 0; i < FLOOD; i++)
		buf_addf(&b, "{\"event\": \"E\", \"data\": {\"i\": %d}, "
		    "\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n",
		    i);
	buf_addstr(&b, "{\"return\": {}, \"id\": 2}\n");
	psend_len(p, fd, b.data, b.len);
	buf_release(&b);
}

static void
t_event_flood(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp *q;
	struct qmp_event *ev, *first = NULL;
	json_t *r;
	int n = 0;

	peer_start(&p, s_flood);
	q = open_peer(&p, 5000, &e);
	r = q ? qmp_execute(q, "query-name", NULL, &e) : NULL;
	json_decref(r);
	while (q != NULL && (ev = qmp_pop_event(q)) != NULL) {
		if (n++ == 0)
			first = ev;
		else
			qmp_event_free(ev);
	}
	check(n == QMP_MAX_EVENTS && first != NULL && json_integer_value(
	    json_object_get(first->data, "i")) == FLOOD - QMP_MAX_EVENTS,
	    "an event flood is capped: the newest %d kept (%d)",
	    QMP_MAX_EVENTS, n);
	qmp_event_free(first);
	qmp_close(q);
	peer_finish(&p, "event flood");
}

/*
 * 200,000 small events and 300 whose few KiB of JSON cost some 70 times
 * that once parsed, all before the reply; then an event a waiter wants.
 */
#define BIGFLOOD 200000
#define FATFLOOD 300

static void
s_bigflood(struct peer *p, int fd)
{
	struct buf b = BUF_INIT;
	char pad[257];
	int i, j;

	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	pgreet(p, fd);
	pexpect(p, fd, "{\"execute\":\"query-name\",\"id\":2}\n");
	psend(p, fd, "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 7, "
	    "\"microseconds\": 0}}\n");
	/* In pieces: the peer's own memory is not what is measured. */
	for (i = 0; i < BIGFLOOD && p->fail[0] == '\0'; i++) {
		buf_addf(&b, "{\"event\": \"BLOCK_IO_ERROR\", \"data\": "
		    "{\"i\": %d, \"device\": \"drive0\", \"pad\": \"%s\"}, "
		    "\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n",
		    i, pad);
		if (b.len > 60000 || i == BIGFLOOD - 1) {
			if (psend_len(p, fd, b.data, b.len) < 0)
				pfail(p, "peer: send: %s", strerror(errno));
			buf_reset(&b);
		}
	}
	for (i = 0; i < FATFLOOD && p->fail[0] == '\0'; i++) {
		buf_addf(&b, "{\"event\": \"FAT\", \"data\": {\"i\": %d, "
		    "\"a\": [{}", i);
		for (j = 0; j < 2000; j++)
			buf_addstr(&b, ",{}");
		buf_addstr(&b, "]}, \"timestamp\": {\"seconds\": 2, "
		    "\"microseconds\": 0}}\n");
		if (psend_len(p, fd, b.data, b.len) < 0)
			pfail(p, "peer: send: %s", strerror(errno));
		buf_reset(&b);
	}
	psend(p, fd, "{\"return\": {\"name\": \"vm\"}, \"id\": 2}\n");
	psleep(200);
	psend(p, fd, "{\"event\": \"WANTED\", \"data\": {\"n\": 1}, "
	    "\"timestamp\": {\"seconds\": 9, \"microseconds\": 0}}\n");
	psleep(100);
	buf_release(&b);
}

/*
 * ASan keeps 256 MiB of freed memory from reuse by default, which would
 * hide what the queue holds in the peak RSS; 16 MiB still catches a use
 * after free of anything recent.  ASAN_OPTIONS overrides it.
 */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);

const char *
__asan_default_options(void)
{
	return "quarantine_size_mb=16";
}
#endif

/*
 * The process's peak resident set, in KiB (-1 when unknown); reset first
 * (to what is resident now) so earlier tests' peaks do not count.
 */
static long
vm_hwm_kib(int reset)
{
	FILE *f;
	char line[256];
	long v = -1;

	if (reset && (f = fopen("/proc/self/clear_refs", "w")) != NULL) {
		fputs("5", f);
		if (fclose(f) != 0)
			return -1;
	}
	if ((f = fopen("/proc/self/status", "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "VmHWM:", 6) == 0)
			v = strtol(line + 6, NULL, 10);
	fclose(f);
	return v;
}

static void
t_event_bytes(void)
{
	struct peer p = { 0 };
	struct err e = ERR_INIT;
	struct qmp_queue_stats st = { 0 };
	struct qmp *q;
	struct qmp_event *ev;
	json_t *r = NULL;
	long hwm0, hwm1;
	long long last_small = -1, last_fat = -1;

	hwm0 = vm_hwm_kib(1);
	peer_start(&p, s_bigflood);
	q = open_peer(&p, 30000, &e);
	check(q != NULL, "event bytes: connected (%s)", e.msg);
	if (q == NULL) {
		peer_finish(&p, "event bytes");
		return;
	}
	r = qmp_execute(q, "query-name", NULL, &e);
	check(json_is_object(r) && strcmp(str_member(r, "name"), "vm") == 0,
	    "the reply arrives after %d events (%s)", BIGFLOOD + FATFLOOD + 1,
	    e.msg);
	json_decref(r);
	qmp_queue_stats(q, &st);
	check(st.events <= QMP_MAX_EVENTS && st.bytes <= QMP_MAX_EVENT_BYTES,
	    "the queue stays within its bounds: %zu events, %zu bytes",
	    st.events, st.bytes);
	check(st.events + st.dropped == BIGFLOOD + FATFLOOD + 1,
	    "every event is queued or counted as dropped (%zu + %llu)",
	    st.events, (unsigned long long)st.dropped);
	hwm1 = vm_hwm_kib(0);
	check(hwm0 > 0 && hwm1 - hwm0 < 64 * 1024, "peak RSS grew by %ld KiB "
	    "(parsed, the fat events alone would take some 180 MiB)",
	    hwm1 - hwm0);
	ev = qmp_wait_event(q, "RESUME", NULL, 0, &e);
	check(ev != NULL && ev->timestamp == 7.0, "a RESUME queued before a "
	    "flood of other events is still there");
	qmp_event_free(ev);
	ev = qmp_wait_event(q, "WANTED", NULL, 5000, &e);
	check(ev != NULL && json_integer_value(json_object_get(ev->data,
	    "n")) == 1, "a named wait finds the event that comes after the "
	    "flood (%s)", e.msg);
	qmp_event_free(ev);
	while ((ev = qmp_pop_event(q)) != NULL) {
		if (strcmp(ev->name, "BLOCK_IO_ERROR") == 0)
			last_small = json_integer_value(json_object_get(
			    ev->data, "i"));
		else if (strcmp(ev->name, "FAT") == 0)
			last_fat = json_integer_value(json_object_get(
			    ev->data, "i"));
		qmp_event_free(ev);
	}
	check(last_small == BIGFLOOD - 1 && last_fat == FATFLOOD - 1,
	    "the newest of each kind stayed queued (%lld, %lld)", last_small,
	    last_fat);
	qmp_close(q);
	peer_finish(&p, "event bytes");
}

int
main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/snapctl-unit-qmp.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);

	t_basic();
	t_byte_by_byte();
	t_events();
	t_wait_event_timeout();
	t_error_reply();
	t_disconnect();
	t_huge();
	t_overcap();
	t_malformed();
	t_wrong_id();
	t_timeout();
	t_eintr();
	t_cancel();
	t_getfd();
	t_agent();
	t_agent_silent();
	t_no_greeting();
	t_bad_greeting();
	t_connect_retry();
	t_connect_fail();
	t_tcp();
	t_event_flood();
	t_event_bytes();

	rmdir(tmpdir);
	return tap_done();
}
