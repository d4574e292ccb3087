/*
 * loadgen: the echo benchmark's load generator.
 *
 * Single-threaded, epoll, level-triggered. C connections each ping-pong one
 * M-byte message: send it, wait until all M bytes came back, record the
 * round-trip time, send the next. After a warm-up of W seconds it counts the
 * messages echoed during D seconds and reports, as one JSON object on
 * stdout: messages/s, latency percentiles, its own CPU use over the window
 * (to show it is not the bottleneck) and, with --pid, the server process's
 * utime/stime over the same window (from /proc/PID/stat) and its RSS.
 *
 * --idle N first opens N connections that each echo one message and then
 * stay open and silent (blocking sockets, not in the epoll set). With
 * --idle-wait it then writes "idle-ready N" on stderr and waits for a line
 * on stdin before the active phase, so the caller can look at the server.
 * --conns 0 skips the active phase.
 *
 * --messages N replaces the clock by a count: the C connections share
 * exactly N echoes (N / C each, one more for the first N % C), with no
 * warm-up, and the run ends when the last one is back. Two runs that differ
 * only in N differ in the server's work by exactly that many messages,
 * which is what instruction counting needs (start-up and shut-down cancel).
 *
 * Build: cc -O2 -o loadgen loadgen.c (Linux).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Latency histogram: 100 ns buckets below 10 ms, 10 us buckets below 1 s. */
#define FINE_NS 100
#define FINE_N 100000
#define COARSE_NS 10000
#define COARSE_N 100000

static uint32_t fine[FINE_N];
static uint32_t coarse[COARSE_N];
static uint64_t over;
static uint64_t hist_count;
static uint64_t lat_max;

typedef struct {
    int fd;
    int dead;
    int want_out;
    size_t sent;
    size_t recvd;
    uint64_t t_sent;
    uint64_t quota; /* --messages: echoes still to start on this connection */
} conn_t;

static char *host = "127.0.0.1";
static int port = 0;
static int nconns = 64;
static size_t msgsize = 64;
static double warmup = 1.0;
static double duration = 5.0;
static int server_pid = 0;
static long nidle = 0;
static int idle_wait = 0;
static uint64_t exact = 0; /* --messages N, 0: timed */

static char *payload;
static char *rbuf;
static size_t rbufsize;
static struct sockaddr_storage addr;
static socklen_t addrlen;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void hist_add(uint64_t ns) {
    if (ns < (uint64_t)FINE_NS * FINE_N)
        fine[ns / FINE_NS]++;
    else if (ns < (uint64_t)COARSE_NS * COARSE_N)
        coarse[ns / COARSE_NS]++;
    else
        over++;
    if (ns > lat_max)
        lat_max = ns;
    hist_count++;
}

/* The latency (us) below which a fraction q of the samples fall. */
static double hist_quantile(double q) {
    if (hist_count == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(q * (double)hist_count);
    if (rank >= hist_count)
        rank = hist_count - 1;
    uint64_t seen = 0;
    for (int i = 0; i < FINE_N; i++) {
        seen += fine[i];
        if (seen > rank)
            return (i + 0.5) * FINE_NS / 1000.0;
    }
    for (int i = 0; i < COARSE_N; i++) {
        seen += coarse[i];
        if (seen > rank)
            return (i + 0.5) * COARSE_NS / 1000.0;
    }
    return lat_max / 1000.0;
}

typedef struct {
    double utime, stime; /* seconds */
    long rss_kb;
    int ok;
} proc_sample_t;

static proc_sample_t sample_proc(int pid) {
    proc_sample_t s = {0, 0, 0, 0};
    if (pid <= 0)
        return s;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return s;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return s;
    p += 2; /* field 3, the state */
    unsigned long ut = 0, st = 0;
    /* fields 3..13 skipped, 14 utime, 15 stime */
    int field = 3;
    char *tok = strtok(p, " ");
    while (tok) {
        if (field == 14)
            ut = strtoul(tok, NULL, 10);
        if (field == 15) {
            st = strtoul(tok, NULL, 10);
            break;
        }
        tok = strtok(NULL, " ");
        field++;
    }
    double hz = (double)sysconf(_SC_CLK_TCK);
    s.utime = ut / hz;
    s.stime = st / hz;
    s.ok = 1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "VmRSS:", 6) == 0)
                s.rss_kb = strtol(line + 6, NULL, 10);
        fclose(f);
    }
    return s;
}

/* Busy CPU time of the whole machine (every CPU, seconds), from /proc/stat. */
static double machine_busy(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[10] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]);
    fclose(f);
    if (n < 8)
        return -1;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double cpu_self(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, int err) {
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(err));
    fflush(stdout);
    exit(1);
}

static int dial(int nonblock) {
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    while (connect(fd, (struct sockaddr *)&addr, addrlen) < 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        return -e;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (nonblock)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* One blocking echo on a fresh connection that then stays open. */
static int idle_conn(char **why) {
    int fd = dial(0);
    if (fd < 0) {
        *why = strerror(-fd);
        return -1;
    }
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    size_t done = 0;
    while (done < msgsize) {
        ssize_t n = write(fd, payload + done, msgsize - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *why = n < 0 ? strerror(errno) : "write returned 0";
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    done = 0;
    while (done < msgsize) {
        ssize_t n = read(fd, rbuf, rbufsize);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *why = n < 0 ? strerror(errno) : "the server closed the connection";
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    return fd;
}

static int ep;

static int send_msg(conn_t *c, uint64_t t) {
    if (c->sent == 0)
        c->t_sent = t;
    while (c->sent < msgsize) {
        ssize_t n = write(c->fd, payload + c->sent, msgsize - c->sent);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!c->want_out) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    c->want_out = 1;
                }
                return 0;
            }
            return -1;
        }
        c->sent += (size_t)n;
    }
    if (c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = 0;
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P [--host H] [--conns C] [--size M] [--warmup W]\n"
            "               [--duration D] [--messages N] [--pid SERVER_PID] [--idle N] [--idle-wait]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--idle-wait")) {
            idle_wait = 1;
            continue;
        }
        if (!v)
            usage();
        if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--conns"))
            nconns = atoi(v);
        else if (!strcmp(a, "--size"))
            msgsize = (size_t)atol(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atof(v);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else if (!strcmp(a, "--pid"))
            server_pid = atoi(v);
        else if (!strcmp(a, "--idle"))
            nidle = atol(v);
        else if (!strcmp(a, "--messages")) {
            char *end;
            exact = strtoull(v, &end, 10);
            if (*end || exact == 0 || v[0] == '-') {
                fprintf(stderr, "loadgen: --messages wants a count >= 1, not %s\n", v);
                return 2;
            }
        }
        else
            usage();
        i++;
    }
    if (port <= 0 || nconns < 0 || msgsize == 0 || duration <= 0 || warmup < 0 || nidle < 0)
        usage();
    if (exact && nconns == 0) {
        fprintf(stderr, "loadgen: --messages needs --conns >= 1\n");
        return 2;
    }
    if (exact)
        warmup = 0;
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    memset(&addr, 0, sizeof addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        addrlen = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        addrlen = sizeof *a6;
    } else {
        fprintf(stderr, "loadgen: --host needs a numeric address\n");
        return 2;
    }

    payload = malloc(msgsize);
    memset(payload, 'x', msgsize);
    rbufsize = msgsize > 65536 ? msgsize : 65536;
    rbuf = malloc(rbufsize);

    uint64_t total_msgs = 0;

    /* Idle connections: one echo each, then silence. */
    long idle_ok = 0;
    char *idle_err = NULL;
    int *idle_fds = nidle ? calloc((size_t)nidle, sizeof(int)) : NULL;
    for (long i = 0; i < nidle; i++) {
        int fd = idle_conn(&idle_err);
        if (fd < 0)
            break;
        idle_fds[idle_ok++] = fd;
        total_msgs++;
    }
    if (idle_wait) {
        fprintf(stderr, "idle-ready %ld\n", idle_ok);
        fflush(stderr);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) {
            /* the caller went away: stop */
        }
    }

    conn_t *conns = calloc(nconns ? (size_t)nconns : 1, sizeof(conn_t));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1", errno);
    int live = 0;
    char *conn_err = NULL;
    for (int i = 0; i < nconns; i++) {
        int fd = dial(1);
        if (fd < 0) {
            conn_err = strerror(-fd);
            break;
        }
        conns[i].fd = fd;
        conns[i].quota = exact ? exact / (uint64_t)nconns + ((uint64_t)i < exact % (uint64_t)nconns) : 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        live++;
    }
    if (live < nconns) {
        printf("{\"error\": \"connect: %s after %d of %d connections\", \"idle\": %ld}\n", conn_err ? conn_err : "?",
               live, nconns, idle_ok);
        return 1;
    }

    uint64_t msgs = 0, errors = 0;
    double client_cpu = 0, wall = 0, busy0 = 0, busy = -1;
    proc_sample_t s0 = {0}, s1 = {0};
    if (nconns > 0) {
        uint64_t t0 = now_ns();
        uint64_t t_measure = t0 + (uint64_t)(warmup * 1e9);
        uint64_t t_end = t_measure + (uint64_t)(duration * 1e9);
        for (int i = 0; i < nconns; i++) {
            if (exact) {
                if (conns[i].quota == 0)
                    continue;
                conns[i].quota--;
            }
            if (send_msg(&conns[i], t0) < 0) {
                conns[i].dead = 1;
                errors++;
                live--;
            }
        }
        int measuring = warmup <= 0;
        double cpu0 = 0;
        uint64_t tm0 = t0;
        if (measuring) {
            s0 = sample_proc(server_pid);
            cpu0 = cpu_self();
            busy0 = machine_busy();
        }
        struct epoll_event evs[512];
        uint64_t t = t0;
        while (live > 0) {
            if (!measuring && t >= t_measure) {
                measuring = 1;
                s0 = sample_proc(server_pid);
                cpu0 = cpu_self();
                busy0 = machine_busy();
                tm0 = now_ns();
            }
            if (exact ? msgs == exact : measuring && t >= t_end)
                break;
            uint64_t next = measuring ? t_end : t_measure;
            int timeout = exact ? 1000 : (int)((next - t) / 1000000) + 1;
            int n = epoll_wait(ep, evs, 512, timeout);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                die("epoll_wait", errno);
            }
            for (int i = 0; i < n; i++) {
                conn_t *c = evs[i].data.ptr;
                if (c->dead)
                    continue;
                if (evs[i].events & EPOLLOUT && c->sent < msgsize) {
                    if (send_msg(c, 0) < 0)
                        goto failed;
                }
                if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                    ssize_t r = read(c->fd, rbuf, rbufsize);
                    if (r < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                    if (r <= 0)
                        goto failed;
                    c->recvd += (size_t)r;
                    if (c->recvd >= msgsize && c->sent == msgsize) {
                        uint64_t now = now_ns();
                        total_msgs++;
                        if (exact || (measuring && now < t_end)) {
                            hist_add(now - c->t_sent);
                            msgs++;
                        }
                        c->recvd = 0;
                        c->sent = 0;
                        if (exact) {
                            if (c->quota == 0)
                                continue;
                            c->quota--;
                        }
                        if (send_msg(c, now) < 0)
                            goto failed;
                    }
                }
                continue;
            failed:
                c->dead = 1;
                errors++;
                live--;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
            t = now_ns();
        }
        uint64_t tm1 = now_ns();
        s1 = sample_proc(server_pid);
        client_cpu = cpu_self() - cpu0;
        if (busy0 >= 0)
            busy = machine_busy() - busy0;
        wall = measuring ? (tm1 - tm0) / 1e9 : 0;
    }

    printf("{\"conns\": %d, \"size\": %zu, \"warmup\": %.3f, \"duration\": %.6f, \"messages\": %llu, "
           "\"total_messages\": %llu, \"errors\": %llu, \"idle\": %ld",
           nconns, msgsize, warmup, wall, (unsigned long long)msgs, (unsigned long long)total_msgs,
           (unsigned long long)errors, idle_ok);
    if (idle_err && idle_ok < nidle)
        printf(", \"idle_error\": \"%s\"", idle_err);
    if (nconns > 0 && wall > 0) {
        printf(", \"msgs_per_s\": %.1f, \"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f, "
               "\"client_cpu_pct\": %.1f",
               msgs / wall, hist_quantile(0.50), hist_quantile(0.90), hist_quantile(0.99), lat_max / 1000.0,
               100.0 * client_cpu / wall);
        if (busy >= 0)
            printf(", \"machine_busy_pct\": %.1f", 100.0 * busy / wall);
        if (s0.ok && s1.ok) {
            double ut = s1.utime - s0.utime, st = s1.stime - s0.stime;
            printf(", \"server_utime_s\": %.3f, \"server_stime_s\": %.3f, \"server_cpu_pct\": %.1f", ut, st,
                   100.0 * (ut + st) / wall);
            if (msgs)
                printf(", \"server_us_per_msg\": %.3f, \"server_user_us_per_msg\": %.3f", 1e6 * (ut + st) / msgs,
                       1e6 * ut / msgs);
        }
    }
    if (server_pid > 0) {
        proc_sample_t s = sample_proc(server_pid);
        if (s.ok)
            printf(", \"server_rss_kb\": %ld", s.rss_kb);
    }
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < nconns; i++)
        if (conns[i].fd > 0)
            close(conns[i].fd);
    for (long i = 0; i < idle_ok; i++)
        close(idle_fds[i]);
    return 0;
}
