import sys

from mmrepr.cli import main

sys.exit(main())
