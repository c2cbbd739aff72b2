/*
 * qmp-at - act the instant a QMP event appears, for the tests that race
 * snapctl against QEMU's migration phases (tests/t-signals.sh).  A shell
 * loop polling an event log is ~100 ms late; this reacts within the read.
 *
 *   qmp-at [-t SECS] [-q JSON]... (-s SIG | -x JSON) SOCKET MATCH [CMD ARG...]
 *	Connect to the QMP SOCKET (a monitor of its own), send
 *	qmp_capabilities, then each -q JSON command, printing its reply.
 *	Start CMD, if given (it inherits stdin, stdout and stderr).
 *	Print every event, one line each, flushed.  At the first event that
 *	matches MATCH, "EVENT" or "EVENT:STATUS" (data.status, e.g.
 *	MIGRATION:completed), either send signal SIG (a number or INT, TERM,
 *	HUP, KILL) to CMD, or send JSON on the monitor; then print the line
 *	"# trigger MATCH".  With CMD: go on until CMD exits, then print
 *	events for 300 ms more.  Without CMD: stop once the reply to JSON
 *	came, printed as "# reply ...".
 *
 * Exit status: CMD's (128+N if a signal N killed it); without CMD 0.
 * 2 on a connection or protocol failure, or when -t SECS (default 120)
 * pass: CMD is then killed.  If MATCH never came, the line "# no trigger"
 * is printed (CMD's status still stands).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

static int sock = -1;
static char rbuf[1 << 16];
static size_t rlen;
static long long deadline;

static long long
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
die(const char *what)
{
	fprintf(stderr, "qmp-at: %s\n", what);
	exit(2);
}

static void
send_line(const char *s)
{
	size_t n = strlen(s);
	const char *p = s;

	while (n > 0) {
		ssize_t w = send(sock, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("write to the monitor failed");
		p += w;
		n -= (size_t)w;
	}
	if (send(sock, "\n", 1, MSG_NOSIGNAL) != 1)
		die("write to the monitor failed");
}

/*
 * The next complete line into out (NUL-terminated), waiting at most ms
 * (-1: until the deadline).  1: a line, 0: none yet, -1: EOF.
 */
static int
read_line(char *out, size_t cap, int ms)
{
	char *nl;
	struct pollfd p;
	ssize_t r;
	size_t n;

	for (;;) {
		nl = memchr(rbuf, '\n', rlen);
		if (nl != NULL) {
			n = (size_t)(nl - rbuf);
			if (n >= cap)
				die("line too long");
			memcpy(out, rbuf, n);
			out[n] = '\0';
			memmove(rbuf, nl + 1, rlen - n - 1);
			rlen -= n + 1;
			return 1;
		}
		if (rlen == sizeof(rbuf))
			die("line too long");
		if (mono_ms() >= deadline)
			return 0;
		p.fd = sock;
		p.events = POLLIN;
		if (poll(&p, 1, ms) <= 0)
			return 0;
		r = recv(sock, rbuf + rlen, sizeof(rbuf) - rlen, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		rlen += (size_t)r;
	}
}

/* Does the event line match "EVENT" or "EVENT:STATUS"? */
static int
matches(const char *line, const char *match)
{
	json_t *j = json_loads(line, 0, NULL);
	const char *colon = strchr(match, ':');
	const char *ev, *st;
	size_t elen = colon ? (size_t)(colon - match) : strlen(match);
	int m = 0;

	if (j == NULL)
		return 0;
	ev = json_string_value(json_object_get(j, "event"));
	st = json_string_value(json_object_get(json_object_get(j, "data"),
	    "status"));
	if (ev != NULL && strlen(ev) == elen && strncmp(ev, match, elen) == 0)
		m = colon == NULL || (st != NULL && strcmp(st, colon + 1) == 0);
	json_decref(j);
	return m;
}

static int
is_event(const char *line)
{
	return strstr(line, "\"event\"") != NULL &&
	    strstr(line, "\"return\"") == NULL &&
	    strstr(line, "\"error\"") == NULL;
}

/* Send a command, print its reply (and the events before it). */
static void
command(const char *json, const char *prefix)
{
	static char l[1 << 16];
	int r;

	send_line(json);
	for (;;) {
		r = read_line(l, sizeof(l), -1);
		if (r <= 0)
			die(r < 0 ? "the monitor closed" : "no reply in time");
		if (is_event(l) && strncmp(l, "{\"QMP\"", 6) != 0) {
			printf("%s\n", l);
			continue;
		}
		printf("%s%s\n", prefix, l);
		fflush(stdout);
		return;
	}
}

static int
parse_sig(const char *s)
{
	static const struct { const char *n; int s; } t[] = {
		{ "INT", SIGINT }, { "TERM", SIGTERM }, { "HUP", SIGHUP },
		{ "KILL", SIGKILL },
	};
	size_t i;
	char *end;
	long v;

	if (strncmp(s, "SIG", 3) == 0)
		s += 3;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(s, t[i].n) == 0)
			return t[i].s;
	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v <= 0 || v > 64)
		die("bad signal");
	return (int)v;
}

static void
usage(void)
{
	fprintf(stderr, "usage: qmp-at [-t SECS] [-q JSON]... (-s SIG | -x "
	    "JSON) SOCKET MATCH [CMD ARG...]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static char l[1 << 16];
	const char *pre[16], *xjson = NULL, *match;
	struct sockaddr_un a;
	int npre = 0, sig = 0, opt, i, r, st = 0, triggered = 0;
	int secs = 120, done = 0, rc = 0;
	pid_t child = -1;
	long long until = 0;

	while ((opt = getopt(argc, argv, "+t:q:s:x:")) != -1) {
		switch (opt) {
		case 't': secs = atoi(optarg); break;
		case 'q':
			if (npre == 16)
				usage();
			pre[npre++] = optarg;
			break;
		case 's': sig = parse_sig(optarg); break;
		case 'x': xjson = optarg; break;
		default: usage();
		}
	}
	if (argc - optind < 2 || (sig == 0) == (xjson == NULL) ||
	    (sig != 0 && argc - optind < 3))
		usage();
	match = argv[optind + 1];
	deadline = mono_ms() + (long long)secs * 1000;

	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	if (strlen(argv[optind]) >= sizeof(a.sun_path))
		die("socket path too long");
	strcpy(a.sun_path, argv[optind]);
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("cannot connect to the monitor");
	if (read_line(l, sizeof(l), -1) <= 0 || strstr(l, "\"QMP\"") == NULL)
		die("no QMP greeting");
	command("{\"execute\":\"qmp_capabilities\"}", "# reply ");
	for (i = 0; i < npre; i++)
		command(pre[i], "# reply ");

	if (argc - optind > 2) {
		fflush(stdout);
		child = fork();
		if (child < 0)
			die("fork failed");
		if (child == 0) {
			execvp(argv[optind + 2], argv + optind + 2);
			perror("qmp-at: exec");
			_exit(127);
		}
	}
	while (!done) {
		if (mono_ms() >= deadline) {
			printf("# timeout\n");
			if (child > 0) {
				kill(child, SIGKILL);
				waitpid(child, NULL, 0);
			}
			rc = 2;
			break;
		}
		r = read_line(l, sizeof(l), child > 0 ? 10 : 100);
		if (r < 0) {
			if (child < 0)
				die("the monitor closed");
			/* QEMU is gone: only CMD is left to wait for. */
			if (until == 0)
				waitpid(child, &st, 0);
			done = 1;
		} else if (r > 0) {
			printf("%s\n", l);
			if (!triggered && is_event(l) && matches(l, match)) {
				triggered = 1;
				if (sig != 0 && child > 0)
					kill(child, sig);
				printf("# trigger %s\n", match);
				if (xjson != NULL) {
					command(xjson, "# reply ");
					if (child < 0)
						done = 1;
				}
			}
			fflush(stdout);
		}
		if (child > 0 && !done && until == 0 &&
		    waitpid(child, &st, WNOHANG) == child)
			until = mono_ms() + 300;
		if (until != 0 && mono_ms() >= until)
			done = 1;
	}
	if (!triggered)
		printf("# no trigger\n");
	fflush(stdout);
	if (rc == 0 && child > 0)
		rc = WIFEXITED(st) ? WEXITSTATUS(st) :
		    WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 2;
	close(sock);
	return rc;
}
