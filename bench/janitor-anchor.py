#!/usr/bin/env python3
"""The anchor of bench/janitor.sh: one janitor pass written the plain way.

Each lockfile of the lock dir is opened (O_NOFOLLOW), locked with
LOCK_EX|LOCK_NB, fstat'ed, stat'ed by name (the identity check) and closed;
a free one younger than --min-age (1h) is counted as young. Prints the count.
"""

import fcntl
import os
import sys
import time

MIN_AGE = 3600.0


def main(lock_dir: str) -> None:
    dfd = os.open(lock_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    now = time.time()
    young = 0
    for name in sorted(os.listdir(dfd)):
        if not name.endswith(".lock"):
            continue
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # held: a live run
            st = os.fstat(fd)
            at_path = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            same = (st.st_dev, st.st_ino) == (at_path.st_dev, at_path.st_ino)
            if same and now - st.st_mtime < MIN_AGE:
                young += 1
        finally:
            os.close(fd)
    print(young)


if __name__ == "__main__":
    main(sys.argv[1])
