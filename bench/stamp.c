/*
 * The COMMAND of bench/run's contention figure: appends one line
 * "START END" (CLOCK_MONOTONIC, nanoseconds) to the file named by argv[1].
 * START is taken first thing in main, END just before the write, so the gap
 * between one holder's END and the next holder's START is the handoff: the
 * holder's command exits -> its lock tool reaps it, releases -> a waiter
 * wakes, takes the lock, starts its command. Lines never overlap when the
 * lock excludes; bench/run checks that too.
 *
 * Built by bench/run with `cc -O2 -static` (or dynamically when no static
 * libc is installed) into its temporary directory.
 */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static long long ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
    long long start = ns();
    char line[64];
    int fd, n;

    if (argc != 2)
        return 2;
    fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return 125;
    n = snprintf(line, sizeof line, "%lld %lld\n", start, ns());
    if (write(fd, line, (size_t)n) != n)
        return 125;
    return 0;
}
