"""`python -m da_toolkit ...`, as torchrun starts it: `torchrun --nproc_per_node N -m da_toolkit run RECIPE`."""
from da_toolkit.cli import main

main(prog_name="da-toolkit")
