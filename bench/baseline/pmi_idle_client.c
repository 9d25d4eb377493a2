/*
 * pmi_idle_client: K idle PMI-1 connections for pmibridge's scale benchmark (bench/b6-idle.ts,
 * issue 5): what a server or relay holds while a large job sits between its PMI calls.
 *
 * Why C: one process holds all K sockets at a few hundred bytes each, so the machine's memory
 * and CPU go to the process being measured, not to the clients.
 *
 *   PMI_PORT=<unix:///path | /path | tcp://127.0.0.1:P | 127.0.0.1:P> pmi_idle_client --conns K [--first-id N]
 *
 * 1. Opens K connections as fast as the server accepts them (blocking connect: a full listen
 *    backlog makes connect wait, which is the accept rate being measured), writing on each
 *    `cmd=initack pmiid=N+j` and `cmd=init pmi_version=1 pmi_subversion=1` at once.
 * 2. Reads every reply (initack rc=0, the `cmd=set` lines, response_to_init rc=0), then prints
 *    `up K SECONDS` on stdout: SECONDS from the first connect to the last init reply.
 * 3. Holds the connections, idle, until SIGUSR1 (or SIGTERM); then sends `cmd=finalize` on each,
 *    reads every finalize_ack, closes, prints `done SECONDS` and exits 0 — so that the server
 *    (and a relay with --sessions K) ends with every rank finalized, and exits 0 too.
 *
 * RLIMIT_NOFILE is raised to its hard limit; K beyond it is an error, said as such. Every wait
 * is bounded (60 s per reply, 600 s of holding); any error exits 1 with a message.
 *
 * Build: cc -O2 -o pmi_idle_client pmi_idle_client.c   (Linux only: epoll)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PMI_PROG "pmi_idle_client"
#include "pmi_client_io.h"

/* Per connection: a small line buffer (the replies are short) and how far its exchange got. */
struct conn {
    int fd;
    int done; /* the awaited reply arrived */
    unsigned short len;
    char buf[240];
};

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "pmi_idle_client: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static double now_s(void)
{
    return (double)pmi_now_ns() / 1e9;
}

static struct sockaddr_storage addr;
static socklen_t addrlen;

/*
 * One reply line of connection c. `want` is the reply that completes its exchange
 * (response_to_init, or finalize_ack); initack and set lines on the way are checked and skipped.
 */
static void on_line(struct conn *c, const char *line, const char *want)
{
    if (!strncmp(line, "cmd=set ", 8)) return;
    if (!strstr(line, "rc=0")) fail("refused", line);
    if (!strncmp(line, want, strlen(want))) c->done = 1;
    else if (strncmp(line, "cmd=initack", 11)) fail("unexpected reply", line);
}

/* Read until every connection has had its `want` reply; returns when the last one arrived. */
static double await_all(int ep, struct conn *cs, int n, const char *want)
{
    int pending = n;
    struct epoll_event evs[256];
    while (pending > 0) {
        int k = epoll_wait(ep, evs, 256, 60000);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) fail("no reply within 60 s", want);
        for (int i = 0; i < k; i++) {
            struct conn *c = &cs[evs[i].data.u32];
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r == 0 && c->done) { /* closed after its finalize_ack: expected */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            if (r <= 0) fail("the server closed a connection", r < 0 ? strerror(errno) : want);
            c->len += (unsigned short)r;
            c->buf[c->len] = '\0';
            char *start = c->buf, *nl;
            while ((nl = strchr(start, '\n'))) {
                *nl = '\0';
                int was = c->done;
                on_line(c, start, want);
                if (c->done && !was) pending--;
                start = nl + 1;
            }
            c->len = (unsigned short)(c->len - (start - c->buf));
            memmove(c->buf, start, c->len);
            if (c->len == sizeof c->buf - 1) fail("reply line too long", NULL);
        }
    }
    return now_s();
}

int main(int argc, char **argv)
{
    int nconns = 0, first = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--conns")) nconns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--first-id")) first = atoi(argv[i + 1]);
        else fail("unknown option", argv[i]);
    }
    if (argc % 2 == 0) fail("missing value after", argv[argc - 1]);
    if (nconns < 1) fail("give --conns K", NULL);
    const char *port = getenv("PMI_PORT");
    if (!port) fail("PMI_PORT is not set", NULL);
    addrlen = pmi_parse_port(port, &addr);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)nconns + 16 > rl.rlim_cur) {
        char msg[96];
        snprintf(msg, sizeof msg, "%d connections need more descriptors than RLIMIT_NOFILE (%llu)", nconns, (unsigned long long)rl.rlim_cur);
        fail(msg, NULL);
    }

    /* SIGUSR1 / SIGTERM are taken with sigtimedwait, never by a handler. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGTERM);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct conn *cs = calloc((size_t)nconns, sizeof *cs);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!cs || ep < 0) fail("out of memory", NULL);

    double t0 = now_s();
    static const char init[] = "cmd=init pmi_version=1 pmi_subversion=1\n";
    for (int j = 0; j < nconns; j++) {
        char hello[128];
        int n = snprintf(hello, sizeof hello, "cmd=initack pmiid=%d\n%s", first + j, init);
        cs[j].fd = pmi_connect(&addr, addrlen);
        pmi_write_all(cs[j].fd, hello, (size_t)n);
        fcntl(cs[j].fd, F_SETFL, fcntl(cs[j].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)j };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[j].fd, &ev) < 0) fail("epoll_ctl", strerror(errno));
    }
    double t1 = await_all(ep, cs, nconns, "cmd=response_to_init");
    printf("up %d %.6f\n", nconns, t1 - t0);
    fflush(stdout);

    struct timespec hold = { .tv_sec = 600 };
    if (sigtimedwait(&sigs, NULL, &hold) < 0) fail("not told to close within 600 s", NULL);

    double t2 = now_s();
    static const char fin[] = "cmd=finalize\n";
    for (int j = 0; j < nconns; j++) {
        cs[j].done = 0;
        pmi_write_all(cs[j].fd, fin, sizeof fin - 1);
    }
    double t3 = await_all(ep, cs, nconns, "cmd=finalize_ack");
    for (int j = 0; j < nconns; j++) close(cs[j].fd);
    printf("done %.6f\n", t3 - t2);
    return 0;
}
