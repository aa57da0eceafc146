/* Guest instructions per translation block, for qemu-user (QEMU 7.2 plugin API v1): where
 * a program's instructions go. Written against the documented API with only the
 * declarations it needs, like icount.c beside it. At exit it writes one line per
 * translated block, "VADDR INSNS_PER_RUN RUNS" (VADDR in hex, a block retranslated
 * appears more than once), to the file named by its `out` argument.
 * Build: gcc -shared -fPIC -O2 -o libprofile.so profile.c
 * Use:   qemu-aarch64 -plugin ./libprofile.so,out=FILE -d plugin,page -L /usr/aarch64-linux-gnu PROGRAM ARGS
 * (`-d page` logs where the program was loaded, which scripts/iprofile.sh needs to map
 * the addresses to the program's symbols). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(qemu_plugin_id_t, void *);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb, void *);
extern void qemu_plugin_outs(const char *);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct block { uint64_t vaddr, insns, runs; struct block *next; };
static struct block *blocks;
static char out[4096];

static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    struct block *b = calloc(1, sizeof *b);
    if (!b) return;
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->insns = qemu_plugin_tb_n_insns(tb);
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->runs, 1);
}

static void done(qemu_plugin_id_t id, void *p) {
    FILE *f = fopen(out, "w");
    if (!f) { qemu_plugin_outs("profile: cannot write the out file\n"); return; }
    for (struct block *b = blocks; b; b = b->next)
        if (b->runs) fprintf(f, "%llx %llu %llu\n", (unsigned long long)b->vaddr,
                             (unsigned long long)b->insns, (unsigned long long)b->runs);
    fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0) snprintf(out, sizeof out, "%s", argv[i] + 4);
    if (!out[0]) { fprintf(stderr, "profile: give the plugin out=FILE\n"); return -1; }
    qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
    qemu_plugin_register_atexit_cb(id, done, NULL);
    return 0;
}
