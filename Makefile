# Build and install the five ccci tools with their man pages and completions.
#
#   make                         release binaries, man pages, completions
#   make install                 into $(DESTDIR)$(PREFIX) (PREFIX=/usr/local)
#   make uninstall
#   make install PREFIX=/opt/ccci DESTDIR=/tmp/pkg
#
# Man pages and completions are generated from the clap definitions
# (cargo run -p xtask -- gen DIR), never written by hand.

PREFIX  ?= /usr/local
DESTDIR ?=
CARGO   ?= cargo
PROFILE ?= release
TOOLS   := ccci-lock ccci-guard ccci-janitor ccci-abradir ccci-state

ifeq ($(PROFILE),dev)
OUT := target/debug
else
OUT := target/$(PROFILE)
endif
GEN := target/gen

BINDIR  = $(DESTDIR)$(PREFIX)/bin
MAN1DIR = $(DESTDIR)$(PREFIX)/share/man/man1
BASHDIR = $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR  = $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR = $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
LIBDIR  = $(DESTDIR)$(PREFIX)/lib/ccci

.PHONY: all build gen install uninstall

all: build gen

build:
	$(CARGO) build --profile $(PROFILE) $(addprefix --bin ,$(TOOLS))

gen:
	$(CARGO) run --quiet -p xtask -- gen $(GEN)

install: all
	install -d $(BINDIR) $(MAN1DIR) $(BASHDIR) $(ZSHDIR) $(FISHDIR) $(LIBDIR)
	install -m 0755 contrib/ccci-janitor-pass $(LIBDIR)/ccci-janitor-pass
	for t in $(TOOLS); do \
	    install -m 0755 $(OUT)/$$t $(BINDIR)/$$t && \
	    install -m 0644 $(GEN)/man/$$t.1 $(MAN1DIR)/$$t.1 && \
	    install -m 0644 $(GEN)/completions/bash/$$t.bash $(BASHDIR)/$$t && \
	    install -m 0644 $(GEN)/completions/zsh/_$$t $(ZSHDIR)/_$$t && \
	    install -m 0644 $(GEN)/completions/fish/$$t.fish $(FISHDIR)/$$t.fish || exit 1; \
	done

uninstall:
	rm -f $(LIBDIR)/ccci-janitor-pass
	-rmdir $(LIBDIR) 2>/dev/null
	for t in $(TOOLS); do \
	    rm -f $(BINDIR)/$$t $(MAN1DIR)/$$t.1 $(BASHDIR)/$$t $(ZSHDIR)/_$$t $(FISHDIR)/$$t.fish; \
	done
