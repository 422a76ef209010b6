/* t_redis.h - a real redis-server for the tests, a child of the test process. */
#ifndef CESSNA_T_REDIS_H
#define CESSNA_T_REDIS_H

#include <sys/types.h>

struct t_redis {
    pid_t pid;
    int out_fd;
    int port;
    char addr[64];      /* 127.0.0.1:PORT */
};

/* Start redis-server on a free loopback port in dir (no persistence, not daemonized) and
 * wait until it answers PING. Skips the test when redis-server is not installed. */
void t_redis_start(struct t_redis *r, const char *dir);
/* SIGTERM, then SIGKILL after 5 s. */
void t_redis_stop(struct t_redis *r);

#endif
