/* The benchmark's test service, the same for every supervisor: its first
 * action is to read CLOCK_MONOTONIC. It then appends
 * "<name> <pid> <nanoseconds>\n" to ./stamps (the working directory is its
 * service folder, whose name is <name>; ./stamps is a symlink to one file
 * per supervisor), signals readiness to s6 when ./notification-fd names a
 * descriptor, and sleeps until a signal ends it. Built static at bench
 * time (gcc -static), so no dynamic loader runs before main. */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char *put_u64(char *p, unsigned long long v) {
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

int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long ns = (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;

    char cwd[256];
    const char *name = "?";
    if (getcwd(cwd, sizeof cwd)) {
        char *slash = strrchr(cwd, '/');
        name = slash ? slash + 1 : cwd;
    }
    char line[384];
    char *p = line;
    size_t len = strlen(name);
    if (len > 200)
        len = 200;
    memcpy(p, name, len);
    p += len;
    *p++ = ' ';
    p = put_u64(p, (unsigned long long)getpid());
    *p++ = ' ';
    p = put_u64(p, ns);
    *p++ = '\n';
    int fd = open("stamps", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        (void)!write(fd, line, (size_t)(p - line));
        close(fd);
    }

    /* s6: readiness on the descriptor named in ./notification-fd. */
    int nf = open("notification-fd", O_RDONLY | O_CLOEXEC);
    if (nf >= 0) {
        char buf[16];
        ssize_t n = read(nf, buf, sizeof buf - 1);
        close(nf);
        int target = 0;
        for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
            target = target * 10 + (buf[i] - '0');
        if (n > 0 && target > 2) {
            (void)!write(target, "\n", 1);
            close(target);
        }
    }
    for (;;)
        pause();
}
