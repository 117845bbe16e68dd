# pagerd / libpager
#
#   make              build everything into build/
#   make check        build and run every test (SANITIZE=1: under ASan+UBSan,
#                     with the page invariant checker on: daemon/page.h)
#   make soak         the snapshot stress, long (SNAP_STRESS_RUNS=500)
#   make demo         run the demo: an application bigger than its limit
#   make bench        benchmarks against the kernel, printed as ratios
#   make torture      the randomized stress with oracles, long (TORTURE_SECONDS=600,
#                     TORTURE_SEED, TORTURE_OPS: see tests/torture.c)
#   make install      PREFIX=/usr/local DESTDIR= (and the *DIR variables below)
#   make uninstall    the same variables: removes what install put there
#
# Every build checks that the packages it needs are there (scripts/deps.sh);
# only make check and make demo, run as root, install missing ones with
# apt-get.  CPPFLAGS, CFLAGS and LDFLAGS are honoured; a change of them or
# of the install paths rebuilds what depends on them.

VERSION      := 0.2.0
SOVERSION    := 0
PREFIX       ?= /usr/local
CC           ?= cc
# Install directories (GNU names).  The configuration lives in /etc whatever
# the prefix: pagerd reads $(SYSCONFDIR)/pagerd/pagerd.conf.
BINDIR       ?= $(PREFIX)/bin
SBINDIR      ?= $(PREFIX)/sbin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
MANDIR       ?= $(PREFIX)/share/man
SYSCONFDIR   ?= /etc
UNITDIR      ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR  ?= $(PREFIX)/lib/tmpfiles.d
SYSUSERSDIR  ?= $(PREFIX)/lib/sysusers.d
UDEVRULESDIR ?= $(PREFIX)/lib/udev/rules.d

ifeq ($(SANITIZE),1)
BUILD        ?= build-san
SANFLAGS     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
                -DPAGERD_CHECK_INVARIANTS
OPT          ?= -O1
else
BUILD        ?= build
SANFLAGS     :=
OPT          ?= -O2
endif

WARN         := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wno-missing-field-initializers
CFLAGS       ?= $(OPT) -g
ALL_CFLAGS    = -std=gnu11 $(WARN) $(CPPFLAGS) $(CFLAGS) $(SANFLAGS) -D_GNU_SOURCE \
                -Iinclude -Icommon -MMD -MP \
                -DPAGERD_INSTALL_PATH='"$(SBINDIR)/pagerd"' \
                -DPAGERD_CONFIG_FILE='"$(SYSCONFDIR)/pagerd/pagerd.conf"' \
                -DPAGERD_VERSION='"$(VERSION)"'
ALL_LDFLAGS   = $(LDFLAGS) $(SANFLAGS)

# Stamps that change (and so rebuild what depends on them) only when their
# text does: the compiler and its flags (every object), and the paths
# compiled in (the files that use them).  Written as the Makefile is read.
stamp = $(shell mkdir -p $(BUILD) && f=$(BUILD)/$(1).stamp && \
	  printf '%s\n' '$(subst ','\'',$(2))' > $$f.new && \
	  { cmp -s $$f.new $$f && rm -f $$f.new || mv -f $$f.new $$f; }; echo $$f)
FLAGS_STAMP  := $(call stamp,flags,$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) $(SANFLAGS) $(LDFLAGS))
PATHS_STAMP  := $(call stamp,paths,$(PREFIX) $(SBINDIR) $(SYSCONFDIR) $(LIBDIR) $(INCLUDEDIR) $(VERSION))
PATH_USERS   := libpager/pager.c daemon/config.c tests/test_config.c

# Expanded when a recipe runs, after scripts/deps.sh has installed them.
EVENT_LIBS    = $(shell pkg-config --libs libevent)
SYSTEMD_LIBS  = $(shell pkg-config --libs libsystemd)
URING_LIBS    = $(shell pkg-config --libs liburing)
CMOCKA_LIBS   = $(shell pkg-config --libs cmocka)
INIH_LIBS     = $(shell pkg-config --libs inih)
# librbd-dev ships no pkg-config file.
RBD_LIBS     := -lrbd -lrados
POOL_LIBS     = $(shell pkg-config --libs liblz4 libzstd)

COMMON_SRC   := common/proto.c common/size.c
LIB_SRC      := libpager/pager.c libpager/call.c libpager/region.c libpager/uffd.c libpager/agent.c libpager/snapshot.c common/proto.c common/image.c
DAEMON_SRC   := $(wildcard daemon/*.c) $(COMMON_SRC)
CTL_SRC      := pagerctl/pagerctl.c common/image.c $(COMMON_SRC)
EXAMPLES     := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
UNIT_TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
INTEG_TESTS  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/itest_*.c))
SCRIPT_TESTS := $(wildcard tests/itest_*.sh)
BENCHES      := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
pic = $(patsubst %.c,$(BUILD)/pic/%.o,$(1))

LIBSO        := $(BUILD)/libpager.so.$(VERSION)
TARGETS      := $(LIBSO) $(BUILD)/libpager.a $(BUILD)/pagerd $(BUILD)/pagerctl \
                $(BUILD)/libpager.pc $(EXAMPLES)

.PHONY: all deps check soak demo bench install uninstall clean torture
# Keep objects of programs built by pattern rules (make would delete them).
.SECONDARY:
all: $(TARGETS)

# Checks; installs only for the two commands of the README (as root).
DEPS_FLAGS :=
check demo: DEPS_FLAGS := --install
deps:
	@scripts/deps.sh $(DEPS_FLAGS)

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP) | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/pic/%.o: %.c $(FLAGS_STAMP) | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

$(call obj,$(PATH_USERS)) $(call pic,$(PATH_USERS)): $(PATHS_STAMP)

$(LIBSO): $(call pic,$(LIB_SRC)) libpager/libpager.map
	$(CC) -shared -o $@ $(filter %.o,$^) $(ALL_LDFLAGS) -lpthread \
		-Wl,-soname,libpager.so.$(SOVERSION) \
		-Wl,--version-script=libpager/libpager.map -Wl,--no-undefined
	ln -sf libpager.so.$(VERSION) $(BUILD)/libpager.so.$(SOVERSION)
	ln -sf libpager.so.$(SOVERSION) $(BUILD)/libpager.so

# One relocatable object whose hidden symbols (proto_*, image_*, the
# library's internals) are made local: only what libpager.so exports is
# global, and a program linking libpager.a statically cannot clash with them.
$(BUILD)/libpager.a: $(call pic,$(LIB_SRC))
	rm -f $@ $(BUILD)/libpager-static.o
	$(LD) -r -o $(BUILD)/libpager-static.o $^
	objcopy --localize-hidden $(BUILD)/libpager-static.o
	ar rcs $@ $(BUILD)/libpager-static.o

$(BUILD)/libpager.pc: libpager/libpager.pc.in Makefile $(PATHS_STAMP)
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

$(BUILD)/pagerd: $(call obj,$(DAEMON_SRC))
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(EVENT_LIBS) $(URING_LIBS) $(SYSTEMD_LIBS) $(INIH_LIBS) $(RBD_LIBS) $(POOL_LIBS) -lpthread

$(BUILD)/pagerctl: $(call obj,$(CTL_SRC))
	$(CC) -o $@ $^ $(ALL_LDFLAGS)

# Programs link the shared library and find it through an rpath.
$(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(LIBSO)
	@mkdir -p $(@D)
	$(CC) -o $@ $< $(ALL_LDFLAGS) -L$(BUILD) -lpager -lpthread -lm -Wl,-rpath,'$$ORIGIN/..'
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBSO)
	@mkdir -p $(@D)
	$(CC) -o $@ $< $(ALL_LDFLAGS) -L$(BUILD) -lpager -lpthread -lm -Wl,-rpath,'$$ORIGIN/..'
# The handoff floor uses io_uring as pagerd does.
$(BUILD)/bench/handoff: $(BUILD)/obj/bench/handoff.o $(LIBSO)
	@mkdir -p $(@D)
	$(CC) -o $@ $< $(ALL_LDFLAGS) $(URING_LIBS) -lpthread

# Unit tests link the module they test; integration tests link libpager
# and the test harness, and run a real pagerd.
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/test_%.o $(call obj,$(COMMON_SRC))
	@mkdir -p $(@D)
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(CMOCKA_LIBS) $(EVENT_LIBS) $(URING_LIBS) $(INIH_LIBS) $(RBD_LIBS) $(POOL_LIBS) -lpthread
$(BUILD)/tests/itest_%: $(BUILD)/obj/tests/itest_%.o $(BUILD)/obj/tests/harness.o $(call obj,$(COMMON_SRC)) $(LIBSO)
	@mkdir -p $(@D)
	$(CC) -o $@ $(filter %.o,$^) $(ALL_LDFLAGS) -L$(BUILD) -lpager $(CMOCKA_LIBS) -lpthread -Wl,-rpath,'$$ORIGIN/..' $(ITEST_LIBS_$*)
# itest_rbd plays another Ceph client (one holding an image's lock).
ITEST_LIBS_rbd := $(RBD_LIBS)

# The torture harness: run long by `make torture`, short (a fixed seed) in
# make check through tests/itest_torture.sh.
$(BUILD)/tests/torture: $(BUILD)/obj/tests/torture.o $(BUILD)/obj/tests/harness.o $(call obj,$(COMMON_SRC)) $(LIBSO)
	@mkdir -p $(@D)
	$(CC) -o $@ $(filter %.o,$^) $(ALL_LDFLAGS) -L$(BUILD) -lpager -lpthread -Wl,-rpath,'$$ORIGIN/..'

TORTURE_SECONDS ?= 600
# Every class that holds on today's code (TORTURE_OPS=all for everything).
TORTURE_OPS ?= write,read,rmw,discard,limit,recreate,inject,kill,stall,restart,fullswap,snapshot,restore
torture: all $(BUILD)/tests/torture
	PAGERD=$(CURDIR)/$(BUILD)/pagerd TORTURE_SECONDS=$(TORTURE_SECONDS) TORTURE_OPS=$(TORTURE_OPS) \
		timeout -k 10 $$(( $(TORTURE_SECONDS) + 900 )) nice $(BUILD)/tests/torture

# The client tests/itest_systemd.sh runs inside its container.
$(BUILD)/tests/svc_client: $(BUILD)/obj/tests/svc_client.o $(LIBSO)
	@mkdir -p $(@D)
	$(CC) -o $@ $< $(ALL_LDFLAGS) -L$(BUILD) -lpager -lpthread -Wl,-rpath,'$$ORIGIN/..'

check: all $(UNIT_TESTS) $(INTEG_TESTS) $(BUILD)/tests/torture $(BUILD)/tests/svc_client
	@SANITIZE=$(SANITIZE) DEPS_FLAGS="$(DEPS_FLAGS)" tests/run.sh $(BUILD) $(UNIT_TESTS) $(INTEG_TESTS) $(SCRIPT_TESTS)

# The snapshot stress of make check, long: SNAP_STRESS_RUNS runs (default
# 500, about a second each), every image checked to be one cut.
SNAP_STRESS_RUNS ?= 500
soak: all $(BUILD)/tests/itest_snapshot
	PAGERD=$(CURDIR)/$(BUILD)/pagerd ITEST_FILTER=cut_stress \
		SNAP_STRESS_RUNS=$(SNAP_STRESS_RUNS) \
		timeout -k 10 $$(( $(SNAP_STRESS_RUNS) * 10 + 300 )) $(BUILD)/tests/itest_snapshot

demo: all
	@PAGERD=$(BUILD)/pagerd $(BUILD)/examples/demo

bench: all $(BENCHES)
	@bench/run.sh $(BUILD)

# Files installed as they are: SOURCE:DIRECTORY:NAME:MODE.  Units get their
# paths substituted; the configuration file is never overwritten.
INSTALL_FILES := \
	include/pager.h:$(INCLUDEDIR):pager.h:644 \
	man/pagerd.8:$(MANDIR)/man8:pagerd.8:644 \
	man/pagerctl.8:$(MANDIR)/man8:pagerctl.8:644 \
	man/pagerd.conf.5:$(MANDIR)/man5:pagerd.conf.5:644 \
	man/libpager.3:$(MANDIR)/man3:libpager.3:644 \
	systemd/pagerd.socket:$(UNITDIR):pagerd.socket:644 \
	systemd/tmpfiles.conf:$(TMPFILESDIR):pagerd.conf:644 \
	systemd/sysusers.conf:$(SYSUSERSDIR):pagerd.conf:644 \
	systemd/60-userfaultfd.rules:$(UDEVRULESDIR):60-userfaultfd.rules:644

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig \
		$(DESTDIR)$(SYSCONFDIR)/pagerd
	install -m 755 $(BUILD)/pagerctl $(DESTDIR)$(BINDIR)/pagerctl
	install -m 755 $(BUILD)/pagerd $(DESTDIR)$(SBINDIR)/pagerd
	install -m 755 $(LIBSO) $(DESTDIR)$(LIBDIR)/libpager.so.$(VERSION)
	ln -sf libpager.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libpager.so.$(SOVERSION)
	ln -sf libpager.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libpager.so
	install -m 644 $(BUILD)/libpager.a $(DESTDIR)$(LIBDIR)/libpager.a
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|^libdir=.*|libdir=$(LIBDIR)|' -e 's|^includedir=.*|includedir=$(INCLUDEDIR)|' \
	    libpager/libpager.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/libpager.pc
	@set -e; for f in $(INSTALL_FILES); do \
		(IFS=:; set -- $$f; \
		 echo "install -m $$4 $$1 $(DESTDIR)$$2/$$3"; \
		 install -D -m $$4 $$1 "$(DESTDIR)$$2/$$3"); \
	done
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    systemd/pagerd.service.in > $(DESTDIR)$(UNITDIR)/pagerd.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/pagerd/pagerd.conf ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/pagerd/pagerd.conf"; \
	else \
		echo "install -m 644 etc/pagerd.conf $(DESTDIR)$(SYSCONFDIR)/pagerd/pagerd.conf"; \
		install -m 644 etc/pagerd.conf $(DESTDIR)$(SYSCONFDIR)/pagerd/pagerd.conf; \
	fi

# Everything install put there; pagerd.conf only if it is still the shipped
# one (an edited configuration stays, and is named); directories only if
# empty.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/pagerctl $(DESTDIR)$(SBINDIR)/pagerd \
	      $(DESTDIR)$(LIBDIR)/libpager.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libpager.so.$(SOVERSION) \
	      $(DESTDIR)$(LIBDIR)/libpager.so $(DESTDIR)$(LIBDIR)/libpager.a \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/libpager.pc $(DESTDIR)$(UNITDIR)/pagerd.service
	@set -e; for f in $(INSTALL_FILES); do \
		(IFS=:; set -- $$f; echo "rm -f $(DESTDIR)$$2/$$3"; rm -f "$(DESTDIR)$$2/$$3"); \
	done
	@c=$(DESTDIR)$(SYSCONFDIR)/pagerd/pagerd.conf; \
	if [ -e "$$c" ] && ! cmp -s etc/pagerd.conf "$$c"; then \
		echo "keeping $$c: it was edited"; \
	else \
		echo "rm -f $$c"; rm -f "$$c"; \
	fi
	@rmdir "$(DESTDIR)$(SYSCONFDIR)/pagerd" 2>/dev/null || true
	@# A staging tree (DESTDIR) is left without the directories install
	@# made; a live system keeps its standard ones.
	@if [ -n "$(DESTDIR)" ]; then \
		for d in $(BINDIR) $(SBINDIR) $(INCLUDEDIR) $(LIBDIR)/pkgconfig $(UNITDIR) \
			 $(TMPFILESDIR) $(SYSUSERSDIR) $(UDEVRULESDIR) $(MANDIR)/man3 \
			 $(MANDIR)/man5 $(MANDIR)/man8 $(SYSCONFDIR); do \
			d="$(DESTDIR)$$d"; \
			while [ "$$d" != "$(DESTDIR)" ] && [ "$$d" != / ] && rmdir "$$d" 2>/dev/null; do \
				d=$$(dirname "$$d"); \
			done; \
		done; \
	fi

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
