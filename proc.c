/*
 * proc.c - start a child with posix_spawnp (safe in a process with
 * threads, unlike fork() followed by anything but async-signal-safe
 * calls), and watch, stop and reap it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"
#include "util.h"

#include "banned.h"

#define PROC_POLL_MS 20
#define PROC_TERM_MS 3000

struct proc {
	pid_t pid;		/* 0 once reaped */
	int ended;
	int status;		/* waitpid's, once ended */
	char *log;
	char *what;
};

/* A child that ran nothing: exec failed, as a shell reports it. */
static void
cannot_run(struct proc *p, int logfd, const char *prog, int err)
{
	char *line = xasprintf("snapctl: cannot run '%s': %s\n", prog,
	    strerror(err));

	(void)write_full(logfd, line, strlen(line));
	free(line);
	p->ended = 1;
	p->status = W_EXITCODE(127, 0);
}

struct proc *
proc_spawn(char *const argv[], const char *log, const char *what,
    struct err *e)
{
	extern char **environ;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	struct proc *p = NULL;
	sigset_t mask, def;
	int logfd = -1, nullfd = -1, have_fa = 0, have_attr = 0, rc;
	pid_t pid;

	logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW |
	    O_CLOEXEC, 0600);
	if (logfd < 0) {
		err_sys(e, ERR_FAIL, "cannot create %s's log '%s'", what, log);
		goto out;
	}
	nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nullfd < 0) {
		err_sys(e, ERR_FAIL, "cannot open /dev/null");
		goto out;
	}
	if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
		goto spawn_failed;
	have_fa = 1;
	if ((rc = posix_spawnattr_init(&attr)) != 0)
		goto spawn_failed;
	have_attr = 1;
	sigemptyset(&mask);
	sigemptyset(&def);
	sigaddset(&def, SIGINT);
	sigaddset(&def, SIGTERM);
	sigaddset(&def, SIGHUP);
	sigaddset(&def, SIGPIPE);
	/* dup2 clears close-on-exec on the copies. */
	if ((rc = posix_spawn_file_actions_adddup2(&fa, nullfd,
	    STDIN_FILENO)) != 0 ||
	    (rc = posix_spawn_file_actions_adddup2(&fa, logfd,
	    STDOUT_FILENO)) != 0 ||
	    (rc = posix_spawn_file_actions_adddup2(&fa, logfd,
	    STDERR_FILENO)) != 0 ||
	    (rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID |
	    POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) != 0 ||
	    (rc = posix_spawnattr_setsigmask(&attr, &mask)) != 0 ||
	    (rc = posix_spawnattr_setsigdefault(&attr, &def)) != 0)
		goto spawn_failed;

	p = xcalloc(1, sizeof(*p));
	p->log = xstrdup(log);
	p->what = xstrdup(what);
	rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
	if (rc == 0)
		p->pid = pid;
	else if (rc == EAGAIN || rc == ENOMEM)
		goto spawn_failed;
	else
		cannot_run(p, logfd, argv[0], rc);
	goto out;

spawn_failed:
	err_errno(e, ERR_FAIL, rc, "cannot fork");
	proc_free(p);
	p = NULL;
out:
	if (have_fa)
		posix_spawn_file_actions_destroy(&fa);
	if (have_attr)
		posix_spawnattr_destroy(&attr);
	if (logfd >= 0)
		close(logfd);
	if (nullfd >= 0)
		close(nullfd);
	return p;
}

pid_t
proc_pid(const struct proc *p)
{
	return p != NULL ? p->pid : 0;
}

int
proc_wait(struct proc *p, int timeout_ms)
{
	struct timespec ts = { 0, PROC_POLL_MS * 1000000L };
	int waited = 0, status;
	pid_t r;

	while (!p->ended) {
		r = waitpid(p->pid, &status, timeout_ms < 0 ? 0 : WNOHANG);
		if (r == p->pid) {
			p->ended = 1;
			p->status = status;
			p->pid = 0;
			break;
		}
		if (r < 0 && errno != EINTR)
			return 0;
		if (timeout_ms < 0)
			continue;
		if (waited >= timeout_ms)
			return 0;
		nanosleep(&ts, NULL);
		waited += PROC_POLL_MS;
	}
	return 1;
}

/* The last non-empty line of the log, control characters made spaces. */
static void
log_tail(const char *path, char *out, size_t len)
{
	char buf[4096], *p, *end;
	ssize_t n;
	off_t size;
	int fd;

	out[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	n = size < 0 ? -1 : pread_full(fd, buf, sizeof(buf) - 1,
	    size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	end = buf + n;
	while (end > buf && (end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	p = strrchr(buf, '\n');
	p = p != NULL ? p + 1 : buf;
	for (end = p; *end != '\0'; end++)
		if ((unsigned char)*end < 0x20)
			*end = ' ';
	n = (ssize_t)strlen(p);
	if ((size_t)n >= len)
		n = (ssize_t)len - 1;
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
}

int
proc_alive(struct proc *p, struct err *e)
{
	char tail[512];
	int st;

	if (!proc_wait(p, 0))
		return 0;
	st = p->status;
	log_tail(p->log, tail, sizeof(tail));
	if (WIFEXITED(st))
		err_set(e, ERR_QEMU, "%s exited with status %d%s%s (log: '%s')",
		    p->what, WEXITSTATUS(st), *tail ? ": " : "", tail, p->log);
	else
		err_set(e, ERR_QEMU, "%s was killed by signal %d%s%s (log: "
		    "'%s')", p->what, WTERMSIG(st), *tail ? ": " : "", tail,
		    p->log);
	return -1;
}

int
proc_succeeded(const struct proc *p)
{
	return p != NULL && p->ended && WIFEXITED(p->status) &&
	    WEXITSTATUS(p->status) == 0;
}

void
proc_kill(struct proc *p)
{
	if (p == NULL || p->ended)
		return;
	kill(p->pid, SIGTERM);
	if (proc_wait(p, PROC_TERM_MS))
		return;
	kill(p->pid, SIGKILL);
	proc_wait(p, -1);
}

void
proc_free(struct proc *p)
{
	if (p == NULL)
		return;
	free(p->log);
	free(p->what);
	free(p);
}
