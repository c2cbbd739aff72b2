/*
 * qmpconn.c - connecting the QMP client's socket (qmp_int.h): a UNIX path
 * or tcp:HOST:PORT, non-blocking, retried while QEMU is not listening yet,
 * bounded by a deadline and the cancel hook.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qmp_int.h"
#include "util.h"

#define QMP_RETRY_MS 50		/* pause between connection attempts */

/* Does the directory that would hold path exist? */
static int
dir_exists(const char *path)
{
	struct stat st;
	char *dir = path_dirname(path);
	int rc;

	rc = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
	free(dir);
	return rc;
}

/* Sleep before the next attempt; 0, or -1 past the deadline/cancelled. */
static int
retry_pause(struct qmp *q, uint64_t deadline)
{
	uint64_t now = now_mono_ms();
	int ms;

	if (now >= deadline || qmp_is_cancelled(q))
		return -1;
	ms = deadline - now < QMP_RETRY_MS ? (int)(deadline - now) :
	    QMP_RETRY_MS;
	poll(NULL, 0, ms);	/* EINTR: just an earlier retry */
	return 0;
}

/*
 * One attempt at a UNIX socket: the fd, or -1 with errno.  Non-blocking, so
 * a full listen backlog is EAGAIN rather than a hang.
 */
static int
try_unix(const char *path)
{
	struct sockaddr_un sun;
	int fd, saved;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	while (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		if (errno == EINTR)
			continue;
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int
qmp_connect_unix(struct qmp *q, const char *path, uint64_t deadline,
    struct err *e)
{
	struct stat st;
	int fd;

	for (;;) {
		fd = try_unix(path);
		if (fd >= 0)
			break;
		/* Not there yet, or QEMU not listening yet: retry.  A
		 * directory that does not exist will not grow a socket. */
		if (errno == ENOENT && !dir_exists(path))
			goto fail;
		if (errno == ECONNREFUSED && stat(path, &st) == 0 &&
		    !S_ISSOCK(st.st_mode))
			return err_set(e, ERR_QEMU, "cannot connect to '%s': "
			    "not a socket", path);
		if (errno != ENOENT && errno != ECONNREFUSED &&
		    errno != EAGAIN)
			goto fail;
		if (retry_pause(q, deadline) < 0)
			goto fail;
	}
	q->fd = fd;
	q->family = AF_UNIX;
	return 0;
fail:
	if (qmp_is_cancelled(q))
		return err_set(e, ERR_INTR, "interrupted while connecting "
		    "to '%s'", path);
	return err_sys(e, ERR_QEMU, "cannot connect to '%s'", path);
}

/* Split "tcp:HOST:PORT" (HOST may be "[v6]"); new strings. */
static int
split_tcp(const char *addr, char **host, char **port, struct err *e)
{
	const char *hp = addr + 4, *colon;
	size_t hlen;

	colon = strrchr(hp, ':');
	if (colon == NULL || colon == hp || colon[1] == '\0')
		return err_set(e, ERR_USAGE, "invalid address '%s': expected "
		    "tcp:HOST:PORT", addr);
	hlen = (size_t)(colon - hp);
	if (hp[0] == '[' && hlen >= 2 && hp[hlen - 1] == ']') {
		hp++;
		hlen -= 2;
	}
	*host = xstrndup(hp, hlen);
	*port = xstrdup(colon + 1);
	return 0;
}

/* One non-blocking TCP connect, bounded by the deadline. */
static int
try_tcp(struct qmp *q, const struct addrinfo *ai, uint64_t deadline,
    struct err *e)
{
	socklen_t len = sizeof(int);
	int fd, soerr = 0, rc;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
	    SOCK_NONBLOCK, ai->ai_protocol);
	if (fd < 0)
		return -1;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS && errno != EINTR)
		goto fail;
	rc = qmp_wait_fd(q, fd, POLLOUT, deadline, "connecting", e);
	if (rc == QMP_TIMEOUT) {
		errno = ETIMEDOUT;
		goto fail;
	}
	if (rc < 0) {
		errno = EINTR;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		goto fail;
	if (soerr != 0) {
		errno = soerr;
		goto fail;
	}
	return fd;
fail:
	rc = errno;
	close(fd);
	errno = rc;
	return -1;
}

int
qmp_connect_tcp(struct qmp *q, const char *addr, uint64_t deadline,
    struct err *e)
{
	struct addrinfo hints, *res = NULL, *ai;
	char *host = NULL, *port = NULL;
	int rc = -1, fd = -1, gai, saved = 0, family = AF_INET;

	if (split_tcp(addr, &host, &port, e) < 0)
		goto out;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	gai = getaddrinfo(host, port, &hints, &res);
	if (gai != 0) {
		err_set(e, ERR_QEMU, "cannot connect to '%s': %s", addr,
		    gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
		goto out;
	}
	for (;;) {
		for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
			fd = try_tcp(q, ai, deadline, NULL);
			if (fd < 0)
				saved = errno;
			else
				family = ai->ai_family;
		}
		if (fd >= 0 || saved != ECONNREFUSED ||
		    retry_pause(q, deadline) < 0)
			break;
	}
	if (fd < 0) {
		if (saved == EINTR && qmp_is_cancelled(q))
			err_set(e, ERR_INTR, "interrupted while connecting to "
			    "'%s'", addr);
		else
			err_errno(e, ERR_QEMU, saved, "cannot connect to '%s'",
			    addr);
		goto out;
	}
	q->fd = fd;
	q->family = family;
	rc = 0;
out:
	if (res != NULL)
		freeaddrinfo(res);
	free(host);
	free(port);
	return rc;
}
