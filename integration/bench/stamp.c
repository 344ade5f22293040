/* The benchmark's test service, the same for every supervisor. Its first
 * instruction reads CLOCK_MONOTONIC: no C library runs before it (static
 * glibc's start-up alone takes ~0.2 ms on a VM, where its CPUID probes trap
 * to the hypervisor), so built with -static -nostdlib, x86_64 or aarch64.
 * It then appends "<name> <pid> <nanoseconds>\n" to ./stamps (the working
 * directory is its service folder, whose name is <name>; ./stamps is a
 * symlink to one file per supervisor), signals readiness to s6 when
 * ./notification-fd names a descriptor, and sleeps until a signal ends it
 * (every signal has its default action). */

typedef unsigned long u64;
typedef long i64;

#if defined(__x86_64__)
#define SYS_read 0
#define SYS_write 1
#define SYS_close 3
#define SYS_getpid 39
#define SYS_getcwd 79
#define SYS_clock_gettime 228
#define SYS_openat 257
#define SYS_ppoll 271
#define SYS_exit_group 231
static i64 sys6(i64 n, i64 a, i64 b, i64 c, i64 d) {
    i64 ret;
    register i64 r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}
__asm__(".global _start\n_start:\n xor %rbp,%rbp\n and $-16,%rsp\n call stamp_main\n hlt\n");
#elif defined(__aarch64__)
#define SYS_getcwd 17
#define SYS_openat 56
#define SYS_close 57
#define SYS_read 63
#define SYS_write 64
#define SYS_ppoll 73
#define SYS_exit_group 94
#define SYS_clock_gettime 113
#define SYS_getpid 172
static i64 sys6(i64 n, i64 a, i64 b, i64 c, i64 d) {
    register i64 x8 __asm__("x8") = n;
    register i64 x0 __asm__("x0") = a;
    register i64 x1 __asm__("x1") = b;
    register i64 x2 __asm__("x2") = c;
    register i64 x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
}
__asm__(".global _start\n_start:\n mov x29, #0\n mov x30, #0\n bl stamp_main\n brk #0\n");
#else
#error "stamp.c knows the syscalls of x86_64 and aarch64 only"
#endif

#define AT_FDCWD -100
#define O_RDONLY 0
#define O_WRONLY 1
#define O_CREAT 0100
#define O_APPEND 02000
#define O_CLOEXEC 02000000

struct timespec_k {
    i64 sec;
    i64 nsec;
};

static char *put_u64(char *p, u64 v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

__attribute__((used, noreturn)) void stamp_main(void) {
    struct timespec_k ts;
    sys6(SYS_clock_gettime, 1 /* CLOCK_MONOTONIC */, (i64)&ts, 0, 0);
    u64 ns = (u64)ts.sec * 1000000000UL + (u64)ts.nsec;

    char cwd[256];
    char line[384];
    char *p = line;
    const char *name = "?";
    if (sys6(SYS_getcwd, (i64)cwd, sizeof cwd, 0, 0) > 0) {
        name = cwd;
        for (const char *c = cwd; *c; c++)
            if (*c == '/')
                name = c + 1;
    }
    for (int i = 0; name[i] && i < 200; i++)
        *p++ = name[i];
    *p++ = ' ';
    p = put_u64(p, (u64)sys6(SYS_getpid, 0, 0, 0, 0));
    *p++ = ' ';
    p = put_u64(p, ns);
    *p++ = '\n';
    i64 fd = sys6(SYS_openat, AT_FDCWD, (i64) "stamps", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        sys6(SYS_write, fd, (i64)line, p - line, 0);
        sys6(SYS_close, fd, 0, 0, 0);
    }

    /* s6: readiness on the descriptor named in ./notification-fd. */
    i64 nf = sys6(SYS_openat, AT_FDCWD, (i64) "notification-fd", O_RDONLY | O_CLOEXEC, 0);
    if (nf >= 0) {
        char buf[16];
        i64 n = sys6(SYS_read, nf, (i64)buf, sizeof buf - 1, 0);
        sys6(SYS_close, nf, 0, 0, 0);
        i64 target = 0;
        for (i64 i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
            target = target * 10 + (buf[i] - '0');
        if (n > 0 && target > 2) {
            sys6(SYS_write, target, (i64) "\n", 1, 0);
            sys6(SYS_close, target, 0, 0, 0);
        }
    }
    for (;;)
        sys6(SYS_ppoll, 0, 0, 0, 0); /* no descriptors, no timeout: until a signal */
}
