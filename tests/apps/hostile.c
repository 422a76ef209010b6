/* hostile.c - a test app that tries, on request, what an app must not do on an edge node
 * (tests/it_sandbox.c). The first word of a client message picks the behaviour; anything
 * it manages to do is reported back to the client as "done ..." or "LEAK ...", so a test
 * sees it. Built out of tree against cessna.h alone, like any app.
 *
 *   ECHO ...            passthrough (to the server and back)
 *   SOCKET PORT         connect to 127.0.0.1:PORT and write a line
 *   OPEN PATH           create PATH and write to it
 *   READ PATH           read PATH and send its first bytes to the client
 *   THREAD PATH         start a thread that creates PATH
 *   FORK PATH           fork a child that creates PATH and lingers
 *   EXEC PATH           execve /bin/sh to create PATH
 *   KILLPARENT          kill(getppid(), SIGKILL): the worker's parent is the supervisor
 *   PTRACE              ptrace(PTRACE_SEIZE) the supervisor
 *   ESCAPE REL ABS      openat(REL) relative to every directory fd the worker holds (its
 *                       session directory), else open(ABS); send what it read
 *   FORGE               send made-up snapshot reports naming the supervisor's pid (a child
 *                       just started; a hot standby) on every socket the worker holds
 *   ABORT               abort() (a crash, not a violation: the session dies of signal 6)
 *   CLOSEFDS            close every descriptor from 3 up, the worker's own among them (the
 *                       report socket it sleeps on); no answer
 *   CLOSEFDSBIG         the same, then a 900 KB message to the server: it fails while it
 *                       waits for room in its ring, in the middle of a long record
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cessna.h"

static char arg1[512], arg2[512];

static void reply(const char *fmt, const char *a)
{
    char buf[600];
    int n = snprintf(buf, sizeof(buf), fmt, a);

    cessna_send_msg_to_client(buf, (size_t)n);
}

static void create_marker(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    if (fd >= 0) {
        if (write(fd, "escaped\n", 8) < 0)
            (void)0;
        close(fd);
    }
}

static void *thread_main(void *arg)
{
    create_marker(arg);
    return NULL;
}

static void send_file(int fd)
{
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);

    close(fd);
    buf[n > 0 ? n : 0] = 0;
    reply("LEAK %s", buf);
}

static void escape(const char *rel, const char *abs)
{
    int tried = 0, err = 0;

    for (int fd = 0; fd < 4096; fd++) {
        struct stat sb;
        if (fstat(fd, &sb) == -1 || !S_ISDIR(sb.st_mode))
            continue;
        tried++;
        int f = openat(fd, rel, O_RDONLY);
        if (f >= 0) {
            send_file(f);
            return;
        }
        err = errno;
    }
    if (!tried) {
        int f = open(abs, O_RDONLY);
        if (f >= 0) {
            send_file(f);
            return;
        }
        err = errno;
    }
    reply("DENIED %s", strerror(err));
}

/* common/shm.h's struct snap_report (version 2), as an app would copy it */
struct forged_report {
    uint32_t version, kind;
    int32_t status, pid;
    uint32_t hot;
    int32_t fd_no;
    uint64_t req, position, gen, bytes, pages_written, pages_total, write_ns, fork_ns;
    char text[200];
};

static void forge(void)
{
    struct forged_report r;
    int sent = 0;

    memset(&r, 0, sizeof(r));
    r.version = 2;
    r.pid = getppid();
    r.gen = ~0ull;
    for (int fd = 0; fd < 4096; fd++) {
        struct stat sb;
        if (fstat(fd, &sb) == -1 || !S_ISSOCK(sb.st_mode))
            continue;
        for (uint32_t kind = 1; kind <= 2; kind++) {
            r.kind = kind;
            r.hot = kind == 2;
            r.fd_no = fd;
            sent += send(fd, &r, sizeof(r), MSG_NOSIGNAL) == (ssize_t)sizeof(r);
        }
    }
    reply("done %s", sent ? "forged" : "no socket");
}

static void on_client(const void *data, size_t len)
{
    char cmd[1100];
    size_t n = len < sizeof(cmd) - 1 ? len : sizeof(cmd) - 1;

    memcpy(cmd, data, n);
    cmd[n] = 0;
    arg1[0] = arg2[0] = 0;
    sscanf(cmd, "%*s %511s %511s", arg1, arg2);

    if (strncmp(cmd, "SOCKET ", 7) == 0) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(arg1)),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
            write(fd, "hello from a worker\n", 20) == 20)
            reply("done %s", "connected");
        else
            reply("failed %s", strerror(errno));
        if (fd >= 0)
            close(fd);
    } else if (strncmp(cmd, "OPEN ", 5) == 0) {
        create_marker(arg1);
        reply("done %s", arg1);
    } else if (strncmp(cmd, "READ ", 5) == 0) {
        int fd = open(arg1, O_RDONLY);
        if (fd >= 0)
            send_file(fd);
        else
            reply("DENIED %s", strerror(errno));
    } else if (strncmp(cmd, "THREAD ", 7) == 0) {
        pthread_t t;
        int rc = pthread_create(&t, NULL, thread_main, arg1);
        if (rc == 0)
            pthread_join(t, NULL);
        reply("done %s", rc == 0 ? "thread" : strerror(rc));
    } else if (strncmp(cmd, "FORK ", 5) == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_NAME, "hostile-child");
            create_marker(arg1);
            sleep(30);
            _exit(0);
        }
        reply("done %s", pid > 0 ? "forked" : strerror(errno));
    } else if (strncmp(cmd, "EXEC ", 5) == 0) {
        char script[600];
        snprintf(script, sizeof(script), "echo escaped > %s", arg1);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        reply("failed %s", strerror(errno));
    } else if (strcmp(cmd, "KILLPARENT") == 0) {
        kill(getppid(), SIGKILL);
        reply("done %s", "killed");
    } else if (strcmp(cmd, "PTRACE") == 0) {
        long rc = ptrace(PTRACE_SEIZE, getppid(), 0, 0);
        reply("done %s", rc == 0 ? "seized" : strerror(errno));
    } else if (strncmp(cmd, "ESCAPE ", 7) == 0) {
        escape(arg1, arg2);
    } else if (strcmp(cmd, "FORGE") == 0) {
        forge();
    } else if (strcmp(cmd, "ABORT") == 0) {
        abort();
    } else if (strncmp(cmd, "CLOSEFDS", 8) == 0) {
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        if (strcmp(cmd, "CLOSEFDSBIG") == 0) {
            static char big[900 * 1024];
            memset(big, 'x', sizeof(big));
            cessna_send_msg_to_server(big, sizeof(big));
        }
    } else {
        cessna_send_msg_to_server(data, len);   /* ECHO and anything else */
    }
}

static void on_server(const void *data, size_t len)
{
    cessna_send_msg_to_client(data, len);
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "hostile",
    .recv_client_msg = on_client,
    .recv_server_msg = on_server,
};
