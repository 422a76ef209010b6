# CESSNA-C build.  `make` builds everything into $(BUILD); `make test` runs the tests.
# Options: V=1 shows full commands, WERROR=0 turns warnings back into warnings,
# SANITIZE=address,undefined builds with sanitizers (use another BUILD dir for it).

BUILD    ?= build
WERROR   ?= 1
SANITIZE ?=
CC       ?= cc

WARN     := -Wall -Wextra -Wundef -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter -Wno-format-truncation
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -D_GNU_SOURCE -Iinclude -Icommon -fPIC
CFLAGS   += -DCESSNA_BUILD_DIR=\"$(abspath $(BUILD))\"
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

BINS := $(BUILD)/bin/cessna-supervisor $(BUILD)/bin/cessna-worker $(BUILD)/bin/cessna-ctl \
        $(BUILD)/bin/cessna-replay \
        $(BUILD)/bin/cessna-client-proxy $(BUILD)/bin/cessna-server-proxy $(BUILD)/bin/cessna-bench

all: $(BINS) $(BUILD)/lib/libcessna-endpoint.a $(APPS) $(TEST_APPS) $(TOOLS) $(BUILD)/tests/cessna-tests

# Objects rebuild when the flags change.
$(BUILD)/flags.stamp: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS) $(LDFLAGS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(LDFLAGS)' > $@
FORCE:

$(BUILD)/obj/%.o: %.c $(BUILD)/flags.stamp
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libcommon.a: $(call obj,$(COMMON_SRC))
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/lib/libcessna-endpoint.a: $(call obj,$(ENDPOINT_LIB)) $(call obj,common/wire.c common/order.c common/addr.c common/log.c common/cred.c common/snap.c)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

define link
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(1)
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
$(BUILD)/bin/cessna-client-proxy: $(call obj,endpoint/client_proxy.c endpoint/ploop.c endpoint/relay.c endpoint/keep.c) $(BUILD)/lib/libcessna-endpoint.a
	$(call link,-luring -lsodium)
$(BUILD)/bin/cessna-server-proxy: $(call obj,endpoint/server_proxy.c endpoint/ploop.c endpoint/relay.c endpoint/keep.c endpoint/store.c) $(BUILD)/lib/libcessna-endpoint.a $(BUILD)/libcommon.a
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

# One Criterion binary: unit tests per module plus integration tests with real processes.
# --wrap=ring_put lets test_evstore.c run a hook after a failed reservation (a consumer
# popping at that instant); unarmed, the wrapper only calls the real ring_put.
TEST_WRAP := -Wl,--wrap=ring_put
$(BUILD)/tests/cessna-tests: $(call obj,$(UNIT_SRC) $(IT_SRC) $(THELP_SRC) worker/arena.c \
		supervisor/evstore.c supervisor/timers.c endpoint/keep.c) $(BUILD)/lib/libcessna-endpoint.a $(BUILD)/libcommon.a
	$(call link,$(TEST_WRAP) -lcriterion $(LDLIBS) -ljansson -lz -lpthread)

# The long runs (`make soak`): not part of `make test`.
$(BUILD)/tests/cessna-soak: $(call obj,$(wildcard tests/soak/*.c) $(THELP_SRC)) \
		$(BUILD)/lib/libcessna-endpoint.a $(BUILD)/libcommon.a
	$(call link,-lcriterion $(LDLIBS) -lz -lpthread)

# `make test` and `make demo` first install what is missing (Debian, as root), then build.
TEST_JOBS ?= 2
test: deps
	$(MAKE) all
	$(BUILD)/tests/cessna-tests --jobs $(TEST_JOBS) $(TEST_ARGS)

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

deps:
	scripts/install-deps.sh

clean:
	rm -rf build build-san

.PHONY: all test test-sanitize soak demo deps clean FORCE
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
