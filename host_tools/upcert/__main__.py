import sys

from upcert.cli import main

sys.exit(main())
