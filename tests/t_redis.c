/* t_redis.c - see t_redis.h. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "t_helpers.h"
#include "t_redis.h"

#define REDIS_SERVER "/usr/bin/redis-server"

/* Does redis at addr answer PING? */
static int pong(const char *addr)
{
    char err[128], buf[16] = "";
    int fd = addr_connect(addr, err, sizeof(err)), ok = 0;

    if (fd < 0)
        return 0;
    if (write(fd, "PING\r\n", 6) == 6 && t_read_n(fd, buf, 7, 1000) == 7)
        ok = memcmp(buf, "+PONG\r\n", 7) == 0;
    close(fd);
    return ok;
}

void t_redis_start(struct t_redis *r, const char *dir)
{
    char port[16];

    if (access(REDIS_SERVER, X_OK))
        cr_skip_test("redis-server is not installed (scripts/install-deps.sh)");
    memset(r, 0, sizeof(*r));
    for (int attempt = 0; attempt < 5 && !r->pid; attempt++) {
        char err[128];
        int fd = addr_listen("127.0.0.1:0", err, sizeof(err));
        cr_assert(fd >= 0, "%s", err);
        r->port = addr_local_port(fd);
        close(fd);
        snprintf(port, sizeof(port), "%d", r->port);
        snprintf(r->addr, sizeof(r->addr), "127.0.0.1:%d", r->port);
        char *argv[] = { REDIS_SERVER, "--port", port, "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--daemonize", "no", "--dir", (char *)dir, NULL };
        r->pid = t_start_raw(dir, "redis", argv, &r->out_fd);
        for (int i = 0; i < 100 && !pong(r->addr); i++) {
            if (t_wait(r->pid, 50) != -1) {   /* it died (the port was taken meanwhile) */
                close(r->out_fd);
                r->pid = 0;
                break;
            }
        }
    }
    cr_assert(r->pid && pong(r->addr), "redis-server answers PING at %s (log in %s)", r->addr,
              dir);
}

void t_redis_stop(struct t_redis *r)
{
    if (!r->pid)
        return;
    kill(r->pid, SIGTERM);
    if (t_wait(r->pid, 5000) == -1) {
        kill(r->pid, SIGKILL);
        t_wait(r->pid, 2000);
    }
    close(r->out_fd);
    r->pid = 0;
}
