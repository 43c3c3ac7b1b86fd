// hot-functions-trace ADDRS BINNAME OUT CMD...: which functions of the binary BINNAME (the base
// name of the mapped file) CMD and every process it forks or clones run, first hit only.
// ADDRS: the functions' entry addresses (hex, sorted ascending, as `nm` prints them). Each is an
// int3 in every traced image of BINNAME, put back when hit; the addresses hit are appended to OUT.
// Used by scripts/hot-functions; not part of molt.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned long *addr;
static unsigned char *orig, *hit;
static int n;
static const char *bin;

// Load address of BINNAME in pid (its mapping at file offset 0), 0 if it is not mapped.
static unsigned long base_of(pid_t pid) {
    char p[64], l[4200];
    snprintf(p, sizeof p, "/proc/%d/maps", pid);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    unsigned long b = 0;
    while (!b && fgets(l, sizeof l, f)) {
        unsigned long lo, hi, off;
        char perm[8], path[4096] = "";
        if (sscanf(l, "%lx-%lx %7s %lx %*s %*s %4095s", &lo, &hi, perm, &off, path) >= 4 && off == 0) {
            char *s = strrchr(path, '/');
            if (s && strcmp(s + 1, bin) == 0) b = lo;
        }
    }
    fclose(f);
    return b;
}

static void arm(pid_t pid) {
    unsigned long b = base_of(pid);
    if (!b) return;
    for (int i = 0; i < n; i++) {
        if (hit[i]) continue;
        errno = 0;
        long w = ptrace(PTRACE_PEEKTEXT, pid, b + addr[i], 0);
        if (errno) continue;
        orig[i] = w & 0xff;
        ptrace(PTRACE_POKETEXT, pid, b + addr[i], (w & ~0xffL) | 0xcc);
    }
}

static int find(unsigned long a) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int m = lo + (hi - lo) / 2;
        if (addr[m] == a) return m;
        if (addr[m] < a) lo = m + 1; else hi = m - 1;
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: %s ADDRS BINNAME OUT CMD...\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 2; }
    bin = argv[2];
    int cap = 1024;
    unsigned long a;
    addr = malloc(cap * sizeof *addr);
    while (fscanf(f, "%lx", &a) == 1) {
        if (n == cap) addr = realloc(addr, (cap *= 2) * sizeof *addr);
        addr[n++] = a;
    }
    fclose(f);
    orig = calloc(n, 1);
    hit = calloc(n, 1);
    pid_t child = fork();
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        execvp(argv[4], argv + 4);
        _exit(127);
    }
    int st, rc = 0;
    waitpid(child, &st, 0);
    ptrace(PTRACE_SETOPTIONS, child, 0,
           PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL);
    ptrace(PTRACE_CONT, child, 0, 0);
    for (;;) {
        pid_t pid = waitpid(-1, &st, __WALL);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break; // no tracee left
        }
        if (WIFEXITED(st) || WIFSIGNALED(st)) {
            if (pid == child) rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            continue;
        }
        int sig = WSTOPSIG(st), ev = st >> 16, inject = 0;
        if (sig == SIGTRAP && ev == PTRACE_EVENT_EXEC) {
            arm(pid);
        } else if (sig == SIGTRAP && ev == 0) {
            struct user_regs_struct r;
            ptrace(PTRACE_GETREGS, pid, 0, &r);
            unsigned long b = base_of(pid);
            int i = b ? find(r.rip - 1 - b) : -1;
            if (i >= 0) {
                long w = ptrace(PTRACE_PEEKTEXT, pid, b + addr[i], 0);
                ptrace(PTRACE_POKETEXT, pid, b + addr[i], (w & ~0xffL) | orig[i]);
                r.rip -= 1;
                ptrace(PTRACE_SETREGS, pid, 0, &r);
                hit[i] = 1;
            } else {
                inject = SIGTRAP;
            }
        } else if (sig == SIGTRAP || (sig == SIGSTOP && ev == 0)) {
            // fork/clone events and a new tracee's first stop
        } else {
            inject = sig;
        }
        ptrace(PTRACE_CONT, pid, 0, inject);
    }
    FILE *o = fopen(argv[3], "a");
    if (!o) { perror(argv[3]); return 2; }
    for (int i = 0; i < n; i++)
        if (hit[i]) fprintf(o, "%016lx\n", addr[i]);
    fclose(o);
    return rc;
}
