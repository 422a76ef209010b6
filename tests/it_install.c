/* it_install.c - `make install` as an operator and an app author meet it: install into a
 * DESTDIR with PREFIX=/usr from the source tree, check what went where, build an app from
 * another directory with pkg-config, run it in the installed supervisor, and talk through it
 * with a program linked against the installed shared libcessna-endpoint. Then uninstall. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cessna_version.h"
#include "t_helpers.h"

#ifndef CESSNA_SRC_DIR
#define CESSNA_SRC_DIR CESSNA_BUILD_DIR "/.."
#endif
#ifndef CESSNA_SANITIZE
#define CESSNA_SANITIZE ""
#endif

static const char *const bins[] = {
    "cessna-supervisor", "cessna-worker", "cessna-ctl", "cessna-replay",
    "cessna-client-proxy", "cessna-server-proxy", "cessna-bench",
};

/* Run cmd with /bin/sh, stdout and stderr to dir/log.log; its exit status (the test stops
 * after 60 s). */
static int sh(const char *dir, const char *log, const char *cmd)
{
    char full[4200];
    snprintf(full, sizeof(full), "exec 1>&2; %s", cmd);
    char *argv[] = { "/bin/sh", "-c", full, NULL };
    int out = -1;
    pid_t pid = t_start_raw(dir, log, argv, &out);
    int st = t_wait(pid, 60000);

    close(out);
    cr_assert_neq(st, -1, "timed out: %s", cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static void expect_file(const char *root, const char *rel, mode_t type)
{
    char path[1024];
    struct stat st;

    snprintf(path, sizeof(path), "%s%s", root, rel);
    cr_assert_eq(lstat(path, &st), 0, "not installed: %s (%s)", rel, strerror(errno));
    cr_assert_eq(st.st_mode & S_IFMT, type, "%s: wrong file type", rel);
}

/* An app that is not passthrough: the client sees that this module, built out of tree
 * against the installed header, is the one running. */
static const char app_c[] =
    "#include <string.h>\n"
    "#include <cessna.h>\n"
    "static void from_client(const void *d, size_t n) { cessna_send_msg_to_server(d, n); }\n"
    "static void from_server(const void *d, size_t n)\n"
    "{\n"
    "    char buf[256] = \"app:\";\n"
    "    if (n > sizeof(buf) - 4) n = sizeof(buf) - 4;\n"
    "    memcpy(buf + 4, d, n);\n"
    "    cessna_send_msg_to_client(buf, n + 4);\n"
    "}\n"
    "const struct cessna_app cessna_app = { CESSNA_ABI_VERSION, \"installed\",\n"
    "    .recv_client_msg = from_client, .recv_server_msg = from_server };\n";

/* A native client on the installed shared library: one message there and back. */
static const char ep_c[] =
    "#include <stdio.h>\n"
    "#include <string.h>\n"
    "#include <cessna_endpoint.h>\n"
    "int main(int argc, char **argv)\n"
    "{\n"
    "    char err[256];\n"
    "    const void *d;\n"
    "    struct cessna_ep *ep = argc > 1 ? cessna_ep_connect(argv[1], err, sizeof err) : NULL;\n"
    "    if (!ep) { fprintf(stderr, \"connect: %s\\n\", argc > 1 ? err : \"usage\"); return 1; }\n"
    "    if (cessna_ep_send(ep, \"hello\", 5) < 0) return 1;\n"
    "    long n = cessna_ep_recv(ep, &d);\n"
    "    if (n < 0) { fprintf(stderr, \"recv: %ld %s\\n\", n, cessna_ep_error(ep)); return 1; }\n"
    "    printf(\"got=%.*s\\n\", (int)n, (const char *)d);\n"
    "    cessna_ep_close(ep, 2000);\n"
    "    cessna_ep_free(ep);\n"
    "    return 0;\n"
    "}\n";

Test(install, destdir_out_of_tree_app_and_shared_endpoint, .timeout = 180)
{
    const char *tmp = t_tmpdir();
    char dest[300], cmd[4096], path[1024], buf[8192], pc[1024];

    /* 1. make install, from the source tree, into a DESTDIR (same BUILD and SANITIZE as the
     * build these tests come from, so it only copies). */
    snprintf(dest, sizeof(dest), "%s/root", tmp);
    snprintf(cmd, sizeof(cmd),
             "env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -C '%s' install DESTDIR='%s' "
             "PREFIX=/usr BUILD='%s' SANITIZE='%s'",
             CESSNA_SRC_DIR, dest, CESSNA_BUILD_DIR, CESSNA_SANITIZE);
    cr_assert_eq(sh(tmp, "make-install", cmd), 0, "make install failed: see %s/make-install.log",
                 tmp);

    /* 2. What went where. */
    for (size_t i = 0; i < sizeof(bins) / sizeof(bins[0]); i++) {
        snprintf(path, sizeof(path), "/usr/bin/%s", bins[i]);
        expect_file(dest, path, strcmp(bins[i], "cessna-replay") ? S_IFREG : S_IFLNK);
    }
    snprintf(path, sizeof(path), "%s/usr/bin/cessna-replay", dest);
    ssize_t n = readlink(path, buf, sizeof(buf) - 1);
    cr_assert_gt(n, 0);
    buf[n] = 0;
    cr_assert_str_eq(buf, "cessna-worker", "cessna-replay must link to the worker next to it");
    static const char *const files[] = {
        "/usr/lib/cessna/apps/passthrough.so", "/usr/lib/cessna/apps/compress.so",
        "/usr/include/cessna.h", "/usr/include/cessna_endpoint.h",
        "/usr/lib/libcessna-endpoint.a", "/usr/lib/pkgconfig/cessna.pc",
        "/usr/lib/pkgconfig/cessna-endpoint.pc",
        "/usr/lib/systemd/system/cessna-supervisor@.service",
        "/usr/share/man/man8/cessna-supervisor.8", "/usr/share/man/man8/cessna-worker.8",
        "/usr/share/man/man8/cessna-ctl.8", "/usr/share/man/man8/cessna-client-proxy.8",
        "/usr/share/man/man8/cessna-server-proxy.8", "/usr/share/man/man1/cessna-replay.1",
        "/usr/share/man/man1/cessna-bench.1", "/usr/share/man/man5/cessna.ini.5",
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        expect_file(dest, files[i], S_IFREG);
    expect_file(dest, "/usr/lib/libcessna-endpoint.so", S_IFLNK);
    expect_file(dest, "/usr/lib/libcessna-endpoint.so.0", S_IFLNK);

    /* Generated with the install's prefix. */
    snprintf(path, sizeof(path), "%s/usr/lib/systemd/system/cessna-supervisor@.service", dest);
    t_read_file(path, buf, sizeof(buf));
    cr_assert(strstr(buf, "\nExecStart=/usr/bin/cessna-supervisor -c /etc/cessna/%i.ini\n"),
              "unit: %s", buf);
    cr_assert(strstr(buf, "\nRestart=on-failure\n"));
    cr_assert(!strstr(buf, "@BINDIR@") && !strstr(buf, "@SYSCONFDIR@"), "unsubstituted: %s", buf);
    snprintf(path, sizeof(path), "%s/usr/lib/pkgconfig/cessna.pc", dest);
    t_read_file(path, buf, sizeof(buf));
    cr_assert(strstr(buf, "prefix=/usr\n") && strstr(buf, "includedir=/usr/include\n"),
              "cessna.pc: %s", buf);

    /* 3. Every installed binary answers --version and -V with NAME VERSION, status 0: the
     * VERSION file's, plus the git describe of the tree as it was installed (which may be
     * newer than this test binary's CESSNA_VERSION), the same for all. */
    char version[64], first[256] = "";
    snprintf(path, sizeof(path), "%s/VERSION", CESSNA_SRC_DIR);
    t_read_file(path, version, sizeof(version));
    version[strcspn(version, "\n")] = 0;
    cr_assert(strncmp(CESSNA_VERSION, version, strlen(version)) == 0, "%s", CESSNA_VERSION);
    for (size_t i = 0; i < sizeof(bins) / sizeof(bins[0]); i++) {
        for (int v = 0; v < 2; v++) {
            char log[64], want[256];
            snprintf(log, sizeof(log), "version-%s-%d", bins[i], v);
            snprintf(cmd, sizeof(cmd), "exec '%s/usr/bin/%s' %s", dest, bins[i],
                     v ? "-V" : "--version");
            cr_assert_eq(sh(tmp, log, cmd), 0, "%s", cmd);
            snprintf(path, sizeof(path), "%s/%s.log", tmp, log);
            t_read_file(path, buf, sizeof(buf));
            snprintf(want, sizeof(want), "%s %s", bins[i], version);
            cr_assert(strncmp(buf, want, strlen(want)) == 0 && strchr(buf, '\n'), "%s: %s", cmd,
                      buf);
            const char *v = buf + strlen(bins[i]) + 1;
            if (!first[0])
                snprintf(first, sizeof(first), "%s", v);
            cr_assert_str_eq(v, first, "%s", cmd);
        }
    }

    /* 4. An app from another directory, with pkg-config pointed into the DESTDIR. */
    char appdir[300];
    snprintf(appdir, sizeof(appdir), "%s/app", tmp);
    cr_assert_eq(mkdir(appdir, 0755), 0);
    snprintf(path, sizeof(path), "%s/app.c", appdir);
    write_file(path, app_c);
    snprintf(path, sizeof(path), "%s/ep.c", appdir);
    write_file(path, ep_c);
    snprintf(pc, sizeof(pc), "export PKG_CONFIG_SYSROOT_DIR='%s' PKG_CONFIG_PATH='%s/usr/lib/pkgconfig'",
             dest, dest);
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && %s && cc -shared -fPIC $(pkg-config --cflags cessna) app.c -o app.so",
             appdir, pc);
    cr_assert_eq(sh(tmp, "build-app", cmd), 0, "app build failed: see %s/build-app.log", tmp);
    /* Every example app of the tree builds the same way, against the installed header. */
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && %s && for f in '%s'/apps/*.c; do cp \"$f\" . && "
             "cc -shared -fPIC -Wall -Wextra -Werror $(pkg-config --cflags cessna) "
             "\"$(basename \"$f\")\" -o \"$(basename \"$f\" .c).so\" || exit 1; done",
             appdir, pc, CESSNA_SRC_DIR);
    cr_assert_eq(sh(tmp, "build-examples", cmd), 0,
                 "an example app did not build out of tree: see %s/build-examples.log", tmp);

    /* 5. The installed supervisor checks and runs it (it finds the installed worker). */
    struct t_echo_ep echo;
    char cfg[400];
    t_echo_ep_start(&echo);
    snprintf(cfg, sizeof(cfg), "%s/edge.ini", tmp);
    snprintf(buf, sizeof(buf),
             "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = %s/app.so\n"
             "state_dir = %s/state\n", echo.addr, appdir, tmp);
    write_file(cfg, buf);
    snprintf(cmd, sizeof(cmd), "exec '%s/usr/bin/cessna-supervisor' -c '%s' --check", dest, cfg);
    cr_assert_eq(sh(tmp, "check", cmd), 0, "--check: see %s/check.log", tmp);
    snprintf(path, sizeof(path), "%s/usr/bin/cessna-supervisor", dest);
    struct t_proc sup;
    char *sargv[] = { path, "-c", cfg, NULL };
    t_start(&sup, tmp, "supervisor", sargv);

    /* 6. A native client linked against the installed shared library: the app answers. */
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && %s && cc %s ep.c -o ep $(pkg-config --cflags --libs cessna-endpoint) && "
             "LD_LIBRARY_PATH='%s/usr/lib' LD_TRACE_LOADED_OBJECTS=1 ./ep > ldd.txt && "
             "LD_LIBRARY_PATH='%s/usr/lib' ./ep %s",
             appdir, pc, CESSNA_SANITIZE[0] ? "-fsanitize=" CESSNA_SANITIZE : "", dest, dest,
             sup.addr);
    int rc = sh(tmp, "ep", cmd);
    snprintf(path, sizeof(path), "%s/ep.log", tmp);
    t_read_file(path, buf, sizeof(buf));
    cr_assert_eq(rc, 0, "endpoint program failed: %s", buf);
    cr_assert_str_eq(buf, "got=app:hello\n");
    snprintf(path, sizeof(path), "%s/ldd.txt", appdir);
    t_read_file(path, buf, sizeof(buf));
    snprintf(path, sizeof(path), "%s/usr/lib/libcessna-endpoint.so.0", dest);
    cr_assert(strstr(buf, path), "not linked against the installed shared library: %s", buf);
    t_stop(&sup);

    /* 6b. The installed cessna-bench finds the installed programs and apps by itself. */
    snprintf(cmd, sizeof(cmd), "cd '%s' && '%s/usr/bin/cessna-bench' --paths edge-native "
             "--sizes 64 --messages 200 --seconds 0.5", tmp, dest);
    rc = sh(tmp, "bench", cmd);
    snprintf(path, sizeof(path), "%s/bench.log", tmp);
    t_read_file(path, buf, sizeof(buf));
    cr_assert_eq(rc, 0, "the installed bench failed: %s", buf);
    cr_assert(strstr(buf, "| edge-native"), "no edge-native row: %s", buf);

    /* 7. make uninstall leaves no file behind. */
    snprintf(cmd, sizeof(cmd),
             "env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -C '%s' uninstall DESTDIR='%s' "
             "PREFIX=/usr BUILD='%s' SANITIZE='%s' > '%s/uninstall-make.log' 2>&1 && "
             "find '%s' ! -type d",
             CESSNA_SRC_DIR, dest, CESSNA_BUILD_DIR, CESSNA_SANITIZE, tmp, dest);
    cr_assert_eq(sh(tmp, "uninstall", cmd), 0, "make uninstall failed: see %s/uninstall.log",
                 tmp);
    snprintf(path, sizeof(path), "%s/uninstall.log", tmp);
    t_read_file(path, buf, sizeof(buf));
    char *left = strstr(buf, dest);
    cr_assert_null(left, "left after uninstall: %s", left ? left : "");
}

/* Whole file into a malloc'd string with every backslash dropped (roff escapes "\-"). */
static char *slurp_unescaped(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    char *s = malloc(cap);
    int c;
    while ((c = fgetc(f)) != EOF && n + 1 < cap)
        if (c != '\\')
            s[n++] = (char)c;
    s[n] = 0;
    fclose(f);
    return s;
}

/* The man pages cannot drift from the programs: every option a binary's --help names is in
 * its man page, and every key of README's configuration table is in cessna.ini(5). */
Test(install, man_pages_name_every_option_and_key, .timeout = 60)
{
    static const char *const pages[][2] = {
        { "cessna-supervisor", "8" }, { "cessna-worker", "8" }, { "cessna-ctl", "8" },
        { "cessna-replay", "1" }, { "cessna-client-proxy", "8" }, { "cessna-server-proxy", "8" },
        /* cessna-bench(1) names its main options and sends readers to --help for the rest. */
    };
    char path[4096], line[1024];

    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        snprintf(path, sizeof(path), "%s/man/%s.%s.in", CESSNA_SRC_DIR, pages[i][0], pages[i][1]);
        char *man = slurp_unescaped(path);
        snprintf(path, sizeof(path), "%s/bin/%s --help 2>&1", CESSNA_BUILD_DIR, pages[i][0]);
        FILE *p = popen(path, "r");
        int options = 0;
        char first[160] = "";
        cr_assert(p);
        while (fgets(line, sizeof(line), p)) {
            if (!first[0])
                snprintf(first, sizeof(first), "%s", line);
            for (char *o = strstr(line, "--"); o; o = strstr(o + 2, "--")) {
                size_t n = 2;
                while (o[n] == '-' || (o[n] >= 'a' && o[n] <= 'z'))
                    n++;
                if (n < 4)
                    continue;
                char opt[64];
                snprintf(opt, sizeof(opt), "%.*s", (int)n, o);
                cr_expect(strstr(man, opt), "%s(%s) does not name %s", pages[i][0], pages[i][1],
                          opt);
                options++;
            }
        }
        int status = pclose(p);
        cr_expect_gt(options, 1, "%s --help named no options (wait status %d, first line: %s)",
                     pages[i][0], status, first);
        free(man);
    }

    snprintf(path, sizeof(path), "%s/man/cessna.ini.5.in", CESSNA_SRC_DIR);
    char *ini = slurp_unescaped(path);
    snprintf(path, sizeof(path), "%s/README.md", CESSNA_SRC_DIR);
    FILE *r = fopen(path, "r");
    int keys = 0, in_table = 0;
    cr_assert(r);
    while (fgets(line, sizeof(line), r)) {
        if (strncmp(line, "| key | default | meaning |", 27) == 0)
            in_table = 1;
        else if (in_table && line[0] != '|')
            break;
        char key[80], want[100];
        if (in_table && sscanf(line, "| `%79[a-z_]`", key) == 1) {
            snprintf(want, sizeof(want), ".BR %s ", key);
            cr_expect(strstr(ini, want), "cessna.ini(5) does not name the key %s", key);
            keys++;
        }
    }
    fclose(r);
    cr_expect_gt(keys, 30, "README's key table: %d keys", keys);
    free(ini);
}
