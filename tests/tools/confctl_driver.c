/* confctl_driver - both ends of apps/confctl.c for `make demo-confctl`, on libcessna-endpoint.
 *
 *   confctl_driver backend --listen HOST:PORT   the conference backend (the server side):
 *       prints "ready listen=ADDR", takes one session and prints every event it gets; its
 *       policy: KICK anyone called mallory, MUTEALL when someone gets the floor, END the
 *       conference when the room is empty again. Exits when the session ends.
 *   confctl_driver gateway --edge HOST:PORT [--pace-ms N]   a room's gateway (the client
 *       side): sends a scripted meeting, N ms apart (default 150), printing what it sends
 *       and what comes back; a hand raised halfway is left up to expire. Exits 0 when the
 *       backend ended the session with CLOSE.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"

static int backend(const char *listen_addr)
{
    char err[256];
    int members = 0;
    int lfd = cessna_ep_listen(listen_addr, err, sizeof(err));
    struct cessna_ep *ep;

    if (lfd < 0) {
        fprintf(stderr, "backend: %s\n", err);
        return 1;
    }
    printf("ready listen=127.0.0.1:%d\n", addr_local_port(lfd));   /* for the demo script */
    fflush(stdout);
    if (!(ep = cessna_ep_accept(lfd, err, sizeof(err)))) {
        fprintf(stderr, "backend: %s\n", err);
        return 1;
    }
    for (;;) {
        const void *msg;
        long n = cessna_ep_recv(ep, &msg);
        if (n < 0) {
            printf("backend: session ended (%s)\n", n == CESSNA_EP_CLOSED ? "CLOSE" :
                   cessna_ep_error(ep));
            return n == CESSNA_EP_CLOSED ? 0 : 1;
        }
        char line[128], name[32] = "";
        snprintf(line, sizeof(line), "%.*s", (int)(n < 127 ? n : 127), (const char *)msg);
        line[strcspn(line, "\n")] = 0;
        printf("backend  <- %s\n", line);
        const char *reply = NULL;
        if (sscanf(line, "%*u JOINED %31s", name) == 1) {
            members++;
            if (strcmp(name, "mallory") == 0)
                reply = "KICK mallory";
        } else if (strstr(line, " LEFT ") || strstr(line, " KICKED ")) {
            if (--members == 0)
                reply = "END";
        } else if (strstr(line, " SPEAKER ")) {
            reply = "MUTEALL";
        }
        if (reply) {
            printf("backend  -> %s\n", reply);
            cessna_ep_send(ep, reply, strlen(reply));
        }
        fflush(stdout);
    }
}

static void *gateway_reader(void *p)
{
    struct cessna_ep *ep = p;

    for (;;) {
        const void *msg;
        long n = cessna_ep_recv(ep, &msg);
        if (n < 0) {
            printf("gateway: session ended (%s)\n", n == CESSNA_EP_CLOSED ? "CLOSE" :
                   cessna_ep_error(ep));
            fflush(stdout);
            return (void *)(long)(n == CESSNA_EP_CLOSED ? 0 : 1);
        }
        /* A ROSTER is several lines: indent all but the first. */
        const char *s = msg, *end = s + n;
        printf("gateway  <- ");
        for (const char *nl; s < end; s = nl + 1) {
            nl = memchr(s, '\n', (size_t)(end - s));
            if (!nl)
                nl = end;
            printf("%s%.*s\n", s == msg ? "" : "              ", (int)(nl - s), s);
        }
        fflush(stdout);
    }
}

static int gateway(const char *edge, int pace_ms)
{
    static const char *const meeting[] = {
        "JOIN alice", "JOIN bob", "JOIN carol", "JOIN mallory", "RAISE bob", "RAISE carol",
        "ROSTER", "SPEAK", "RAISE alice", "wait", "ROSTER", "LOWER carol", "UNMUTE bob",
        "LEAVE bob", "LEAVE carol", "LEAVE alice",
    };
    char err[256];
    struct cessna_ep *ep = cessna_ep_connect(edge, err, sizeof(err));
    pthread_t th;
    void *rc;

    if (!ep) {
        fprintf(stderr, "gateway: %s\n", err);
        return 1;
    }
    pthread_create(&th, NULL, gateway_reader, ep);
    for (size_t i = 0; i < sizeof(meeting) / sizeof(meeting[0]); i++) {
        usleep((useconds_t)pace_ms * 1000);
        if (strcmp(meeting[i], "wait") == 0) {   /* alice's hand stays up: it expires */
            printf("gateway: waiting 1.5 s (alice's hand is up)\n");
            fflush(stdout);
            usleep(1500 * 1000);
            continue;
        }
        printf("gateway  -> %s\n", meeting[i]);
        fflush(stdout);
        if (cessna_ep_send(ep, meeting[i], strlen(meeting[i])) < 0)
            break;
    }
    pthread_join(th, &rc);
    cessna_ep_free(ep);
    return (int)(long)rc;
}

int main(int argc, char **argv)
{
    const char *addr = NULL;
    int pace_ms = 150;

    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0 || strcmp(argv[i], "--edge") == 0)
            addr = argv[i + 1];
        else if (strcmp(argv[i], "--pace-ms") == 0)
            pace_ms = atoi(argv[i + 1]);
    }
    if (argc >= 2 && addr && strcmp(argv[1], "backend") == 0)
        return backend(addr);
    if (argc >= 2 && addr && strcmp(argv[1], "gateway") == 0)
        return gateway(addr, pace_ms);
    fprintf(stderr, "usage: confctl_driver backend --listen HOST:PORT\n"
                    "       confctl_driver gateway --edge HOST:PORT [--pace-ms N]\n");
    return 2;
}
