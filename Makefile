# snapctl - live external checkpoints of QEMU VMs.
#
#   make            build ./snapctl
#   make check      install what is missing, lint, then every test (also ASan)
#   make asan       ASan+UBSan build and the suite against it
#   make fuzz       libFuzzer targets, each for FUZZ_SECONDS
#   make bench      benchmarks (bench/), one table each
#   make demo       boot a test VM, checkpoint it live, restore it
#   make install    PREFIX=/usr/local DESTDIR= (binary and man pages)

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
CC ?= cc
PKG_CONFIG ?= pkg-config
FUZZ_SECONDS ?= 20

VERSION := 0.1.0
PKGS := jansson libzstd readline libcrypto
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)

# -Werror only where we own the compiler: make check and CI pass
# WERROR=-Werror; a user's or a distribution's plain make does not.
WERROR ?=
WARN := -Wall -Wextra $(WERROR) -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wno-unused-parameter
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -DSNAPCTL_VERSION='"$(VERSION)"' \
	$(WARN) $(PKG_CFLAGS)
CFLAGS ?= -O2 -g
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(PKG_LIBS) -lpthread

SRCS := $(sort $(wildcard *.c))
# The core: everything but the command-line layer (main, shell, commands).
CORE_SRCS := $(filter-out snapctl.c shell.c cmd_%.c,$(SRCS))
OBJS := $(SRCS:%.c=build/%.o)
ASAN_OBJS := $(SRCS:%.c=build-asan/%.o)
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined

# BLAKE3, the BLAKE3 team's C code (third_party/blake3/README.snapctl),
# built with its own flags: its assembly on x86-64, NEON on aarch64, the
# portable code elsewhere.
B3_DIR := third_party/blake3
B3_SRCS := blake3.c blake3_dispatch.c blake3_portable.c
B3_DEFS :=
B3_MACHINE := $(shell $(CC) -dumpmachine 2>/dev/null)
ifneq ($(filter x86_64-%,$(B3_MACHINE)),)
B3_SRCS += blake3_sse2_x86-64_unix.S blake3_sse41_x86-64_unix.S \
	blake3_avx2_x86-64_unix.S blake3_avx512_x86-64_unix.S
else ifneq ($(filter aarch64-%,$(B3_MACHINE)),)
B3_SRCS += blake3_neon.c
B3_DEFS := -DBLAKE3_USE_NEON=1
else
B3_DEFS := -DBLAKE3_NO_SSE2 -DBLAKE3_NO_SSE41 -DBLAKE3_NO_AVX2 \
	-DBLAKE3_NO_AVX512
endif
B3_OBJS := $(addprefix build/b3/,$(addsuffix .o,$(basename $(B3_SRCS))))
B3_ASAN_OBJS := $(B3_OBJS:build/%=build-asan/%)

UNIT_SRCS := $(sort $(wildcard tests/unit/*.c))
UNITS := $(UNIT_SRCS:tests/unit/%.c=build/unit-%)
HELPER_SRCS := $(sort $(wildcard tests/helper/*.c))
HELPERS := $(HELPER_SRCS:tests/helper/%.c=build/helper-%)
# The LD_PRELOAD shim of tests/t-faults.sh (not linked with the core).
FAULT_SO := build/faultinject.so

.PHONY: all check asan fuzz bench demo deps install uninstall clean lint \
	test-plain test-asan units helpers

all: snapctl

snapctl: $(OBJS) $(B3_OBJS)
	$(CC) $(CFLAGS) -o $@ $(OBJS) $(B3_OBJS) $(ALL_LDFLAGS)

# Objects depend on the flags they were built with: a make check after a
# plain make rebuilds with -Werror instead of trusting old objects.
FLAGS_STAMP := build/.flags
ifneq ($(file < $(FLAGS_STAMP)),$(ALL_CFLAGS) $(ASAN_FLAGS))
$(shell rm -f $(FLAGS_STAMP))
endif
$(FLAGS_STAMP): | build
	$(file > $@,$(ALL_CFLAGS) $(ASAN_FLAGS))

build/%.o: %.c $(FLAGS_STAMP) | build
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build-asan/%.o: %.c $(FLAGS_STAMP) | build-asan
	$(CC) $(BASE_CFLAGS) $(ASAN_FLAGS) -MMD -MP -c -o $@ $<

build-asan/snapctl: $(ASAN_OBJS) $(B3_ASAN_OBJS)
	$(CC) $(ASAN_FLAGS) -o $@ $(ASAN_OBJS) $(B3_ASAN_OBJS) $(ALL_LDFLAGS)

build/b3/%.o: $(B3_DIR)/%.c $(FLAGS_STAMP) | build/b3
	$(CC) $(CFLAGS) $(B3_DEFS) -c -o $@ $<
build/b3/%.o: $(B3_DIR)/%.S $(FLAGS_STAMP) | build/b3
	$(CC) $(CFLAGS) -c -o $@ $<
build-asan/b3/%.o: $(B3_DIR)/%.c $(FLAGS_STAMP) | build-asan/b3
	$(CC) $(ASAN_FLAGS) $(B3_DEFS) -c -o $@ $<
build-asan/b3/%.o: $(B3_DIR)/%.S $(FLAGS_STAMP) | build-asan/b3
	$(CC) -g -c -o $@ $<

build build-asan build/b3 build-asan/b3:
	mkdir -p $@

# Unit tests link the core (everything but main) with ASan+UBSan.
build/unit-%: tests/unit/%.c $(CORE_SRCS:%.c=build-asan/%.o) \
    $(B3_ASAN_OBJS) | build
	$(CC) $(BASE_CFLAGS) $(ASAN_FLAGS) -MMD -MP -MF $@.d -I. -o $@ $^ \
		$(ALL_LDFLAGS)

build/helper-%: tests/helper/%.c $(CORE_SRCS:%.c=build/%.o) $(B3_OBJS) \
    | build
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -MMD -MP -MF $@.d -I. -o $@ $^ \
		$(ALL_LDFLAGS)

$(FAULT_SO): tests/fault/faultinject.c | build
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -U_FORTIFY_SOURCE \
		-fPIC -shared -o $@ $< -ldl

units: $(UNITS)
helpers: $(HELPERS) $(FAULT_SO)

deps:
	@bash tests/deps.sh

# The suite once against ./snapctl and once against the ASan+UBSan build.
# Targets that need deps build in a second make: PKG_LIBS is computed when
# the Makefile is read, before deps may have installed the -dev packages.
check: deps
	@$(MAKE) --no-print-directory WERROR=-Werror all build-asan/snapctl \
		units helpers
	@$(MAKE) --no-print-directory lint
	@bash tests/run.sh ./snapctl build-asan/snapctl

test-plain: all units helpers
	@bash tests/run.sh ./snapctl

asan: deps
	@$(MAKE) --no-print-directory build-asan/snapctl units helpers
	@bash tests/run.sh build-asan/snapctl

fuzz: deps
	@bash fuzz/run.sh $(FUZZ_SECONDS)

bench: deps
	@$(MAKE) --no-print-directory all
	@bash bench/run.sh

demo: deps
	@$(MAKE) --no-print-directory all helpers
	@bash tests/demo.sh

lint:
	mandoc -Tlint -Wwarning man/snapctl.1 man/snapctl-image.5
	@! grep -nE '\b(printf|fprintf|puts|fputs|exit)\(' \
		$(filter-out snapctl.c shell.c cmd_%.c util.c,$(SRCS)) \
		| grep -v 'snprintf\|vsnprintf' \
		|| { echo 'core files must not print or exit'; exit 1; }

install: snapctl
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man5
	install -m 0755 snapctl $(DESTDIR)$(BINDIR)/snapctl
	install -m 0644 man/snapctl.1 $(DESTDIR)$(MANDIR)/man1/snapctl.1
	install -m 0644 man/snapctl-image.5 \
		$(DESTDIR)$(MANDIR)/man5/snapctl-image.5

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/snapctl \
		$(DESTDIR)$(MANDIR)/man1/snapctl.1 \
		$(DESTDIR)$(MANDIR)/man5/snapctl-image.5

clean:
	rm -rf build build-asan build-fuzz snapctl

-include $(OBJS:.o=.d) $(ASAN_OBJS:.o=.d) $(UNITS:=.d) $(HELPERS:=.d)
