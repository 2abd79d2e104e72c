import sys

from rlm_mcp.cli import main

sys.exit(main())
