"""``python -m da_toolkit.benchmark <da-toolkit arguments>``: the process of one compare cell,
`da-toolkit <arguments>` bound to the life of the compare process that launched it."""
import sys

from da_toolkit.benchmark.scheduler import die_with_launcher
from da_toolkit.cli import main

die_with_launcher()
main(sys.argv[1:], prog_name="da-toolkit")
