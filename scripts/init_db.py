#!/usr/bin/env python
"""The seed's `python scripts/init_db.py [--seed]`, kept working: the same command as
`flask --app authgateway init-db [--seed]`."""

import sys

from authgateway.commandline import main

if __name__ == "__main__":
    main(["init-db", *sys.argv[1:]], prog_name="init_db.py")
