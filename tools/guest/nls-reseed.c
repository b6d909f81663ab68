/*
 * nls-reseed: credit the seed read from stdin to the kernel's entropy pool
 * and reseed the CRNG at once.
 *
 * A clone resumes its source's CRNG state. Writing to /dev/urandom only mixes
 * bytes into the input pool, which the CRNG draws from at its next reseed
 * (up to a minute later); RNDADDENTROPY credits them and RNDRESEEDCRNG
 * (Linux 4.17+) makes the very next read depend on them. The engine runs
 * this through the guest agent with fresh host randomness on stdin. Guests
 * with python3 need no helper; the busybox test guest has none, hence this.
 */
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void)
{
    struct {
        struct rand_pool_info info;
        unsigned char buf[512];
    } req;
    ssize_t n, total = 0;
    int fd;

    while (total < (ssize_t)sizeof(req.buf) &&
           (n = read(0, req.buf + total, sizeof(req.buf) - total)) > 0)
        total += n;
    if (total < 32) {
        fprintf(stderr, "nls-reseed: need at least 32 bytes on stdin\n");
        return 2;
    }
    req.info.entropy_count = (int)total * 8;
    req.info.buf_size = (int)total;
    fd = open("/dev/random", O_WRONLY);
    if (fd < 0 || ioctl(fd, RNDADDENTROPY, &req.info) < 0) {
        perror("nls-reseed: RNDADDENTROPY");
        return 1;
    }
    if (ioctl(fd, RNDRESEEDCRNG) < 0) {
        perror("nls-reseed: RNDRESEEDCRNG");
        return 1;
    }
    printf("credited %zd bytes and reseeded the CRNG\n", total);
    return 0;
}
