/*
 * qmp-raw - talk raw JSON to a QMP or guest-agent unix socket, for the
 * tests, without snapctl (so a test can check snapctl against it).
 * Standalone: libc only (tests/lib/vm.sh compiles it with plain cc; make
 * helpers builds it too).
 *
 *   qmp-raw [-t SECS] SOCKET [JSON...]
 *	QMP: read the greeting, send qmp_capabilities, then send each JSON
 *	command (or each line of stdin when none is given) and print its
 *	reply, one line each.  Events that arrive meanwhile are skipped.
 *   qmp-raw -e [-t SECS] SOCKET [JSON...]
 *	The same, then print every event, one line each, flushed, until the
 *	socket closes or SECS pass (-t 0: no limit).  For watching MIGRATION
 *	events on a second monitor while snapctl works.
 *   qmp-raw -g [-t SECS] SOCKET [JSON...]
 *	Guest agent: send 0xFF, then guest-sync-delimited with a random id,
 *	skip everything up to the 0xFF sentinel and the reply with that id;
 *	then send each JSON command and print its reply.
 *
 *   qmp-raw -L [-t SECS] SOCKET FILE
 *	Listen on SOCKET (created under a temporary name, then renamed, so it
 *	accepts connections once it exists), accept one connection and copy
 *	what it sends to FILE until EOF: the receiving end of
 *	migrate {"uri":"unix:SOCKET"}, i.e. QEMU's raw migration stream.
 *   qmp-raw -C [-t SECS] SOCKET FILE
 *	Connect to SOCKET (retrying until it exists) and send FILE: feeds a
 *	saved stream to migrate-incoming {"uri":"unix:SOCKET"}.
 *
 * Exit status: 0 every reply was a "return", 1 some reply was an "error",
 * 2 connection, protocol or timeout failure (message on stderr).
 * -t SECS bounds the whole run (default 30; 0 = no limit).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int sock = -1;
static long long deadline_ms;		/* 0: none */
static int watching;			/* -e phase: a timeout ends it */
static int status;			/* the exit status so far */
static char rbuf[1 << 16];
static size_t rlen;
static char *line;			/* the last line read, NUL-terminated */
static size_t line_cap;

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fail(const char *what)
{
	fprintf(stderr, "qmp-raw: %s\n", what);
	exit(2);
}

static void send_all(const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(sock, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fail("write to socket failed");
		p += w;
		n -= (size_t)w;
	}
}

static void send_line(const char *json)
{
	send_all(json, strlen(json));
	send_all("\n", 1);
}

/* Read more bytes into rbuf; 0 on EOF.  Fails on timeout. */
static int fill(void)
{
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	ssize_t r;

	if (rlen == sizeof(rbuf))
		fail("reply line too long");
	for (;;) {
		int tmo = -1, pr;

		if (deadline_ms) {
			long long left = deadline_ms - mono_ms();

			if (left <= 0) {
				if (watching) {
					fflush(stdout);
					exit(status);
				}
				fail("timed out");
			}
			tmo = left > 1000000 ? 1000000 : (int)left;
		}
		pr = poll(&pfd, 1, tmo);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			fail("poll failed");
		if (pr == 0)
			continue;	/* re-check the deadline */
		r = recv(sock, rbuf + rlen, sizeof(rbuf) - rlen, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			fail("read from socket failed");
		rlen += (size_t)r;
		return r > 0;
	}
}

/* Next '\n'-terminated line into `line` (without "\r\n"); 0 on EOF. */
static int read_line(void)
{
	for (;;) {
		char *nl = memchr(rbuf, '\n', rlen);

		if (nl) {
			size_t n = (size_t)(nl - rbuf);

			if (n + 1 > line_cap) {
				line_cap = n + 1;
				line = realloc(line, line_cap);
				if (!line)
					fail("out of memory");
			}
			memcpy(line, rbuf, n);
			line[n] = 0;
			if (n && line[n - 1] == '\r')
				line[n - 1] = 0;
			rlen -= n + 1;
			memmove(rbuf, nl + 1, rlen);
			return 1;
		}
		if (!fill())
			return 0;
	}
}

/* Drop bytes up to and including a 0xFF sentinel. */
static void skip_to_sentinel(void)
{
	for (;;) {
		char *s = memchr(rbuf, 0xff, rlen);

		if (s) {
			rlen -= (size_t)(s + 1 - rbuf);
			memmove(rbuf, s + 1, rlen);
			return;
		}
		rlen = 0;
		if (!fill())
			fail("connection closed before the sync sentinel");
	}
}

/* Whether the top-level JSON object in s has the key `key`. */
static int has_top_key(const char *s, const char *key)
{
	size_t klen = strlen(key);
	int depth = 0, expect_key = 0;

	for (; *s; s++) {
		switch (*s) {
		case '{':
			depth++;
			expect_key = depth == 1;
			break;
		case '[':
			depth++;
			break;
		case '}':
		case ']':
			depth--;
			break;
		case ',':
			expect_key = depth == 1;
			break;
		case '"': {
			const char *start = ++s;

			while (*s && *s != '"') {
				if (*s == '\\' && s[1])
					s++;
				s++;
			}
			if (!*s)
				return 0;
			if (expect_key && (size_t)(s - start) == klen &&
			    memcmp(start, key, klen) == 0)
				return 1;
			expect_key = 0;
			break;
		}
		default:
			break;
		}
	}
	return 0;
}

/* Read until a reply (not an event); print it; 1 if it is an error. */
static int reply(int print)
{
	for (;;) {
		if (!read_line())
			fail("connection closed before the reply");
		if (!line[0] || has_top_key(line, "event"))
			continue;
		if (has_top_key(line, "return")) {
			if (print)
				printf("%s\n", line);
			return 0;
		}
		if (has_top_key(line, "error")) {
			if (print)
				printf("%s\n", line);
			return 1;
		}
		if (has_top_key(line, "QMP"))
			continue;
		fprintf(stderr, "qmp-raw: unexpected message: %s\n", line);
		exit(2);
	}
}

static void connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(path);

	if (n >= sizeof(sa.sun_path))
		fail("socket path too long");
	memcpy(sa.sun_path, path, n + 1);
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		fail("socket() failed");
	if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "qmp-raw: connect %s: %s\n", path,
			strerror(errno));
		exit(2);
	}
}

static void qga_sync(void)
{
	char cmd[128];
	unsigned id;
	long long want;

	id = (unsigned)(mono_ms() ^ (getpid() << 12)) & 0x7fffffff;
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%u}}",
		 id);
	send_all("\xff", 1);
	send_line(cmd);
	for (;;) {
		const char *r;

		skip_to_sentinel();
		if (!read_line())
			fail("connection closed during guest-sync-delimited");
		r = strstr(line, "\"return\"");
		if (!r)
			continue;
		r = strchr(r, ':');
		if (!r)
			continue;
		want = strtoll(r + 1, NULL, 10);
		if (want == (long long)id)
			return;
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: qmp-raw [-g|-e] [-t SECS] SOCKET [JSON...]\n"
		"       qmp-raw -L|-C [-t SECS] SOCKET FILE\n");
	exit(2);
}

static void check_deadline(void)
{
	if (deadline_ms && mono_ms() > deadline_ms)
		fail("timed out");
}

/* Copy in to out until EOF (out may be a socket). */
static void copy_fd(int in, int out)
{
	static char buf[1 << 20];

	for (;;) {
		struct pollfd pfd = { .fd = in, .events = POLLIN };
		ssize_t r, w, off = 0;

		check_deadline();
		if (poll(&pfd, 1, 1000) == 0)
			continue;
		r = read(in, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			fail("read failed");
		if (r == 0)
			return;
		while (off < r) {
			w = write(out, buf + off, (size_t)(r - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				fail("write failed");
			off += w;
		}
	}
}

static int stream_listen(const char *path, const char *file)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char tmp[sizeof(sa.sun_path)];
	int ls, fd, out;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		fail("socket path too long");
	memcpy(sa.sun_path, tmp, strlen(tmp) + 1);
	ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unlink(tmp);
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(ls, 1) < 0 || rename(tmp, path) < 0) {
		fprintf(stderr, "qmp-raw: listen %s: %s\n", path,
			strerror(errno));
		return 2;
	}
	out = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		fprintf(stderr, "qmp-raw: %s: %s\n", file, strerror(errno));
		return 2;
	}
	for (;;) {
		struct pollfd pfd = { .fd = ls, .events = POLLIN };

		check_deadline();
		if (poll(&pfd, 1, 1000) > 0)
			break;
	}
	fd = accept(ls, NULL, NULL);
	if (fd < 0)
		fail("accept failed");
	close(ls);
	unlink(path);
	copy_fd(fd, out);
	close(fd);
	if (fsync(out) < 0 || close(out) < 0)
		fail("writing the file failed");
	return 0;
}

static int stream_send(const char *path, const char *file)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(path);
	int in;

	in = open(file, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		fprintf(stderr, "qmp-raw: %s: %s\n", file, strerror(errno));
		return 2;
	}
	if (n >= sizeof(sa.sun_path))
		fail("socket path too long");
	memcpy(sa.sun_path, path, n + 1);
	for (;;) {
		sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (sock < 0)
			fail("socket() failed");
		if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		if (errno != ENOENT && errno != ECONNREFUSED) {
			fprintf(stderr, "qmp-raw: connect %s: %s\n", path,
				strerror(errno));
			return 2;
		}
		close(sock);
		check_deadline();
		nanosleep(&(struct timespec){ .tv_nsec = 50000000 }, NULL);
	}
	copy_fd(in, sock);
	close(in);
	shutdown(sock, SHUT_WR);
	close(sock);
	return 0;
}

int main(int argc, char **argv)
{
	int opt, guest = 0, events = 0, stream = 0, i;
	long secs = 30;
	char *end;

	while ((opt = getopt(argc, argv, "get:LC")) != -1) {
		switch (opt) {
		case 'L':
		case 'C':
			stream = opt;
			break;
		case 'g':
			guest = 1;
			break;
		case 'e':
			events = 1;
			break;
		case 't':
			errno = 0;
			secs = strtol(optarg, &end, 10);
			if (errno || *end || secs < 0)
				usage();
			break;
		default:
			usage();
		}
	}
	if (optind >= argc)
		usage();
	deadline_ms = secs ? mono_ms() + secs * 1000 : 0;
	if (stream) {
		if (argc - optind != 2)
			usage();
		return stream == 'L' ? stream_listen(argv[optind], argv[optind + 1])
				     : stream_send(argv[optind], argv[optind + 1]);
	}
	connect_to(argv[optind++]);

	if (guest) {
		qga_sync();
	} else {
		/* The greeting, then leave capabilities-negotiation mode. */
		if (!read_line() || !has_top_key(line, "QMP"))
			fail("no QMP greeting");
		send_line("{\"execute\":\"qmp_capabilities\"}");
		if (reply(0))
			fail("qmp_capabilities failed");
	}

	if (optind < argc) {
		for (i = optind; i < argc; i++) {
			send_line(argv[i]);
			status |= reply(1);
		}
	} else if (!events) {
		char *in = NULL;
		size_t cap = 0;
		ssize_t n;

		while ((n = getline(&in, &cap, stdin)) > 0) {
			if (in[n - 1] == '\n')
				in[n - 1] = 0;
			if (!in[0])
				continue;
			send_line(in);
			status |= reply(1);
		}
		free(in);
	}
	fflush(stdout);

	if (events) {
		/* Anything already buffered, then new lines until EOF. */
		watching = 1;
		while (read_line()) {
			if (has_top_key(line, "event")) {
				printf("%s\n", line);
				fflush(stdout);
			}
		}
	}
	close(sock);
	return status;
}
