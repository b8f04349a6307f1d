/*
 * The floor of a lock wrap: what `ccci-lock --lock-dir DIR D -- COMMAND`
 * cannot avoid doing, and nothing more, for bench/run to measure the tool
 * against (the figure's "vs floor" column).
 *
 *   floor DIR D COMMAND [ARG...]
 *
 * Opens DIR (no symlink), creates or opens DIR/D.lock (no symlink), takes
 * an exclusive flock on it, checks that the file it locked is still the one
 * the name points at (the unlink-safe recheck: fstat against fstatat), and
 * retries if it is not; writes a one-line holder record with one pwrite;
 * starts COMMAND with vfork+execvp, waits for it, unlinks the lockfile
 * while still holding, and exits with COMMAND's status (128+N for a
 * signal). No parent-death signal, no subreaper, no lockfile watch, no
 * options, no configuration file, no message worth reading: those are what
 * the tool adds, and the ratio to this program says what they cost.
 *
 * Built by bench/run with `cc -O2 -static` (or dynamically when no static
 * libc is installed) into its temporary directory, like the other helpers.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    char name[512], record[128];
    struct stat held, named;
    int dir, fd, n, status;
    pid_t pid;

    if (argc < 4)
        return 2;
    if (snprintf(name, sizeof name, "%s.lock", argv[2]) >= (int)sizeof name)
        return 2;
    dir = open(argv[1], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir < 0)
        return 125;
    for (;;) {
        fd = openat(dir, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 || flock(fd, LOCK_EX) != 0 || fstat(fd, &held) != 0)
            return 125;
        if (fstatat(dir, name, &named, AT_SYMLINK_NOFOLLOW) == 0 &&
            named.st_dev == held.st_dev && named.st_ino == held.st_ino)
            break;
        close(fd); /* unlinked or replaced while we waited: again */
    }
    n = snprintf(record, sizeof record, "{\"pid\":%d}\n", (int)getpid());
    if (pwrite(fd, record, (size_t)n, 0) != n)
        return 125;
    pid = vfork();
    if (pid == 0) {
        execvp(argv[3], argv + 3);
        _exit(127);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return 125;
    unlinkat(dir, name, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
