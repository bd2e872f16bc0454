"""``python -m zcasync``: the zcasync command (see zcasync.cli)."""
import sys

from zcasync.cli import main

if __name__ == '__main__':
    sys.exit(main())
