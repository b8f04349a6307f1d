# Build and install the five ccci tools with their man pages, completions,
# the janitor's scripts, the docs, an example configuration file and (with
# CI_USER) the janitor's systemd units.
#
#   make                              build, as yourself: release binaries
#                                     (statically linked), man pages,
#                                     completions
#   make STATIC=                      ... dynamically linked binaries
#   make install                      as root: install what `make` built
#                                     (never builds), and a commented
#                                     /etc/ccci/ccci.conf unless one exists
#   make install CI_USER=ci           ... and the systemd units, the
#                                     tmpfiles.d entry and a cron file for
#                                     the janitor, filled in for user ci
#   make install CI_USER=ci CCCI_ONLY='PATTERN'
#                                     ... with the CI pattern written into
#                                     a new /etc/ccci/ccci.conf
#   make check                        the test suite, as the README says
#                                     (as root on a fresh Debian/Ubuntu
#                                     host it installs what the tests need)
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
# only when building (so `make install` as root needs no rustc on root's PATH),
# and then once: `X = $(eval X := ...)$(X)` replaces itself with its value
# the first time it is expanded.
HOST        = $(eval HOST := $(shell $(RUSTC) -vV 2>/dev/null | sed -n 's/^host: //p'))$(HOST)
MUSL        = $(patsubst %-unknown-linux-gnu,%-unknown-linux-musl,$(filter %-unknown-linux-gnu,$(HOST)))
# musl needs its standard library and a C compiler for it (the TLS stack,
# ring, compiles C and assembly: Debian's musl-tools gives musl-gcc).
HAVE_MUSL   = $(if $(MUSL),$(shell d=$$($(RUSTC) --print target-libdir --target '$(MUSL)' 2>/dev/null) && \
                ls "$$d"/libstd-*.rlib >/dev/null 2>&1 && \
                { command -v $(patsubst %-unknown-linux-musl,%-linux-musl-gcc,$(MUSL)) || command -v musl-gcc; } \
                >/dev/null 2>&1 && echo yes))
# Given on make's command line only: a TARGET variable in the environment
# (build systems set one for their own purposes) is not ours.
ifneq ($(origin TARGET),command line)
TARGET      = $(eval TARGET := $(if $(HAVE_MUSL),$(MUSL),$(HOST)))$(TARGET)
endif
# What `make` built: written by `make`, read by `make install`.
BUILT      ?= .ccci-built.mk

BINDIR      = $(DESTDIR)$(PREFIX)/bin
MAN1DIR     = $(DESTDIR)$(PREFIX)/share/man/man1
MAN8DIR     = $(DESTDIR)$(PREFIX)/share/man/man8
BASHDIR     = $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR      = $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR     = $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
LIBDIR      = $(DESTDIR)$(PREFIX)/lib/ccci
DOCDIR      = $(DESTDIR)$(PREFIX)/share/doc/ccci
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
EXAMPLEDIR  = $(PREFIX)/share/ccci
CONFDIR     = $(DESTDIR)$(SYSCONFDIR)/ccci
SCRIPTMAN   := contrib/man/ccci-janitor-pass.8 contrib/man/ccci-reap-abra.8

# The CI user the janitor runs as; its uid, group and home are looked up
# unless given (CI_UID=… CI_GROUP=… CI_HOME=… for a user of another host).
CI_USER  ?=
ifneq ($(CI_USER),)
CI_UID   ?= $(shell id -u '$(CI_USER)' 2>/dev/null)
CI_GROUP ?= $(shell id -gn '$(CI_USER)' 2>/dev/null)
CI_HOME  ?= $(shell getent passwd '$(CI_USER)' 2>/dev/null | cut -d: -f6)
endif
# The janitor's CI pattern(s), written into $(SYSCONFDIR)/ccci/ccci.conf when
# that file does not exist yet (ccci-janitor-pass refuses to run without it).
CCCI_ONLY ?=

# Values that end up inside single quotes, sed replacements or unit files
# are checked before anything runs: a `'` would end the quotes (and run the
# rest as shell), `|`, `&` and `\` mean something to sed, `"`, `$` and `%` to
# systemd, and a newline ends a line anywhere. Each is refused, with its
# name, before make reads the CI user's entry or installs anything.
define nl


endef
# $(call bad,VARIABLE,CHARACTERS): the characters of CHARACTERS that the
# unexpanded value of VARIABLE holds (the value as given, `$` included).
# A variable that make itself defines here (CI_UID's lookup) is checked by
# its expansion, once CI_USER has been checked.
raw = $(if $(filter file default automatic undefined,$(origin $(1))),$($(1)),$(value $(1)))
bad = $(strip $(foreach c,$(2),$(if $(findstring $(c),$(call raw,$(1))),$(c))) \
        $(if $(findstring $$,$(call raw,$(1))),$$) $(if $(findstring $(nl),$(call raw,$(1))),newline))
empty :=
space := $(empty) $(empty)
PATH_CHARS := ' | & \ " %
$(foreach v,CI_USER PREFIX DESTDIR SYSCONFDIR CI_HOME CI_UID CI_GROUP SYSTEMDDIR TMPFILESDIR,\
  $(if $(call bad,$(v),$(PATH_CHARS)),$(error $(v) holds $(call bad,$(v),$(PATH_CHARS)): refused, since it is written into sed expressions, shell quotes and unit files; nothing was installed)))
$(foreach v,CI_USER CI_UID CI_GROUP,$(if $(findstring $(space),$(call raw,$(v))),$(error $(v) holds a blank: refused; nothing was installed)))
$(if $(call bad,CCCI_ONLY,' \),$(error CCCI_ONLY holds $(call bad,CCCI_ONLY,' \): refused, since it is written single-quoted into $(SYSCONFDIR)/ccci/ccci.conf; nothing was installed))

# The PATH of the janitor's unit and cron line (cron and systemd start it
# with next to nothing): the CI user's ~/.local/bin (where abra's installer
# puts abra), the tools' bin unless it is one of the usual ones that follow,
# /usr/local/bin, /usr/bin, /bin, and NixOS's system and per-user profiles.
PREFIX_BIN  = $(if $(filter /usr/local/bin /usr/bin /bin,$(PREFIX)/bin),,$(PREFIX)/bin:)
# The tools look for /etc/ccci/ccci.conf: with another SYSCONFDIR the unit
# and the cron line name the file (and runners need CCCI_CONFIG set to it).
CONFIG_ARG  = $(if $(filter /etc /etc/,$(SYSCONFDIR)),, --config '\''$(SYSCONFDIR)/ccci/ccci.conf'\'')
UNIT_PATH   = $(CI_HOME)/.local/bin:$(PREFIX_BIN)/usr/local/bin:/usr/bin:/bin:/run/current-system/sw/bin:/etc/profiles/per-user/$(CI_USER)/bin

-include $(BUILT)

.PHONY: all build install install-config install-units uninstall print-target check

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
ifneq ($(CI_USER),)
	@[ -n '$(CI_USER)' ] && [ -n '$(CI_UID)' ] && [ -n '$(CI_GROUP)' ] && [ -n '$(CI_HOME)' ] || { \
	    echo "make install: unknown user '$(CI_USER)': create it, or give CI_UID, CI_GROUP and CI_HOME" >&2; exit 1; }
endif
	install -d '$(BINDIR)' '$(MAN1DIR)' '$(MAN8DIR)' '$(BASHDIR)' '$(ZSHDIR)' '$(FISHDIR)' '$(LIBDIR)' \
	    '$(DOCDIR)' '$(DESTDIR)$(EXAMPLEDIR)'
	for s in $(SCRIPTS); do install -m 0755 contrib/$$s '$(LIBDIR)'/$$s || exit 1; done
	for m in $(SCRIPTMAN); do install -m 0644 $$m '$(MAN8DIR)'/ || exit 1; done
	for t in $(TOOLS); do \
	    install -m 0755 '$(BUILT_BIN)'/$$t '$(BINDIR)'/$$t && \
	    install -m 0644 '$(BUILT_GEN)'/man/$$t.1 '$(MAN1DIR)'/$$t.1 && \
	    install -m 0644 '$(BUILT_GEN)'/completions/bash/$$t.bash '$(BASHDIR)'/$$t && \
	    install -m 0644 '$(BUILT_GEN)'/completions/zsh/_$$t '$(ZSHDIR)'/_$$t && \
	    install -m 0644 '$(BUILT_GEN)'/completions/fish/$$t.fish '$(FISHDIR)'/$$t.fish || exit 1; \
	done
	install -m 0644 README.md docs/*.md '$(DOCDIR)'/
	install -m 0644 contrib/ccci.conf.in '$(DESTDIR)$(EXAMPLEDIR)'/ccci.conf.example
	@$(MAKE) --no-print-directory install-config
ifneq ($(CI_USER),)
	@$(MAKE) --no-print-directory install-units
else
	@echo "note: no CI_USER given: the janitor's systemd units, tmpfiles.d entry and cron file were not installed (make install CI_USER=ci)"
endif

# The configuration file, from the example, only when there is none: the
# site's own is never overwritten. CCCI_ONLY given to make is appended to a
# new one, single-quoted (make refused any value that quotes cannot hold).
install-config:
	@install -d -m 0755 '$(CONFDIR)'
	@conf='$(CONFDIR)/ccci.conf'; \
	if [ -e "$$conf" ] || [ -L "$$conf" ]; then echo "kept $$conf (never overwritten; the example is $(EXAMPLEDIR)/ccci.conf.example)"; else \
	    { cat contrib/ccci.conf.in; \
	      if [ -n '$(CCCI_ONLY)' ]; then printf '\n# Set by make install CCCI_ONLY=...:\n'; \
	          printf "CCCI_ONLY='%s'\n" '$(CCCI_ONLY)'; fi; } > "$$conf.tmp" && \
	    chmod 0644 "$$conf.tmp" && mv "$$conf.tmp" "$$conf" && echo "wrote $$conf"; fi

# Fills @CI_USER@ and friends into a unit template: $(call fill,TEMPLATE,DEST,MODE)
fill = sed -e 's|@CI_USER@|$(CI_USER)|g' -e 's|@CI_UID@|$(CI_UID)|g' \
	   -e 's|@CI_GROUP@|$(CI_GROUP)|g' -e 's|@CI_HOME@|$(CI_HOME)|g' \
	   -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@LIBDIR@|$(PREFIX)/lib/ccci|g' \
	   -e 's|@PATH@|$(UNIT_PATH)|g' -e 's|@CONFIG_ARG@|$(CONFIG_ARG)|g' \
	   -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $(1) > '$(2).tmp' && \
	 ! grep -n '@[A-Z_]*@' '$(2).tmp' && chmod $(3) '$(2).tmp' && mv '$(2).tmp' '$(2)'

install-units:
	@[ -n '$(CI_USER)' ] && [ -n '$(CI_UID)' ] && [ -n '$(CI_GROUP)' ] && [ -n '$(CI_HOME)' ] || { \
	    echo "make install-units: unknown user '$(CI_USER)': create it, or give CI_UID, CI_GROUP and CI_HOME" >&2; exit 1; }
	install -d '$(DESTDIR)$(SYSTEMDDIR)' '$(DESTDIR)$(TMPFILESDIR)' '$(DESTDIR)$(EXAMPLEDIR)'
	$(call fill,contrib/systemd/ccci-janitor.service.in,$(DESTDIR)$(SYSTEMDDIR)/ccci-janitor.service,0644)
	install -m 0644 contrib/systemd/ccci-janitor.timer '$(DESTDIR)$(SYSTEMDDIR)'/ccci-janitor.timer
	$(call fill,contrib/tmpfiles.d/ccci.conf.in,$(DESTDIR)$(TMPFILESDIR)/ccci.conf,0644)
	$(call fill,contrib/cron/ccci-janitor.in,$(DESTDIR)$(EXAMPLEDIR)/cron.ccci-janitor,0644)

# Removes what install put there, except the configuration file: it holds
# the site's settings (its example under share/ccci goes).
uninstall:
	for s in $(SCRIPTS); do rm -f '$(LIBDIR)'/$$s '$(MAN8DIR)'/$$s.8; done
	-rmdir '$(LIBDIR)' 2>/dev/null
	for t in $(TOOLS); do \
	    rm -f '$(BINDIR)'/$$t '$(MAN1DIR)'/$$t.1 '$(BASHDIR)'/$$t '$(ZSHDIR)'/_$$t '$(FISHDIR)'/$$t.fish; \
	done
	rm -f '$(DOCDIR)'/*.md
	-rmdir '$(DOCDIR)' 2>/dev/null
	rm -f '$(DESTDIR)$(SYSTEMDDIR)'/ccci-janitor.service '$(DESTDIR)$(SYSTEMDDIR)'/ccci-janitor.timer \
	      '$(DESTDIR)$(TMPFILESDIR)'/ccci.conf '$(DESTDIR)$(EXAMPLEDIR)'/cron.ccci-janitor \
	      '$(DESTDIR)$(EXAMPLEDIR)'/ccci.conf.example
	-rmdir '$(DESTDIR)$(EXAMPLEDIR)' 2>/dev/null
	@[ ! -e '$(CONFDIR)/ccci.conf' ] || echo "kept $(CONFDIR)/ccci.conf (the site's settings; remove it by hand)"

# The README's test command. On a fresh Debian/Ubuntu host, as root, it
# installs the packages the tests need (contrib/test-deps names them; without
# root it names the missing ones and stops), checks that every .nix file of
# contrib/nix parses (nix-instantiate --parse; not evaluated against nixpkgs),
# and runs the whole suite. The second user the suite creates when it runs as
# root (ccci-test-other) is removed afterwards, whatever the suite's status,
# unless it existed before.
TEST_USER := ccci-test-other
check:
	@contrib/test-deps
	@for f in contrib/nix/*.nix; do [ -e "$$f" ] || continue; \
	    nix-instantiate --parse "$$f" >/dev/null || { echo "make check: $$f does not parse" >&2; exit 1; }; done
	@had=; getent passwd $(TEST_USER) >/dev/null 2>&1 && had=1; \
	status=0; $(CARGO) test --workspace || status=$$?; \
	if [ -z "$$had" ] && getent passwd $(TEST_USER) >/dev/null 2>&1; then \
	    userdel $(TEST_USER) && echo "make check: removed the user $(TEST_USER) that the suite created"; fi; \
	exit $$status
