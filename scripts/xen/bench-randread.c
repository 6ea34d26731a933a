/*
 * bench-randread DEVICE DEPTH SECONDS — 4 KiB random reads of DEVICE with O_DIRECT at queue depth DEPTH for
 * SECONDS, inside the `bench` group's guest (scripts/xen/bench-init.sh). Queue depth N is N threads, each
 * with one pread(2) in flight at a time (no libaio in the guest). Offsets are 4 KiB-aligned, uniform over the
 * device, from a per-thread xorshift generator. Prints one line:
 *   ios=N seconds=S iops=I
 * Built static with the host's cc by scripts/xen/initramfs.sh.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define MAX_DEPTH 256

static int fd;
static uint64_t blocks;
static double deadline;
static volatile int failed;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct worker {
    pthread_t thread;
    uint64_t seed;
    uint64_t ios;
};

static void *run(void *argument) {
    struct worker *self = argument;
    void *buffer;
    if (posix_memalign(&buffer, BLOCK, BLOCK) != 0) { failed = 1; return NULL; }
    uint64_t x = self->seed;
    while (!failed) {
        /* Check the clock every 16 reads: cheap, and at most 16 reads late. */
        for (int i = 0; i < 16; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            off_t offset = (off_t)((x % blocks) * BLOCK);
            if (pread(fd, buffer, BLOCK, offset) != BLOCK) { failed = 1; break; }
            self->ios++;
        }
        if (now() >= deadline) break;
    }
    free(buffer);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s DEVICE DEPTH SECONDS\n", argv[0]); return 2; }
    int depth = atoi(argv[2]);
    double seconds = atof(argv[3]);
    if (depth < 1 || depth > MAX_DEPTH || seconds <= 0) { fprintf(stderr, "bad depth or seconds\n"); return 2; }
    fd = open(argv[1], O_RDONLY | O_DIRECT);
    if (fd < 0) { perror(argv[1]); return 1; }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < BLOCK) { fprintf(stderr, "%s: size %lld\n", argv[1], (long long)size); return 1; }
    blocks = (uint64_t)size / BLOCK;
    static struct worker workers[MAX_DEPTH];
    double start = now();
    deadline = start + seconds;
    for (int i = 0; i < depth; i++) {
        workers[i].seed = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        if (pthread_create(&workers[i].thread, NULL, run, &workers[i]) != 0) { perror("pthread_create"); return 1; }
    }
    uint64_t ios = 0;
    for (int i = 0; i < depth; i++) {
        pthread_join(workers[i].thread, NULL);
        ios += workers[i].ios;
    }
    double elapsed = now() - start;
    if (failed) { fprintf(stderr, "a read failed\n"); return 1; }
    printf("ios=%llu seconds=%.3f iops=%.0f\n", (unsigned long long)ios, elapsed, (double)ios / elapsed);
    return 0;
}
