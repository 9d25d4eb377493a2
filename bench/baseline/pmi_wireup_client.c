/*
 * pmi_wireup_client: the "business-card" wire-up load of pmibridge's benchmark B4 (bench/, issue 5).
 *
 * What an MPI job does at MPI_Init, per rank, lock-step (one request out at a time, as MPICH):
 *   put of its own key bc-<rank> (a ~122-byte value, performance-anchors.md §9:
 *   tcp://127.0.0.1:<10000+rank>/ then the rank zero-padded to 100 digits); barrier; get of all N
 *   keys one at a time (starting at its own, wrapping round, so the ranks do not all read the same
 *   key at once); barrier; finalize. Every get answer is checked against the value the owner put:
 *   a wrong or missing value is a failure (exit 1), so a server cannot win by answering garbage.
 *
 * Why C and one process for many ranks: the client side must be the same cheap, fixed cost for
 * every server measured (see pmi_load_client.c), and 1,024 Node or even C processes on 2 cores
 * would measure the scheduler more than the server. K connections in one process are driven
 * with epoll, each still strictly lock-step; the bench runs a few such processes.
 *
 * Connects as MPICH does: PMI_PORT (host:port, tcp://host:port, unix:///path, /path) + PMI_ID,
 * K connections with PMI_ID, PMI_ID+1, …, each sending `cmd=initack pmiid=ID` first (the rank is
 * the one the initack reply names); or PMI_FD (one connection, rank PMI_RANK, e.g. under
 * mpiexec.hydra). Untimed set-up: handshake, init, then a start barrier over the whole job.
 *
 * With --pmi-version 2 the same wire-up in PMI-2 (src/protocol/pmi2-frame.ts), as MPICH's PMI-2
 * client does it: no initack; the line `cmd=init pmi_version=2 pmi_subversion=0`, then frames:
 * fullinit with pmirank = the rank (PMI_ID+j, or PMI_RANK), whose answer names rank and size;
 * job-getid when no --kvsname; kvs-fence as every barrier; timed: kvs-put of bc-<rank>, kvs-fence,
 * N kvs-get (`jobid=K;srcid=-1;key=bc-R;`, each answer must be found=TRUE with the owner's card),
 * kvs-fence, finalize.
 *
 *   --conns K       connections (ranks) in this process (PMI_PORT only); default 1
 *   --size N        job size = the keys bc-0..bc-N-1 to get; default: the size the server reports
 *   --kvsname K     kvsname for put/get; default: asked with get_my_kvsname (untimed)
 *   --pmi-version V 1 (PMI-1 lines, the default) or 2 (PMI-2 frames, see above)
 *   --out DIR       write DIR/wireup-<pid>.json (else stdout)
 *
 * Output: CLOCK_MONOTONIC times in ns (comparable across the processes of one machine) of this
 * process's phase ends, so the runner can take the job's phases: start = first start-barrier
 * release seen; put_barrier / gets / final_barrier / finalize = when the LAST of this process's
 * ranks finished its put+barrier, its gets, the final barrier, its finalize_ack. Also the number
 * of gets and their summed and maximum round trip. Every wait is bounded (60 s).
 *
 * Build: cc -O2 -o pmi_wireup_client pmi_wireup_client.c   (Linux: epoll)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PMI_PROG "pmi_wireup_client"
#include "pmi_client_io.h"

#define VALUE_MAX 256
#define LINE_MAX_ 2048

enum state { S_PUT, S_BARRIER1, S_GET, S_BARRIER2, S_FINALIZE, S_DONE };

struct conn {
    int fd;
    int rank;
    enum state state;
    int got; /* gets answered so far */
    uint64_t sent_at;
    size_t len;
    char buf[4096];
};

static const char *kvsname;
static int job_size;
static int pmi2; /* --pmi-version 2: frames after the init line */
static uint64_t get_sum_ns, get_max_ns, gets_done;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "pmi_wireup_client: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* The business card of a rank: what it puts and what every get of bc-<rank> must return. */
static int card(int rank, char *out, size_t cap)
{
    return snprintf(out, cap, "tcp://127.0.0.1:%d/%0100d", 10000 + rank, rank);
}

/*
 * The value of attribute `name` in a reply line (pointer into the line, length in *len), or NULL.
 * Attributes are space-separated name=value words; `value` is last in every server's get_result.
 */
static const char *attr(const char *line, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = line; *p;) {
        while (*p == ' ') p++;
        const char *end = strchr(p, ' ');
        if (!end) end = p + strlen(p);
        if ((size_t)(end - p) > nl && !strncmp(p, name, nl) && p[nl] == '=') {
            *len = (size_t)(end - p) - nl - 1;
            return p + nl + 1;
        }
        p = end;
    }
    return NULL;
}

/* The reply is `cmd=<cmd>` with rc 0 (a missing rc is 0: hydra's barrier_out has none). */
static int reply_ok(const char *line, const char *cmd)
{
    size_t cl = strlen(cmd);
    if (strncmp(line, "cmd=", 4) || strncmp(line + 4, cmd, cl) || (line[4 + cl] != ' ' && line[4 + cl] != '\0')) return 0;
    size_t len;
    const char *rc = attr(line, "rc", &len);
    return !rc || (len == 1 && rc[0] == '0');
}

/* Blocking read of one line (set-up only); NUL-terminated without '\n'. */
static void read_line(struct conn *c, char *line, size_t cap)
{
    const char *err = pmi_read_line(c->fd, c->buf, sizeof c->buf, &c->len, line, cap);
    if (err) fail("rank %d: %s", c->rank, err);
}

static void expect(struct conn *c, const char *cmd, char *line)
{
    read_line(c, line, LINE_MAX_);
    if (!reply_ok(line, cmd)) fail("rank %d: expected cmd=%s rc=0, got: %s", c->rank, cmd, line);
}

/* PMI-2, set-up only: send a frame with this body, read the answer into line, check it is cmd=<cmd> with rc=0. */
static void call2(struct conn *c, const char *body, const char *cmd, char *line)
{
    char req[LINE_MAX_];
    size_t n = pmi2_frame(req, sizeof req, body);
    pmi_write_all(c->fd, req, n);
    const char *err = pmi2_read_frame(c->fd, c->buf, sizeof c->buf, &c->len, line, LINE_MAX_);
    if (err) fail("rank %d: %s", c->rank, err);
    if (!pmi2_reply_ok(line, cmd)) fail("rank %d: expected cmd=%s;rc=0;, got: %s", c->rank, cmd, line);
}

/* A reply of the timed wire-up: `cmd=<v1> rc=0` (PMI-1) or `cmd=<v2>;rc=0;` (PMI-2). */
static int answered(const char *line, const char *v1, const char *v2)
{
    return pmi2 ? pmi2_reply_ok(line, v2) : reply_ok(line, v1);
}

/* A whole reply from the connection's buffer, if there is one: 1, or 0 when more bytes are needed. */
static int take_reply(struct conn *c, char *line, size_t cap)
{
    if (pmi2) {
        int t = pmi2_take_frame(c->buf, &c->len, line, cap);
        if (t < 0) fail("rank %d: a reply is not a PMI-2 frame", c->rank);
        return t;
    }
    return pmi_take_line(c->buf, &c->len, line, cap);
}

/* Write this rank's request: the line as given (PMI-1), or the body as given in a frame (PMI-2). */
static void send_req(struct conn *c, const char *req, size_t n)
{
    if (pmi2) {
        char frame[LINE_MAX_ + 8];
        n = pmi2_frame(frame, sizeof frame, req);
        pmi_write_all(c->fd, frame, n);
    } else {
        pmi_write_all(c->fd, req, n);
    }
}

static void send_barrier(struct conn *c)
{
    static const char barrier[] = "cmd=barrier_in\n", fence[] = "    14cmd=kvs-fence;";
    if (pmi2) pmi_write_all(c->fd, fence, sizeof fence - 1);
    else pmi_write_all(c->fd, barrier, sizeof barrier - 1);
}

static void send_get(struct conn *c)
{
    char req[LINE_MAX_];
    int key = (c->rank + c->got) % job_size;
    int n = pmi2 ? snprintf(req, sizeof req, "cmd=kvs-get;jobid=%s;srcid=-1;key=bc-%d;", kvsname, key) : snprintf(req, sizeof req, "cmd=get kvsname=%s key=bc-%d\n", kvsname, key);
    c->sent_at = pmi_now_ns();
    send_req(c, req, (size_t)n);
}

static uint64_t t_put_barrier, t_gets, t_final_barrier, t_finalize;

static void max_into(uint64_t *t, uint64_t v)
{
    if (v > *t) *t = v;
}

/* One reply line of the timed wire-up: check it, send this rank's next request. */
static void on_reply(struct conn *c, const char *line)
{
    uint64_t now = pmi_now_ns();
    switch (c->state) {
    case S_PUT:
        if (!answered(line, "put_result", "kvs-put-response")) fail("rank %d: put answered: %s", c->rank, line);
        send_barrier(c);
        c->state = S_BARRIER1;
        break;
    case S_BARRIER1:
        if (!answered(line, "barrier_out", "kvs-fence-response")) fail("rank %d: barrier answered: %s", c->rank, line);
        max_into(&t_put_barrier, now);
        c->state = S_GET;
        c->got = 0;
        send_get(c);
        break;
    case S_GET: {
        int key = (c->rank + c->got) % job_size;
        char want[VALUE_MAX];
        int wl = card(key, want, sizeof want);
        size_t vl, fl;
        const char *v;
        if (pmi2) {
            const char *found = pmi2_reply_ok(line, "kvs-get-response") ? pmi2_attr(line, "found", &fl) : NULL;
            v = found && fl == 4 && !memcmp(found, "TRUE", 4) ? pmi2_attr(line, "value", &vl) : NULL;
        } else {
            v = reply_ok(line, "get_result") ? attr(line, "value", &vl) : NULL;
        }
        if (!v || vl != (size_t)wl || memcmp(v, want, vl)) fail("rank %d: get of bc-%d answered: %s", c->rank, key, line);
        uint64_t rtt = now - c->sent_at;
        get_sum_ns += rtt;
        if (rtt > get_max_ns) get_max_ns = rtt;
        gets_done++;
        if (++c->got < job_size) {
            send_get(c);
        } else {
            max_into(&t_gets, now);
            send_barrier(c);
            c->state = S_BARRIER2;
        }
        break;
    }
    case S_BARRIER2: {
        static const char fin[] = "cmd=finalize\n", fin2[] = "cmd=finalize;";
        if (!answered(line, "barrier_out", "kvs-fence-response")) fail("rank %d: final barrier answered: %s", c->rank, line);
        max_into(&t_final_barrier, now);
        if (pmi2) send_req(c, fin2, sizeof fin2 - 1);
        else send_req(c, fin, sizeof fin - 1);
        c->state = S_FINALIZE;
        break;
    }
    case S_FINALIZE:
        if (!answered(line, "finalize_ack", "finalize-response")) fail("rank %d: finalize answered: %s", c->rank, line);
        max_into(&t_finalize, now);
        c->state = S_DONE;
        break;
    case S_DONE:
        fail("rank %d: unexpected line after finalize_ack: %s", c->rank, line);
    }
}

/* Raise the open-file limit to the hard limit: one fd per connection, plus a few. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    int nconns = 1;
    const char *outdir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) fail("missing value after %s", a);
        if (!strcmp(a, "--conns")) nconns = atoi(v);
        else if (!strcmp(a, "--size")) job_size = atoi(v);
        else if (!strcmp(a, "--kvsname")) kvsname = v;
        else if (!strcmp(a, "--out")) outdir = v;
        else if (!strcmp(a, "--pmi-version")) {
            if (strcmp(v, "1") && strcmp(v, "2")) fail("--pmi-version is 1 or 2, not %s", v);
            pmi2 = v[0] == '2';
        }
        else fail("unknown option %s", a);
        i++;
    }
    if (nconns < 1 || nconns > 1000000) fail("--conns must be at least 1");
    raise_nofile();
    struct conn *cs = calloc((size_t)nconns, sizeof *cs);
    if (!cs) fail("out of memory");

    const char *pmi_fd = getenv("PMI_FD"), *pmi_port = getenv("PMI_PORT"), *pmi_id = getenv("PMI_ID");
    char line[LINE_MAX_];
    int reported_size = 0;
    if (pmi_fd) {
        if (nconns != 1) fail("--conns needs PMI_PORT (PMI_FD is one connection)");
        cs[0].fd = atoi(pmi_fd);
        cs[0].rank = getenv("PMI_RANK") ? atoi(getenv("PMI_RANK")) : 0;
        reported_size = getenv("PMI_SIZE") ? atoi(getenv("PMI_SIZE")) : 0;
    } else if (pmi_port) {
        int id = pmi_id ? atoi(pmi_id) : 0;
        for (int j = 0; j < nconns; j++) {
            cs[j].fd = pmi_connect_port(pmi_port);
            cs[j].rank = id + j;
            if (pmi2) continue; /* PMI-2 has no initack: the rank comes with fullinit */
            int n = snprintf(line, sizeof line, "cmd=initack pmiid=%d\n", id + j);
            pmi_write_all(cs[j].fd, line, (size_t)n);
        }
    } else {
        fail("neither PMI_FD nor PMI_PORT is set");
    }
    struct timeval tv = { .tv_sec = 60 };
    for (int j = 0; j < nconns; j++) setsockopt(cs[j].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    /* Untimed set-up: handshake, init, kvsname, then a start barrier across the whole job. */
    for (int j = 0; j < nconns; j++) {
        struct conn *c = &cs[j];
        if (pmi2) {
            static const char init2[] = "cmd=init pmi_version=2 pmi_subversion=0\n";
            pmi_write_all(c->fd, init2, sizeof init2 - 1);
            expect(c, "response_to_init", line);
            char body[64];
            snprintf(body, sizeof body, "cmd=fullinit;pmirank=%d;", c->rank);
            call2(c, body, "fullinit-response", line);
            size_t l;
            const char *r = pmi2_attr(line, "rank", &l);
            if (r) c->rank = atoi(r);
            const char *s = pmi2_attr(line, "size", &l);
            if (s) reported_size = atoi(s);
            continue;
        }
        if (!pmi_fd) {
            expect(c, "initack", line);
            size_t l;
            const char *r = attr(line, "rank", &l);
            if (r) c->rank = atoi(r);
            const char *s = attr(line, "size", &l);
            if (s) reported_size = atoi(s);
            for (int k = 0; k < 3; k++) read_line(c, line, sizeof line); /* cmd=set size/rank/debug */
        }
        static const char init[] = "cmd=init pmi_version=1 pmi_subversion=1\n";
        pmi_write_all(c->fd, init, sizeof init - 1);
        expect(c, "response_to_init", line);
    }
    if (job_size <= 0) job_size = reported_size;
    if (job_size <= 0) fail("job size unknown: give --size N");
    static char kvs[512];
    if (!kvsname && pmi2) {
        call2(&cs[0], "cmd=job-getid;", "job-getid-response", line);
        size_t l;
        const char *k = pmi2_attr(line, "jobid", &l);
        if (!k || l >= sizeof kvs) fail("no jobid in: %s", line);
        memcpy(kvs, k, l);
        kvsname = kvs;
    } else if (!kvsname) {
        static const char ask[] = "cmd=get_my_kvsname\n";
        pmi_write_all(cs[0].fd, ask, sizeof ask - 1);
        expect(&cs[0], "my_kvsname", line);
        size_t l;
        const char *k = attr(line, "kvsname", &l);
        if (!k || l >= sizeof kvs) fail("no kvsname in: %s", line);
        memcpy(kvs, k, l);
        kvsname = kvs;
    }
    for (int j = 0; j < nconns; j++) send_barrier(&cs[j]);
    uint64_t t_start = 0;
    for (int j = 0; j < nconns; j++) {
        if (pmi2) {
            const char *err = pmi2_read_frame(cs[j].fd, cs[j].buf, sizeof cs[j].buf, &cs[j].len, line, LINE_MAX_);
            if (err) fail("rank %d: %s", cs[j].rank, err);
            if (!pmi2_reply_ok(line, "kvs-fence-response")) fail("rank %d: kvs-fence answered: %s", cs[j].rank, line);
        } else {
            expect(&cs[j], "barrier_out", line);
        }
        if (j == 0) t_start = pmi_now_ns(); /* the barrier releases all ranks at once: the first seen is when */
    }

    /* Timed: every rank puts at once, then each runs its own lock-step sequence (on_reply). */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) fail("epoll_create1: %s", strerror(errno));
    for (int j = 0; j < nconns; j++) {
        struct conn *c = &cs[j];
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)j };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
        char val[VALUE_MAX];
        card(c->rank, val, sizeof val);
        int n = pmi2 ? snprintf(line, sizeof line, "cmd=kvs-put;key=bc-%d;value=%s;", c->rank, val)
                     : snprintf(line, sizeof line, "cmd=put kvsname=%s key=bc-%d value=%s\n", kvsname, c->rank, val);
        c->state = S_PUT;
        send_req(c, line, (size_t)n);
    }
    int active = nconns;
    struct epoll_event evs[256];
    while (active > 0) {
        int n = epoll_wait(ep, evs, 256, 60000);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail("epoll_wait: %s", strerror(errno));
        if (n == 0) fail("no reply within 60 s (%d ranks unfinished)", active);
        for (int i = 0; i < n; i++) {
            struct conn *c = &cs[evs[i].data.u32];
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (r < 0) fail("rank %d: read failed: %s", c->rank, strerror(errno));
            if (r == 0) {
                if (c->state != S_DONE) fail("rank %d: the server closed the connection (state %d)", c->rank, (int)c->state);
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->len += (size_t)r;
            while (take_reply(c, line, sizeof line)) {
                on_reply(c, line);
                if (c->state == S_DONE) {
                    /* The server closes after finalize_ack; we need not wait for that. */
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    active--;
                    break;
                }
            }
            if (c->state != S_DONE && c->len == sizeof c->buf) fail("rank %d: reply line too long", c->rank);
        }
    }
    close(ep);

    FILE *out = stdout;
    char path[4096];
    if (outdir) {
        snprintf(path, sizeof path, "%s/wireup-%d.json", outdir, (int)getpid());
        out = fopen(path, "w");
        if (!out) fail("cannot write %s", path);
    }
    fprintf(out,
            "{\"pid\":%d,\"conns\":%d,\"size\":%d,\"start_ns\":%llu,\"put_barrier_ns\":%llu,\"gets_ns\":%llu,"
            "\"final_barrier_ns\":%llu,\"finalize_ns\":%llu,\"gets\":%llu,\"get_sum_ns\":%llu,\"get_max_ns\":%llu}\n",
            (int)getpid(), nconns, job_size, (unsigned long long)t_start, (unsigned long long)t_put_barrier,
            (unsigned long long)t_gets, (unsigned long long)t_final_barrier, (unsigned long long)t_finalize,
            (unsigned long long)gets_done, (unsigned long long)get_sum_ns, (unsigned long long)get_max_ns);
    if (out != stdout) fclose(out);
    return 0;
}
