"""`python -m scripthut.cli`: the `scripthut` command."""

import sys

from scripthut.cli.main import main

sys.exit(main(sys.argv[1:]))
