import sys

from jaxmpc.cli import main

sys.exit(main())
