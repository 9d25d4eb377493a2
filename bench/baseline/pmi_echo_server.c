/*
 * pmi_echo_server: the floor for pmibridge's server benchmarks (bench/, issue 5).
 *
 * A minimal single-threaded epoll server that speaks just enough PMI-1 for the load generator
 * (bench/baseline/pmi_load_client.c) and nothing more: no parsing beyond the command name, no
 * KVS, no validation, one write per reply. Whatever pmibridge spends above this is its own cost.
 *
 *   cmd=initack pmiid=N   -> the 4-line handshake reply (initack + set size/rank/debug), as hydra
 *   cmd=init ...          -> cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1
 *   cmd=get ...           -> cmd=get_result rc=0 value=<--value>   (same bytes as pmibridge's
 *                            answer for key=PMI_process_mapping: (vector,(0,1,SIZE)))
 *   cmd=get ... key=bc-R  -> the business card rank R put in B4's wire-up (pmi_wireup_client.c:
 *                            tcp://127.0.0.1:<10000+R>/ then R zero-padded to 100 digits),
 *                            derived from the key: the floor stores nothing, yet the client's
 *                            check of every answer passes
 *   cmd=put ...           -> cmd=put_result rc=0   (not stored: see above)
 *   cmd=barrier_in        -> cmd=barrier_out rc=0 to everyone, once SIZE connections are in
 *   cmd=finalize          -> cmd=finalize_ack rc=0, then close (exit when SIZE have finalized)
 *   anything else         -> cmd=error rc=-1
 *
 * PMI-2 (src/protocol/pmi2-frame.ts), on a connection whose init line asked pmi_version=2: the
 * answer `cmd=response_to_init rc=0 pmi_version=2 pmi_subversion=0`, then 6-byte length-prefixed
 * frames both ways, the same bytes pmibridge answers:
 *   cmd=fullinit;pmirank=R;  -> cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=R;
 *                               size=SIZE;appnum=0;debugged=FALSE;pmiverbose=FALSE;
 *   cmd=kvs-get;…;key=K;     -> cmd=kvs-get-response;rc=0;found=TRUE;value=<--value>;  (one canned
 *                               frame), or for key=bc-R the business card, as for PMI-1
 *   cmd=kvs-put;…            -> cmd=kvs-put-response;rc=0;   (not stored)
 *   cmd=kvs-fence;           -> cmd=kvs-fence-response;rc=0; to everyone: the same barrier as
 *                               barrier_in (a job may mix both)
 *   cmd=finalize;            -> cmd=finalize-response;rc=0;, then close
 *   anything else            -> cmd=error;rc=-1;msg=unknown_command;
 *
 * Transports (any combination):
 *   --unix PATH           listen on a Unix stream socket
 *   --tcp                 listen on 127.0.0.1, ephemeral port (only loopback, never elsewhere)
 *   --spawn N -- PROG ... start N copies of PROG, each with a socketpair end on fd 3 and
 *                         PMI_FD=3 PMI_RANK=i PMI_SIZE=N (what hydra and `pmibridge run` give)
 * Other options: --size N (job size: barrier and exit count; default 1, or N with --spawn),
 *                --value V, --timeout SECONDS (hard limit, default 300).
 * Scales to many connections (B4's 1,024 ranks, 10,000 idle clients): the open-file limit is
 * raised to the hard limit at start, the listen backlog is 4096, the connection table grows.
 * Prints `unix PATH` / `tcp 127.0.0.1:PORT` lines and then `ready` on stdout.
 * Exit status: 0 when SIZE connections finalized (and with --spawn every child exited 0), else 1.
 *
 * Build: cc -O2 -o pmi_echo_server pmi_echo_server.c   (Linux only: epoll, SOCK_CLOEXEC)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IN_MAX 4096

struct conn {
    int fd;
    int in_barrier;
    int finalized;
    int pmi2; /* frames since its init line asked pmi_version=2 */
    size_t inlen;
    char in[IN_MAX];
    char *out; /* pending bytes when a write could not complete (never with lock-step clients) */
    size_t outlen;
};

/* Indexed by fd; grown on demand. max_fd bounds the barrier's scan. */
static struct conn **conns;
static int conns_cap = 0;
static int max_fd = -1;
static int epfd = -1;
static int job_size = 1;
static int barrier_count = 0;
static int finalized_count = 0;
static int open_spawned = 0;
static pid_t *spawned_pids;
static const char *value = NULL;
static char get_reply[1200];
static size_t get_reply_len;
static char get_reply2[1200]; /* the PMI-2 kvs-get-response frame, header included */
static size_t get_reply2_len;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static void add_conn(int fd, int spawned)
{
    if (fd >= conns_cap) {
        int cap = conns_cap ? conns_cap : 1024;
        while (cap <= fd) cap *= 2;
        struct conn **grown = realloc(conns, (size_t)cap * sizeof *grown);
        if (!grown) die("realloc");
        memset(grown + conns_cap, 0, (size_t)(cap - conns_cap) * sizeof *grown);
        conns = grown;
        conns_cap = cap;
    }
    if (fd > max_fd) max_fd = fd;
    struct conn *c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd = fd;
    conns[fd] = c;
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    (void)spawned;
}

static void close_conn(struct conn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    if (c->in_barrier) barrier_count--;
    free(c->out);
    free(c);
}

/* Write all of it, or queue the rest and wait for EPOLLOUT. */
static void send_bytes(struct conn *c, const char *data, size_t len)
{
    if (c->outlen == 0) {
        ssize_t n = write(c->fd, data, len);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return; /* the read side will see the error */
            n = 0;
        }
        if ((size_t)n == len) return;
        data += n;
        len -= (size_t)n;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.fd = c->fd };
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
    char *grown = realloc(c->out, c->outlen + len);
    if (!grown) die("realloc");
    memcpy(grown + c->outlen, data, len);
    c->out = grown;
    c->outlen += len;
}

static void flush_out(struct conn *c)
{
    ssize_t n = write(c->fd, c->out, c->outlen);
    if (n <= 0) return;
    memmove(c->out, c->out + n, c->outlen - (size_t)n);
    c->outlen -= (size_t)n;
    if (c->outlen == 0) {
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = c->fd };
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

#define SEND_LIT(c, s) send_bytes((c), (s), sizeof(s) - 1)

/* A PMI-2 frame: the `%6u` length header, then the body. */
static void send_frame(struct conn *c, const char *body, size_t len)
{
    char buf[1300];
    if (len > sizeof buf - 7) return; /* never: every body here is short */
    snprintf(buf, sizeof buf, "%6u", (unsigned)len);
    memcpy(buf + 6, body, len);
    send_bytes(c, buf, 6 + len);
}

#define SEND_FRAME_LIT(c, s) send_frame((c), (s), sizeof(s) - 1)

/* Everyone in the barrier is released (barrier_in and kvs-fence alike). */
static void enter_barrier(struct conn *c)
{
    if (c->in_barrier) return;
    c->in_barrier = 1;
    if (++barrier_count < job_size) return;
    barrier_count = 0;
    for (int fd = 0; fd <= max_fd; fd++) {
        struct conn *o = conns[fd];
        if (o && o->in_barrier) {
            o->in_barrier = 0;
            if (o->pmi2) SEND_FRAME_LIT(o, "cmd=kvs-fence-response;rc=0;");
            else SEND_LIT(o, "cmd=barrier_out rc=0\n");
        }
    }
}

/* One PMI-2 frame body (NUL-terminated). Returns 0, or -1 when the connection must be closed. */
static int handle_frame(struct conn *c, const char *body)
{
    if (strncmp(body, "cmd=kvs-get;", 12) == 0) {
        const char *k = strstr(body, ";key=bc-");
        if (k && k[8] >= '0' && k[8] <= '9') {
            int rank = atoi(k + 8);
            char buf[256];
            int n = snprintf(buf, sizeof buf, "cmd=kvs-get-response;rc=0;found=TRUE;value=tcp://127.0.0.1:%d/%0100d;", 10000 + rank, rank);
            send_frame(c, buf, (size_t)n);
        } else {
            send_bytes(c, get_reply2, get_reply2_len);
        }
    } else if (strncmp(body, "cmd=kvs-put;", 12) == 0) {
        SEND_FRAME_LIT(c, "cmd=kvs-put-response;rc=0;");
    } else if (strncmp(body, "cmd=kvs-fence;", 14) == 0) {
        enter_barrier(c);
    } else if (strncmp(body, "cmd=fullinit;", 13) == 0) {
        const char *p = strstr(body, ";pmirank=");
        int rank = p ? atoi(p + 9) : 0;
        char buf[256];
        int n = snprintf(buf, sizeof buf, "cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=%d;size=%d;appnum=0;debugged=FALSE;pmiverbose=FALSE;", rank, job_size);
        send_frame(c, buf, (size_t)n);
    } else if (strncmp(body, "cmd=finalize;", 13) == 0) {
        SEND_FRAME_LIT(c, "cmd=finalize-response;rc=0;");
        c->finalized = 1;
        finalized_count++;
        return -1;
    } else {
        SEND_FRAME_LIT(c, "cmd=error;rc=-1;msg=unknown_command;");
    }
    return 0;
}

/* Returns 0, or -1 when the connection must be closed after this line. */
static int handle_line(struct conn *c, char *line, size_t len)
{
    line[len] = '\0';
    if (strncmp(line, "cmd=get ", 8) == 0) {
        const char *k = strstr(line, " key=bc-");
        if (k && k[8] >= '0' && k[8] <= '9') {
            int rank = atoi(k + 8);
            char buf[256];
            int n = snprintf(buf, sizeof buf, "cmd=get_result rc=0 value=tcp://127.0.0.1:%d/%0100d\n", 10000 + rank, rank);
            send_bytes(c, buf, (size_t)n);
        } else {
            send_bytes(c, get_reply, get_reply_len);
        }
    } else if (strncmp(line, "cmd=put ", 8) == 0) {
        SEND_LIT(c, "cmd=put_result rc=0\n");
    } else if (strncmp(line, "cmd=init ", 9) == 0) {
        if (strstr(line, " pmi_version=2")) {
            c->pmi2 = 1; /* frames from the next byte on */
            SEND_LIT(c, "cmd=response_to_init rc=0 pmi_version=2 pmi_subversion=0\n");
        } else {
            SEND_LIT(c, "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n");
        }
    } else if (strncmp(line, "cmd=initack ", 12) == 0) {
        const char *p = strstr(line, "pmiid=");
        int rank = p ? atoi(p + 6) : 0;
        char buf[256];
        int n = snprintf(buf, sizeof buf, "cmd=initack rc=0 rank=%d size=%d appnum=0 debug=0\ncmd=set size=%d\ncmd=set rank=%d\ncmd=set debug=0\n", rank, job_size, job_size, rank);
        send_bytes(c, buf, (size_t)n);
    } else if (strncmp(line, "cmd=barrier_in", 14) == 0) {
        enter_barrier(c);
    } else if (strncmp(line, "cmd=finalize", 12) == 0) {
        SEND_LIT(c, "cmd=finalize_ack rc=0\n");
        c->finalized = 1;
        finalized_count++;
        return -1;
    } else {
        SEND_LIT(c, "cmd=error rc=-1 msg=unknown_command\n");
    }
    return 0;
}

static void on_readable(struct conn *c)
{
    ssize_t n = read(c->fd, c->in + c->inlen, IN_MAX - 1 - c->inlen);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
        close_conn(c);
        return;
    }
    c->inlen += (size_t)n;
    size_t start = 0;
    for (;;) {
        if (c->pmi2) {
            /* A frame: 6 header bytes (spaces and digits, atoi'd), then the body. */
            size_t avail = c->inlen - start;
            if (avail < 6) break;
            char hdr[7];
            memcpy(hdr, c->in + start, 6);
            hdr[6] = '\0';
            size_t len = (size_t)atoi(hdr);
            if (6 + len > IN_MAX - 1) { /* never from the bench's clients */
                close_conn(c);
                return;
            }
            if (avail < 6 + len) break;
            char *body = c->in + start + 6;
            char saved = body[len]; /* the next frame's first byte, or free space */
            body[len] = '\0';
            int r = handle_frame(c, body);
            body[len] = saved;
            if (r < 0) {
                close_conn(c);
                return;
            }
            start += 6 + len;
            continue;
        }
        char *nl = memchr(c->in + start, '\n', c->inlen - start);
        if (!nl) break;
        size_t len = (size_t)(nl - (c->in + start));
        if (handle_line(c, c->in + start, len) < 0) {
            close_conn(c); /* after finalize_ack (written synchronously above) */
            return;
        }
        start += len + 1;
    }
    memmove(c->in, c->in + start, c->inlen - start);
    c->inlen -= start;
    if (c->inlen == IN_MAX - 1) c->inlen = 0; /* an overlong line: drop it (never happens here) */
}

static int listen_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket(unix)");
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path) {
        fprintf(stderr, "unix path too long\n");
        exit(1);
    }
    strcpy(a.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind(unix)");
    if (listen(fd, 4096) < 0) die("listen(unix)");
    printf("unix %s\n", path);
    return fd;
}

static int listen_tcp(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket(tcp)");
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind(tcp)");
    if (listen(fd, 4096) < 0) die("listen(tcp)");
    socklen_t alen = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &alen);
    printf("tcp 127.0.0.1:%d\n", ntohs(a.sin_port));
    return fd;
}

static void spawn_ranks(int n, char **argv)
{
    spawned_pids = calloc((size_t)n, sizeof *spawned_pids);
    if (!spawned_pids) die("calloc");
    for (int i = 0; i < n; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            if (sv[1] == 3) {
                fcntl(3, F_SETFD, 0); /* already fd 3: just keep it across exec */
            } else if (dup2(sv[1], 3) < 0) {
                _exit(126);
            }
            char num[32];
            setenv("PMI_FD", "3", 1);
            snprintf(num, sizeof num, "%d", i);
            setenv("PMI_RANK", num, 1);
            snprintf(num, sizeof num, "%d", n);
            setenv("PMI_SIZE", num, 1);
            execvp(argv[0], argv);
            _exit(127);
        }
        spawned_pids[i] = pid;
        close(sv[1]);
        set_nonblock(sv[0]);
        add_conn(sv[0], 1);
        open_spawned++;
    }
}

int main(int argc, char **argv)
{
    const char *unix_path = NULL;
    int tcp = 0, spawn_n = 0, size_given = 0;
    double timeout = 300;
    char **prog = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--unix") && i + 1 < argc) unix_path = argv[++i];
        else if (!strcmp(argv[i], "--tcp")) tcp = 1;
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) { job_size = atoi(argv[++i]); size_given = 1; }
        else if (!strcmp(argv[i], "--value") && i + 1 < argc) value = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout = atof(argv[++i]);
        else if (!strcmp(argv[i], "--spawn") && i + 1 < argc) spawn_n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--")) { prog = argv + i + 1; break; }
        else {
            fprintf(stderr, "usage: %s [--unix PATH] [--tcp] [--size N] [--value V] [--timeout S] [--spawn N -- prog args...]\n", argv[0]);
            return 2;
        }
    }
    if (spawn_n > 0 && (!prog || !prog[0])) {
        fprintf(stderr, "--spawn needs -- prog\n");
        return 2;
    }
    if (spawn_n > 0 && !size_given) job_size = spawn_n;
    if (job_size < 1) job_size = 1;
    char defval[64];
    if (!value) {
        snprintf(defval, sizeof defval, "(vector,(0,1,%d))", job_size);
        value = defval;
    }
    get_reply_len = (size_t)snprintf(get_reply, sizeof get_reply, "cmd=get_result rc=0 value=%s\n", value);
    int body2 = snprintf(get_reply2 + 6, sizeof get_reply2 - 6, "cmd=kvs-get-response;rc=0;found=TRUE;value=%s;", value);
    char hdr2[8];
    snprintf(hdr2, sizeof hdr2, "%6d", body2);
    memcpy(get_reply2, hdr2, 6);
    get_reply2_len = 6 + (size_t)body2;
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl; /* one fd per connection: take all the kernel lets us */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    int lfds[2] = { -1, -1 };
    if (unix_path) lfds[0] = listen_unix(unix_path);
    if (tcp) lfds[1] = listen_tcp();
    for (int k = 0; k < 2; k++) {
        if (lfds[k] < 0) continue;
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfds[k] };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfds[k], &ev) < 0) die("epoll_ctl(listen)");
    }
    printf("ready\n");
    fflush(stdout);
    if (spawn_n > 0) spawn_ranks(spawn_n, prog);

    double deadline = now_s() + timeout;
    struct epoll_event evs[256];
    int timed_out = 0;
    while (finalized_count < job_size) {
        if (spawn_n > 0 && open_spawned == 0) break;
        int n = epoll_wait(epfd, evs, 256, 1000);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        if (now_s() > deadline) {
            timed_out = 1;
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfds[0] || fd == lfds[1]) {
                for (int burst = 0; burst < 64; burst++) {
                    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) break;
                    if (fd == lfds[1]) {
                        int one = 1;
                        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    }
                    add_conn(cfd, 0);
                }
                continue;
            }
            struct conn *c = conns[fd];
            if (!c) continue;
            if ((evs[i].events & EPOLLOUT) && c->outlen) flush_out(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                int was_spawned = spawn_n > 0;
                on_readable(c);
                if (was_spawned && !conns[fd]) open_spawned--;
            }
        }
    }
    int status_ok = finalized_count >= job_size && !timed_out;
    if (timed_out) fprintf(stderr, "pmi_echo_server: timed out after %.0f s\n", timeout);
    if (spawn_n > 0) {
        if (timed_out)
            for (int i = 0; i < spawn_n; i++) kill(spawned_pids[i], SIGKILL);
        for (int i = 0; i < spawn_n; i++) {
            int st;
            if (wait(&st) < 0) break;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) status_ok = 0;
        }
    }
    if (unix_path) unlink(unix_path);
    return status_ok ? 0 : 1;
}
