"""`python -m wdlib.dapo --params FILE` (what `accelerate launch -m wdlib.dapo` runs on every rank)."""

from wdlib.dapo.trainer import main

main()
