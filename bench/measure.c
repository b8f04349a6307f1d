/*
 * bench/run's process runner: `measure PROGRAM [ARG...]` starts PROGRAM
 * (an absolute path) with posix_spawn, reaps it with wait4(2), and writes
 * "WALL_NS CPU_NS MAXRSS_KB MINFLT WAIT_STATUS\n" to fd 3: the wall time
 * from spawn to reap, the CPU time (user + system) of the process and its
 * waited-for children, their peak RSS and their minor page faults.
 *
 * Why not time and reap from Python directly: at exec the kernel records
 * the replaced address space's high-water RSS as the new program's peak
 * RSS, and a posix_spawn from Python replaces Python's own (~17 MiB), so
 * every ru_maxrss would read as Python's. Spawned from this small static
 * program, a child's ru_maxrss starts from this program's few hundred KiB,
 * the same floor for a tool and for its anchor. The time is the same span
 * a shell sees: from spawn to reap, start-up and exit included.
 *
 * Built by bench/run with `cc -O2 -static` (dynamic when no static libc).
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
    struct rusage ru;
    long long start, end;
    pid_t pid;
    int status, n;
    char line[128];

    if (argc < 2)
        return 2;
    if (fcntl(3, F_SETFD, FD_CLOEXEC) != 0)
        return 125;
    start = ns();
    if (posix_spawn(&pid, argv[1], NULL, NULL, argv + 1, environ) != 0)
        return 127;
    if (wait4(pid, &status, 0, &ru) != pid)
        return 125;
    end = ns();
    n = snprintf(line, sizeof line, "%lld %lld %ld %ld %d\n", end - start,
                 (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
                     (long long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL,
                 ru.ru_maxrss, ru.ru_minflt, status);
    return write(3, line, (size_t)n) == n ? 0 : 125;
}
