/* iotagg_driver - both ends of an apps/iotagg.c session, on libcessna-endpoint, for the
 * demo (scripts/demo-iotagg.sh).
 *
 *   iotagg_driver server --listen HOST:PORT [--seed N]
 *   iotagg_driver client --edge HOST:PORT[,HOST:PORT...] [--seed N] [--batches N]
 *
 * The client is a gateway: it sends batches of readings (tests/t_iotagg.h: 120 readings
 * from 40 regular sensors and a few one-batch ones, spikes above the alert limit), each
 * only after the server acknowledged the window of the previous one, and prints what came
 * back. The server prints "ready listen=ADDR", then a line per window report, checked
 * against the readings it knows from the same seed; it answers each with "ACK N", which
 * the app passes down to the client. Each side exits 0 when everything it got is what the
 * readings say (the edge's [app] section must be IOT_APP_CONFIG of t_iotagg.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "../t_iotagg.h"

static uint64_t seed = 1;

static int server(const char *listen)
{
    static struct iot_model m;
    static char alerts[1 << 14], client[1 << 16];
    char err[300], why[400];
    size_t at = 0;                           /* alerts[at..]: still to come in this window */
    int batch = 0, fed = 0, bad = 0, nalerts = 0;

    int lfd = cessna_ep_listen(listen, err, sizeof(err));
    if (lfd < 0) {
        fprintf(stderr, "iotagg_driver: %s\n", err);
        return 1;
    }
    printf("ready listen=%.*s:%d\n", (int)(strrchr(listen, ':') - listen), listen,
           addr_local_port(lfd));
    fflush(stdout);
    struct cessna_ep *ep = cessna_ep_accept(lfd, err, sizeof(err));
    if (!ep) {
        fprintf(stderr, "iotagg_driver: accept: %s\n", err);
        return 1;
    }
    for (;;) {
        const void *data;
        long n = cessna_ep_recv(ep, &data);
        if (n == CESSNA_EP_CLOSED)
            break;
        if (n < 0) {
            fprintf(stderr, "iotagg_driver: server: %s\n", cessna_ep_error(ep));
            return 1;
        }
        if (fed == batch) {                  /* the first message of this batch's window */
            alerts[0] = client[0] = 0;
            iot_model_batch(&m, seed, fed++, client, sizeof(client), alerts, sizeof(alerts));
        }
        if (n > 6 && memcmp(data, "ALERT ", 6) == 0) {
            nalerts++;
            if (strncmp(alerts + at, data, (size_t)n) != 0 || alerts[at + n] != IOT_SEP) {
                printf("server: unexpected %.*s\n", (int)n, (const char *)data);
                bad++;
            }
            at += (size_t)n + 1;
            continue;
        }
        batch++;
        const char *first = memchr(data, '\n', (size_t)n);
        if (iot_model_window(&m, batch, data, (size_t)n, why, sizeof(why)) < 0) {
            printf("server: window %d is wrong: %s\n", batch, why);
            bad++;
        } else {
            const char *line2 = first ? first + 1 : "";
            printf("server: %.*s, %d alert(s); e.g. %.*s\n", (int)(first - (const char *)data),
                   (const char *)data, nalerts, (int)strcspn(line2, "\n"), line2);
        }
        fflush(stdout);
        at = 0;
        nalerts = 0;
        char ack[32];
        if (cessna_ep_send(ep, ack, (size_t)snprintf(ack, sizeof(ack), "ACK %d", batch)) < 0)
            return 1;
    }
    printf("server: %d windows, %s\n", batch, bad ? "SOME DIFFER from the readings" :
           "each one as computed from the readings (count, min, max, mean exactly; "
           "percentiles within 3.1%)");
    return bad != 0;
}

static int client(const char *edges, int batches)
{
    static struct iot_model m;
    static char want[1 << 16], got[1 << 16], buf[IOT_PER_BATCH * 48], unused[1 << 14];
    size_t off[IOT_PER_BATCH + 1];
    char err[300];
    int alerts = 0, refused = 0;

    struct cessna_ep *ep = cessna_ep_connect(edges, err, sizeof(err));
    if (!ep) {
        fprintf(stderr, "iotagg_driver: %s\n", err);
        return 1;
    }
    printf("client: session %llu\n", (unsigned long long)cessna_ep_session_id(ep));
    fflush(stdout);
    for (int b = 0; b < batches; b++) {
        int k, n = iot_messages(seed, b, buf, sizeof(buf), off);
        char ack[32];
        for (k = 0; k < n; k++)
            if (cessna_ep_send(ep, buf + off[k], off[k + 1] - off[k]) < 0)
                goto fail;
        unused[0] = 0;
        iot_model_batch(&m, seed, b, want, sizeof(want), unused, sizeof(unused));
        snprintf(ack, sizeof(ack), "ACK %d", b + 1);
        iot_put(want, sizeof(want), ack);
        for (;;) {
            const void *data;
            long len = cessna_ep_recv(ep, &data);
            if (len < 0)
                goto fail;
            char msg[128];
            snprintf(msg, sizeof(msg), "%.*s", (int)len, (const char *)data);
            iot_put(got, sizeof(got), msg);
            alerts += strncmp(msg, "ALERT ", 6) == 0;
            refused += strncmp(msg, "REFUSED ", 8) == 0;
            if (strcmp(msg, ack) == 0)
                break;
        }
        iot_model_end(&m);
    }
    if (cessna_ep_close(ep, 10000) < 0)
        goto fail;
    cessna_ep_free(ep);
    printf("client: %d batches of %d readings sent; %d alerts and %d refusals came back, %s\n",
           batches, IOT_PER_BATCH, alerts, refused,
           strcmp(got, want) == 0 ? "exactly those the readings make" : "NOT those the readings make");
    return strcmp(got, want) != 0;
fail:
    fprintf(stderr, "iotagg_driver: client: %s\n", cessna_ep_error(ep));
    return 1;
}

int main(int argc, char **argv)
{
    const char *addr = NULL;
    int batches = 12;

    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0 || strcmp(argv[i], "--edge") == 0)
            addr = argv[i + 1];
        else if (strcmp(argv[i], "--seed") == 0)
            seed = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--batches") == 0)
            batches = atoi(argv[i + 1]);
    }
    if (argc < 2 || !addr || batches < 1) {
        fprintf(stderr, "usage: iotagg_driver server --listen HOST:PORT [--seed N]\n"
                        "       iotagg_driver client --edge HOST:PORT[,...] [--seed N] [--batches N]\n");
        return 2;
    }
    if (strcmp(argv[1], "server") == 0)
        return server(addr);
    return strcmp(argv[1], "client") == 0 ? client(addr, batches) : 2;
}
