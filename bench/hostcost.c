/* hostcost.c - what this machine charges for the things an edge does most: a system call,
 * waking another process and being woken back, a fork, a page fault. Measured at the start
 * of a run, so that figures from different machines (or from one host on different days)
 * can be compared: a process per session pays these per message and per session, and one
 * virtual machine's hypervisor can make them ten times another's. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define HC_SYSCALLS   100000
#define HC_WAKES      5000
#define HC_FORKS      100
#define HC_FAULT_PAGES 1024

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static double syscall_us(void)
{
    double t0 = now_us();

    for (int i = 0; i < HC_SYSCALLS; i++)
        syscall(SYS_getppid);
    return (now_us() - t0) / HC_SYSCALLS;
}

/* One byte to a child over a pipe and one back: two wake-ups, two context switches. */
static double wake_round_trip_us(void)
{
    int to[2], from[2];
    double t0, us = -1;
    char b = 0;
    pid_t pid;

    if (pipe(to) == -1)
        return -1;
    if (pipe(from) == -1) {
        close(to[0]);
        close(to[1]);
        return -1;
    }
    pid = fork();
    if (pid == 0) {
        close(to[1]);
        close(from[0]);
        while (read(to[0], &b, 1) == 1 && write(from[1], &b, 1) == 1)
            ;
        _exit(0);
    }
    close(to[0]);
    close(from[1]);
    if (pid > 0) {
        int i = 0;

        t0 = now_us();
        for (; i < HC_WAKES; i++)
            if (write(to[1], &b, 1) != 1 || read(from[0], &b, 1) != 1)
                break;
        if (i == HC_WAKES)
            us = (now_us() - t0) / HC_WAKES;
    }
    close(to[1]);
    close(from[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return us;
}

static double fork_us(void)
{
    double t0 = now_us();

    for (int i = 0; i < HC_FORKS; i++) {
        pid_t pid = fork();

        if (pid == 0)
            _exit(0);
        if (pid < 0 || waitpid(pid, NULL, 0) != pid)
            return -1;
    }
    return (now_us() - t0) / HC_FORKS;
}

/* First touch of fresh anonymous pages, the mapping and unmapping shared among them. */
static double page_fault_us(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), len = HC_FAULT_PAGES * page;
    double t0 = now_us();
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return -1;
    madvise(p, len, MADV_NOHUGEPAGE);   /* a fault per page, whatever THP is set to */
    for (size_t off = 0; off < len; off += page)
        p[off] = 1;
    munmap(p, len);
    return (now_us() - t0) / HC_FAULT_PAGES;
}

void hostcost_measure(struct hostcost *h)
{
    h->syscall_us = syscall_us();
    h->wake_round_trip_us = wake_round_trip_us();
    h->fork_us = fork_us();
    h->page_fault_us = page_fault_us();
}

void hostcost_print(FILE *f, const struct hostcost *h)
{
    fprintf(f, "This machine's own costs, measured now (to compare runs across machines: a "
            "process per session pays them per message and per session): a system call "
            "%.2f µs, a wake-up round trip between two processes %.1f µs, a fork of this "
            "program with exit and reap %.0f µs, a page fault %.2f µs.\n\n",
            h->syscall_us, h->wake_round_trip_us, h->fork_us, h->page_fault_us);
}
