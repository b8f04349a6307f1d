# Build and install the five ccci tools with their man pages, completions,
# the janitor's scripts and (with CI_USER) its systemd units.
#
#   make                              build, as yourself: release binaries
#                                     (statically linked), man pages,
#                                     completions
#   make STATIC=                      ... dynamically linked binaries
#   sudo make install                 install what `make` built (never builds)
#   sudo make install CI_USER=ci      ... and the systemd units, the
#                                     tmpfiles.d entry and a cron file for
#                                     the janitor, filled in for user ci
#   make install PREFIX=/opt/ccci DESTDIR=/tmp/pkg
#   make uninstall
#
# Where cargo puts the build is cargo's business (CARGO_TARGET_DIR, a config
# file's target-dir or build-dir): `make` asks it (contrib/cargo-build-tools)
# and writes the answer to $(BUILT), a small makefile in this checkout that
# `make install` reads. Man pages and completions are generated from the clap
# definitions (cargo run -p xtask -- gen DIR) into the build's directory,
# never into the source tree.
#
# The tools are linked statically by default (STATIC: the flags that make a
# static build): a process then starts without the dynamic loader, which is
# most of what separated the tools' start-up from flock(1)'s and timeout(1)'s
# (docs/benchmarks.md). TARGET is the triple they are built for: this
# machine's musl one when its standard library is installed (`rustup target
# add x86_64-unknown-linux-musl`): musl starts in half of glibc's time and has
# no NSS to load at run time, so the binaries run on any Linux of that
# architecture; otherwise the host's own triple (static glibc: see
# docs/benchmarks.md, "Shipping it", for the one lookup that can still load
# an NSS module). An explicit --target makes cargo apply RUSTFLAGS to the
# tools only, never to build scripts and proc macros, and put the tools in
# <target dir>/<TARGET>/<profile>. `make STATIC=` builds dynamically linked
# tools for the host, as cargo does by default. RUSTFLAGS set in the
# environment are kept, after STATIC; they replace a cargo config file's
# build.rustflags, as RUSTFLAGS always does.

PREFIX     ?= /usr/local
DESTDIR    ?=
SYSCONFDIR ?= /etc
CARGO      ?= cargo
PROFILE    ?= release
TOOLS      := ccci-lock ccci-guard ccci-janitor ccci-abradir ccci-state
SCRIPTS    := ccci-janitor-pass ccci-reap-abra
STATIC     ?= -C target-feature=+crt-static
RUSTC      ?= rustc
# The triple a static build names with --target (see above), worked out
# only when building (so `sudo make install` needs no rustc on root's PATH),
# and then once: `X = $(eval X := ...)$(X)` replaces itself with its value
# the first time it is expanded.
HOST        = $(eval HOST := $(shell $(RUSTC) -vV 2>/dev/null | sed -n 's/^host: //p'))$(HOST)
MUSL        = $(patsubst %-unknown-linux-gnu,%-unknown-linux-musl,$(filter %-unknown-linux-gnu,$(HOST)))
HAVE_MUSL   = $(if $(MUSL),$(shell d=$$($(RUSTC) --print target-libdir --target '$(MUSL)' 2>/dev/null) && \
                ls "$$d"/libstd-*.rlib >/dev/null 2>&1 && echo yes))
# Given on make's command line only: a TARGET variable in the environment
# (build systems set one for their own purposes) is not ours.
ifneq ($(origin TARGET),command line)
TARGET      = $(eval TARGET := $(if $(HAVE_MUSL),$(MUSL),$(HOST)))$(TARGET)
endif
# What `make` built: written by `make`, read by `make install`.
BUILT      ?= .ccci-built.mk

BINDIR      = $(DESTDIR)$(PREFIX)/bin
MAN1DIR     = $(DESTDIR)$(PREFIX)/share/man/man1
BASHDIR     = $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR      = $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR     = $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
LIBDIR      = $(DESTDIR)$(PREFIX)/lib/ccci
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
EXAMPLEDIR  = $(PREFIX)/share/ccci

# The CI user the janitor runs as; its uid, group and home are looked up
# unless given (CI_UID=… CI_GROUP=… CI_HOME=… for a user of another host).
CI_USER  ?=
ifneq ($(CI_USER),)
CI_UID   ?= $(shell id -u '$(CI_USER)' 2>/dev/null)
CI_GROUP ?= $(shell id -gn '$(CI_USER)' 2>/dev/null)
CI_HOME  ?= $(shell getent passwd '$(CI_USER)' 2>/dev/null | cut -d: -f6)
endif
# The janitor's CI pattern(s), written to $(SYSCONFDIR)/ccci/janitor.env when
# that file does not exist yet (the pass refuses to run without one).
CCCI_ONLY ?=

-include $(BUILT)

.PHONY: all build install install-units uninstall print-target

all: build

# How the tools are built: statically linked unless STATIC is empty.
ifneq ($(strip $(STATIC)),)
BUILD_TOOLS = RUSTFLAGS='$(strip $(STATIC))'$${RUSTFLAGS:+" $$RUSTFLAGS"} CARGO='$(CARGO)' \
	      contrib/cargo-build-tools --profile $(PROFILE) --target '$(TARGET)'
LINKED      = statically for $(TARGET)
else
BUILD_TOOLS = CARGO='$(CARGO)' contrib/cargo-build-tools --profile $(PROFILE)
LINKED      = dynamically
endif

# The triple a static build is for (bench/run --no-build asks).
print-target:
	@echo '$(TARGET)'

build:
	@[ -z '$(strip $(STATIC))' ] || [ -n '$(TARGET)' ] || { \
	    echo "make: '$(RUSTC) -vV' names no host triple; or build dynamically linked tools: make STATIC=" >&2; exit 1; }
	@dir=$$($(BUILD_TOOLS)) || exit 1; \
	$(CARGO) run --quiet -p xtask -- gen "$$dir/ccci-gen" || exit 1; \
	{ echo "# written by make: what make install installs (linked $(LINKED))"; \
	  echo "BUILT_BIN := $$dir"; echo "BUILT_GEN := $$dir/ccci-gen"; } > '$(BUILT)'; \
	echo "built into $$dir, linked $(LINKED) (recorded in $(BUILT))"

install:
	@[ -n '$(BUILT_BIN)' ] || { echo "make install: nothing built yet: run 'make' first (as yourself, not as root)" >&2; exit 1; }
	@for t in $(TOOLS); do [ -x '$(BUILT_BIN)'/$$t ] && [ -f '$(BUILT_GEN)'/man/$$t.1 ] || { \
	    echo "make install: $(BUILT_BIN)/$$t or its man page is missing: run 'make' first (as yourself, not as root)" >&2; exit 1; }; done
	install -d $(BINDIR) $(MAN1DIR) $(BASHDIR) $(ZSHDIR) $(FISHDIR) $(LIBDIR)
	for s in $(SCRIPTS); do install -m 0755 contrib/$$s $(LIBDIR)/$$s || exit 1; done
	for t in $(TOOLS); do \
	    install -m 0755 '$(BUILT_BIN)'/$$t $(BINDIR)/$$t && \
	    install -m 0644 '$(BUILT_GEN)'/man/$$t.1 $(MAN1DIR)/$$t.1 && \
	    install -m 0644 '$(BUILT_GEN)'/completions/bash/$$t.bash $(BASHDIR)/$$t && \
	    install -m 0644 '$(BUILT_GEN)'/completions/zsh/_$$t $(ZSHDIR)/_$$t && \
	    install -m 0644 '$(BUILT_GEN)'/completions/fish/$$t.fish $(FISHDIR)/$$t.fish || exit 1; \
	done
ifneq ($(CI_USER),)
	@$(MAKE) --no-print-directory install-units
else
	@echo "note: no CI_USER given: the janitor's systemd units, tmpfiles.d entry and cron file were not installed (make install CI_USER=ci)"
endif

# Fills @CI_USER@ and friends into a unit template: $(call fill,TEMPLATE,DEST,MODE)
fill = sed -e 's|@CI_USER@|$(CI_USER)|g' -e 's|@CI_UID@|$(CI_UID)|g' \
	   -e 's|@CI_GROUP@|$(CI_GROUP)|g' -e 's|@CI_HOME@|$(CI_HOME)|g' \
	   -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@LIBDIR@|$(PREFIX)/lib/ccci|g' \
	   -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $(1) > $(2).tmp && \
	 ! grep -n '@[A-Z_]*@' $(2).tmp && chmod $(3) $(2).tmp && mv $(2).tmp $(2)

install-units:
	@[ -n '$(CI_USER)' ] && [ -n '$(CI_UID)' ] && [ -n '$(CI_GROUP)' ] && [ -n '$(CI_HOME)' ] || { \
	    echo "make install-units: unknown user '$(CI_USER)': create it, or give CI_UID, CI_GROUP and CI_HOME" >&2; exit 1; }
	install -d $(DESTDIR)$(SYSTEMDDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(EXAMPLEDIR) $(DESTDIR)$(SYSCONFDIR)/ccci
	$(call fill,contrib/systemd/ccci-janitor.service.in,$(DESTDIR)$(SYSTEMDDIR)/ccci-janitor.service,0644)
	install -m 0644 contrib/systemd/ccci-janitor.timer $(DESTDIR)$(SYSTEMDDIR)/ccci-janitor.timer
	$(call fill,contrib/tmpfiles.d/ccci.conf.in,$(DESTDIR)$(TMPFILESDIR)/ccci.conf,0644)
	$(call fill,contrib/cron/ccci-janitor.in,$(DESTDIR)$(EXAMPLEDIR)/cron.ccci-janitor,0644)
	@env=$(DESTDIR)$(SYSCONFDIR)/ccci/janitor.env; \
	if [ -e "$$env" ]; then echo "kept $$env"; else \
	    { echo "# ccci-janitor-pass settings (read by ccci-janitor.service; see ccci-janitor-pass)"; \
	      if [ -n '$(CCCI_ONLY)' ]; then echo "CCCI_ONLY='$(CCCI_ONLY)'"; \
	      else echo "# The domains CI runs deploy; the pass refuses to run until this is set:"; \
	           echo "#CCCI_ONLY='*-??????.ci.example.org'"; fi; \
	      echo "#CCCI_WARM='warm-*'"; } > "$$env.tmp" && chmod 0644 "$$env.tmp" && mv "$$env.tmp" "$$env"; \
	    echo "wrote $$env"; fi

uninstall:
	for s in $(SCRIPTS); do rm -f $(LIBDIR)/$$s; done
	-rmdir $(LIBDIR) 2>/dev/null
	for t in $(TOOLS); do \
	    rm -f $(BINDIR)/$$t $(MAN1DIR)/$$t.1 $(BASHDIR)/$$t $(ZSHDIR)/_$$t $(FISHDIR)/$$t.fish; \
	done
	rm -f $(DESTDIR)$(SYSTEMDDIR)/ccci-janitor.service $(DESTDIR)$(SYSTEMDDIR)/ccci-janitor.timer \
	      $(DESTDIR)$(TMPFILESDIR)/ccci.conf $(DESTDIR)$(EXAMPLEDIR)/cron.ccci-janitor
	-rmdir $(DESTDIR)$(EXAMPLEDIR) 2>/dev/null
