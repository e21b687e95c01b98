// bptrace ADDRS SECS OUT -- CMD...: int3 on every function entry listed in ADDRS (hex, one a
// line, sorted), run CMD (following threads and forks) for SECS seconds, write the entries hit
// (in hit order) to OUT.
#define _GNU_SOURCE
#include <fcntl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/time.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>
static pid_t main_pid;
static void on_alarm(int s) { (void)s; kill(main_pid, SIGKILL); }
static unsigned long *addr; static unsigned char *orig, *hit; static long n;
static long find(unsigned long a) {
  long l = 0, h = n - 1;
  while (l <= h) { long m = (l + h) / 2; if (addr[m] == a) return m; if (addr[m] < a) l = m + 1; else h = m - 1; }
  return -1;
}
static void poke(pid_t tid, unsigned long a, unsigned char b) {
  char p[64]; snprintf(p, sizeof p, "/proc/%d/mem", tid);
  int fd = open(p, O_RDWR); pwrite(fd, &b, 1, a); close(fd);
}
int main(int argc, char **argv) {
  FILE *f = fopen(argv[1], "r"); long cap = 1 << 20; addr = malloc(cap * 8);
  while (fscanf(f, "%lx", &addr[n]) == 1) n++;
  fclose(f);
  orig = malloc(n); hit = calloc(n, 1);
  double secs = atof(argv[2]); FILE *out = fopen(argv[3], "w");
  pid_t pid = fork();
  if (pid == 0) { ptrace(PTRACE_TRACEME, 0, 0, 0); execvp(argv[5], argv + 5); _exit(127); }
  main_pid = pid; int st;
  waitpid(pid, &st, 0);
  ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL);
  char p[64]; snprintf(p, sizeof p, "/proc/%d/mem", pid);
  int fd = open(p, O_RDWR); unsigned char cc = 0xcc;
  for (long i = 0; i < n; i++) { pread(fd, &orig[i], 1, addr[i]); pwrite(fd, &cc, 1, addr[i]); }
  close(fd);
  signal(SIGALRM, on_alarm);
  struct itimerval it = {{0, 0}, {(long)secs, (long)((secs - (long)secs) * 1e6)}};
  setitimer(ITIMER_REAL, &it, 0);
  ptrace(PTRACE_CONT, pid, 0, 0);
  long hits = 0;
  for (;;) {
    pid_t t = waitpid(-1, &st, __WALL);
    if (t < 0) { if (errno == EINTR) continue; break; }
    if (WIFEXITED(st) || WIFSIGNALED(st)) { if (t == pid) break; continue; }
    int sig = WSTOPSIG(st), ev = st >> 16;
    if (ev == PTRACE_EVENT_EXEC && t != pid) { ptrace(PTRACE_DETACH, t, 0, 0); continue; }
    if (ev) { ptrace(PTRACE_CONT, t, 0, 0); continue; }
    if (sig == SIGTRAP) {
      struct user_regs_struct r; ptrace(PTRACE_GETREGS, t, 0, &r);
      long i = find(r.rip - 1);
      if (i >= 0) {
        poke(t, addr[i], orig[i]); r.rip -= 1; ptrace(PTRACE_SETREGS, t, 0, &r);
        if (!hit[i]) { hit[i] = 1; hits++; fprintf(out, "%lx\n", addr[i]); }
        ptrace(PTRACE_CONT, t, 0, 0); continue;
      }
      ptrace(PTRACE_CONT, t, 0, SIGTRAP); continue;
    }
    if (sig == SIGSTOP) { ptrace(PTRACE_CONT, t, 0, 0); continue; }
    ptrace(PTRACE_CONT, t, 0, sig);
  }
  kill(pid, SIGKILL);
  fclose(out); fprintf(stderr, "functions hit %ld of %ld\n", hits, n);
  return 0;
}
