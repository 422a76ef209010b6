# CESSNA-C build.  `make` builds everything into $(BUILD); `make test` runs the tests.
# Options: V=1 shows full commands, WERROR=0 turns warnings back into warnings,
# SANITIZE=address,undefined builds with sanitizers (use another BUILD dir for it).
# `make install [PREFIX=/usr/local] [DESTDIR=]` installs what `make` built; `make uninstall`.

BUILD    ?= build
WERROR   ?= 1
SANITIZE ?=
CC       ?= cc

WARN     := -Wall -Wextra -Wundef -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter -Wno-format-truncation
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -D_GNU_SOURCE -Iinclude -Icommon -fPIC
CFLAGS   += -DCESSNA_BUILD_DIR=\"$(abspath $(BUILD))\" -I$(abspath $(BUILD))/gen
ifeq ($(WERROR),1)
CFLAGS   += -Werror
endif
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=$(SANITIZE)
endif
LDLIBS   := -luring -lxxhash -lzstd -linih -lsodium

ifeq ($(V),1)
Q :=
else
Q := @
endif

COMMON_SRC   := $(wildcard common/*.c)
SUPER_SRC    := $(filter-out supervisor/cessna_ctl.c,$(wildcard supervisor/*.c))
WORKER_SRC   := $(wildcard worker/*.c)
ENDPOINT_LIB := endpoint/endpoint.c endpoint/ep_server.c endpoint/keep.c endpoint/store.c
APPS         := $(patsubst apps/%.c,$(BUILD)/apps/%.so,$(wildcard apps/*.c))
TEST_APPS    := $(patsubst tests/apps/%.c,$(BUILD)/tests/apps/%.so,$(wildcard tests/apps/*.c))
TOOLS        := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(wildcard tests/tools/*.c))
UNIT_SRC     := $(wildcard tests/test_*.c)
IT_SRC       := $(wildcard tests/it_*.c)
THELP_SRC    := $(wildcard tests/t_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
ENDPOINT_OBJ = $(call obj,$(ENDPOINT_LIB) common/wire.c common/order.c common/addr.c common/log.c common/cred.c common/snap.c)

# The version lives in VERSION alone. In a git checkout `git describe` is appended (unless
# it is exactly the tag vVERSION), so a build from a tarball without .git still works.
VERSION      := $(strip $(file < VERSION))
SOVERSION    := $(firstword $(subst ., ,$(VERSION)))
GIT_DESCRIBE := $(if $(wildcard .git),$(shell git describe --tags --always --dirty 2>/dev/null))
FULL_VERSION := $(VERSION)$(if $(filter-out v$(VERSION),$(GIT_DESCRIBE)),+git.$(subst -,.,$(GIT_DESCRIBE)))
VERSION_H    := $(BUILD)/gen/cessna_version.h
# Every main() that answers --version.
VERSION_USERS := supervisor/loop.c supervisor/cessna_ctl.c worker/main.c worker/replay_main.c \
                 endpoint/ploop.c bench/bench.c

BINS := $(BUILD)/bin/cessna-supervisor $(BUILD)/bin/cessna-worker $(BUILD)/bin/cessna-ctl \
        $(BUILD)/bin/cessna-replay \
        $(BUILD)/bin/cessna-client-proxy $(BUILD)/bin/cessna-server-proxy $(BUILD)/bin/cessna-bench

# libcessna-endpoint, shared: exports only cessna_ep_* (the version script), soname .so.MAJOR.
SHLIB       := libcessna-endpoint.so.$(VERSION)
SHLIB_SONAME := libcessna-endpoint.so.$(SOVERSION)

all: $(BINS) $(BUILD)/lib/libcessna-endpoint.a $(BUILD)/lib/$(SHLIB) $(APPS) $(TEST_APPS) $(TOOLS) $(BUILD)/tests/cessna-tests

# Objects rebuild when the flags change.
$(BUILD)/flags.stamp: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS) $(LDFLAGS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(LDFLAGS)' > $@
FORCE:

# The test binary relinks when a test file is added or removed, not only changed.
$(BUILD)/tests.list: FORCE
	@mkdir -p $(BUILD)
	@echo '$(sort $(UNIT_SRC) $(IT_SRC) $(THELP_SRC))' | cmp -s - $@ || \
		echo '$(sort $(UNIT_SRC) $(IT_SRC) $(THELP_SRC))' > $@

# Rewritten only when the version changes, so only the mains that print it rebuild. When git
# cannot describe a checkout it has (`sudo make install` in a tree you own: git refuses a
# repository owned by another user), the version `make` wrote stays, and nothing recompiles.
GIT_FAILED   := $(if $(wildcard .git),$(if $(GIT_DESCRIBE),,1))
$(VERSION_H): FORCE
	@mkdir -p $(dir $@)
	@if [ -n "$(GIT_FAILED)" ] && [ -f $@ ]; then :; else \
		echo '#define CESSNA_VERSION "$(FULL_VERSION)"' | cmp -s - $@ || \
		echo '#define CESSNA_VERSION "$(FULL_VERSION)"' > $@; fi
$(call obj,$(VERSION_USERS)): $(VERSION_H)

$(BUILD)/obj/%.o: %.c $(BUILD)/flags.stamp
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libcommon.a: $(call obj,$(COMMON_SRC))
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/lib/libcessna-endpoint.a: $(ENDPOINT_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/lib/$(SHLIB): $(ENDPOINT_OBJ) endpoint/libcessna-endpoint.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -shared -Wl,-soname,$(SHLIB_SONAME) -Wl,--no-undefined \
		-Wl,--version-script=endpoint/libcessna-endpoint.map -o $@ $(ENDPOINT_OBJ) \
		-lsodium -lxxhash -lzstd -lpthread
	$(Q)ln -sf $(SHLIB) $(BUILD)/lib/$(SHLIB_SONAME)
	$(Q)ln -sf $(SHLIB_SONAME) $(BUILD)/lib/libcessna-endpoint.so

define link
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter-out %.list,$^) $(1)
endef

$(BUILD)/bin/cessna-supervisor: $(call obj,$(SUPER_SRC)) $(BUILD)/libcommon.a
	$(call link,$(LDLIBS) -lpthread)
# The worker exports the app API (cessna_*) to the dlopen()ed app module.
$(BUILD)/bin/cessna-worker: $(call obj,$(WORKER_SRC)) $(BUILD)/libcommon.a
	$(call link,-rdynamic $(LDLIBS) -ldl -lseccomp)
# cessna-replay is the worker binary under another name: the same layout as the edge's.
$(BUILD)/bin/cessna-replay: $(BUILD)/bin/cessna-worker
	$(Q)ln -sf cessna-worker $@
$(BUILD)/bin/cessna-ctl: $(call obj,supervisor/cessna_ctl.c) $(BUILD)/libcommon.a
	$(call link,$(LDLIBS) -ljansson)
PROXY_SRC := endpoint/ploop.c endpoint/relay.c endpoint/keep.c endpoint/framing.c
$(BUILD)/bin/cessna-client-proxy: $(call obj,endpoint/client_proxy.c $(PROXY_SRC)) $(BUILD)/lib/libcessna-endpoint.a
	$(call link,-luring -lsodium)
$(BUILD)/bin/cessna-server-proxy: $(call obj,endpoint/server_proxy.c $(PROXY_SRC) endpoint/store.c) $(BUILD)/lib/libcessna-endpoint.a $(BUILD)/libcommon.a
	$(call link,-luring -lsodium -lxxhash -lzstd)
$(BUILD)/bin/cessna-bench: $(call obj,$(wildcard bench/*.c)) $(BUILD)/lib/libcessna-endpoint.a $(BUILD)/libcommon.a
	$(call link,$(LDLIBS) -lpthread -lm)

# Apps build exactly as a user builds one out of tree: against include/cessna.h alone.
APP_CFLAGS := -O2 -g -std=gnu11 -Wall -Wextra -shared -fPIC -Iinclude
$(BUILD)/apps/compress.so: LDLIBS_APP := -lz
$(BUILD)/apps/%.so: apps/%.c include/cessna.h $(BUILD)/flags.stamp
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  APP     $@")
	$(Q)$(CC) $(APP_CFLAGS) $(if $(SANITIZE),-fsanitize=undefined) $< -o $@ $(LDLIBS_APP)

$(BUILD)/tests/apps/%.so: tests/apps/%.c include/cessna.h $(BUILD)/flags.stamp
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(APP_CFLAGS) $< -o $@

$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/lib/libcessna-endpoint.a $(BUILD)/libcommon.a $(BUILD)/flags.stamp
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TOOL    $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) $< -o $@ $(BUILD)/lib/libcessna-endpoint.a $(BUILD)/libcommon.a $(LDLIBS) -lz -lpthread
# Tools have no dependency files: the one that includes a test header names it.
$(BUILD)/tools/iotagg_driver: tests/t_iotagg.h

# One Criterion binary: unit tests per module plus integration tests with real processes.
# --wrap=ring_put lets test_evstore.c run a hook after a failed reservation (a consumer
# popping at that instant); unarmed, the wrapper only calls the real ring_put.
TEST_WRAP := -Wl,--wrap=ring_put
# tests/it_install.c runs `make install` from this tree, with this build's settings.
$(call obj,tests/it_install.c): CFLAGS += -DCESSNA_SRC_DIR=\"$(CURDIR)\" -DCESSNA_SANITIZE=\"$(SANITIZE)\"
$(BUILD)/tests/cessna-tests: $(call obj,$(UNIT_SRC) $(IT_SRC) $(THELP_SRC) worker/arena.c \
		supervisor/evstore.c supervisor/timers.c endpoint/keep.c endpoint/framing.c) $(BUILD)/lib/libcessna-endpoint.a $(BUILD)/libcommon.a \
		$(BUILD)/tests.list
	$(call link,$(TEST_WRAP) -lcriterion $(LDLIBS) -ljansson -lz -lpthread)

# The long runs (`make soak`): not part of `make test`.
$(BUILD)/tests/cessna-soak: $(call obj,$(wildcard tests/soak/*.c) $(THELP_SRC)) \
		$(BUILD)/lib/libcessna-endpoint.a $(BUILD)/libcommon.a
	$(call link,-lcriterion $(LDLIBS) -lz -lpthread)

# `make test` and `make demo` first install what is missing (Debian, as root), then build.
TEST_JOBS ?= 2
test: deps
	$(MAKE) all
	scripts/run-tests.sh $(BUILD)/tests/cessna-tests --jobs $(TEST_JOBS) $(TEST_ARGS)

# Kill storms for CESSNA_SOAK_SECONDS each (default 300) and 10,000 sessions under kills.
soak: deps
	$(MAKE) all $(BUILD)/tests/cessna-soak
	$(BUILD)/tests/cessna-soak --jobs 1 --verbose $(TEST_ARGS)

# Same tests, sanitizer build, separate build dir.
test-sanitize:
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	$(MAKE) BUILD=build-san SANITIZE=address,undefined test

demo: deps
	$(MAKE) all
	scripts/demo.sh $(BUILD)

# The example apps on loopback, each with its driver and a worker killed midway
# (demo-compress is `make demo`).
DEMO_APPS := demo-confctl demo-game demo-ratelimit demo-iotagg
$(DEMO_APPS): demo-%: deps
	$(MAKE) all
	scripts/demo-$*.sh $(BUILD)

demo-compress: demo

deps:
	scripts/install-deps.sh

# ---- make install / make uninstall ------------------------------------------------------
# GNU-style directories; DESTDIR stages the whole tree (packaging, tests/it_install.c).
# `install` builds nothing that `make` built already: after `make` it only copies (as root,
# it never recompiles your tree). Templates (*.in: pkg-config, unit, man pages) get the
# final paths here, so `make` and `make install PREFIX=/usr` may use different prefixes.
PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
APPDIR       ?= $(LIBDIR)/cessna/apps
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR       ?= $(PREFIX)/share/man
UNITDIR      ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR   ?= /etc
INSTALL      ?= install

INST_BINS := cessna-supervisor cessna-worker cessna-ctl cessna-client-proxy cessna-server-proxy \
             cessna-bench
INST_MAN  := $(wildcard man/*.[1-8].in)
INST_PC   := cessna.pc cessna-endpoint.pc
INST_UNIT := cessna-supervisor@.service
SUBST = sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
            -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
            -e 's|@APPDIR@|$(APPDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'

install: $(BINS) $(BUILD)/lib/libcessna-endpoint.a $(BUILD)/lib/$(SHLIB) $(APPS)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(APPDIR) $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	$(INSTALL) -m 755 $(addprefix $(BUILD)/bin/,$(INST_BINS)) $(DESTDIR)$(BINDIR)
	ln -sf cessna-worker $(DESTDIR)$(BINDIR)/cessna-replay
	$(INSTALL) -m 644 $(APPS) $(DESTDIR)$(APPDIR)
	$(INSTALL) -m 644 include/cessna.h include/cessna_endpoint.h $(DESTDIR)$(INCLUDEDIR)
	$(INSTALL) -m 644 $(BUILD)/lib/libcessna-endpoint.a $(DESTDIR)$(LIBDIR)
	$(INSTALL) -m 755 $(BUILD)/lib/$(SHLIB) $(DESTDIR)$(LIBDIR)
	ln -sf $(SHLIB) $(DESTDIR)$(LIBDIR)/$(SHLIB_SONAME)
	ln -sf $(SHLIB_SONAME) $(DESTDIR)$(LIBDIR)/libcessna-endpoint.so
	for f in $(INST_PC); do $(SUBST) pkgconfig/$$f.in > $(DESTDIR)$(PKGCONFIGDIR)/$$f || exit 1; done
	$(SUBST) systemd/$(INST_UNIT).in > $(DESTDIR)$(UNITDIR)/$(INST_UNIT)
	for f in $(INST_MAN); do \
		m=$$(basename $$f .in); s=$${m##*.}; \
		$(SUBST) $$f > $(DESTDIR)$(MANDIR)/man$$s/$$m || exit 1; \
	done
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(INST_BINS) cessna-replay)
	rm -f $(addprefix $(DESTDIR)$(APPDIR)/,$(notdir $(APPS)))
	rmdir $(DESTDIR)$(APPDIR) $(DESTDIR)$(LIBDIR)/cessna 2>/dev/null || true
	rm -f $(DESTDIR)$(INCLUDEDIR)/cessna.h $(DESTDIR)$(INCLUDEDIR)/cessna_endpoint.h
	rm -f $(addprefix $(DESTDIR)$(LIBDIR)/,libcessna-endpoint.a libcessna-endpoint.so \
		$(SHLIB_SONAME) $(SHLIB))
	rm -f $(addprefix $(DESTDIR)$(PKGCONFIGDIR)/,$(INST_PC)) $(DESTDIR)$(UNITDIR)/$(INST_UNIT)
	for f in $(INST_MAN); do \
		m=$$(basename $$f .in); rm -f $(DESTDIR)$(MANDIR)/man$${m##*.}/$$m; \
	done

clean:
	rm -rf build build-san

.PHONY: all test test-sanitize soak demo demo-compress $(DEMO_APPS) deps clean install uninstall FORCE
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
