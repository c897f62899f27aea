"""`python -m wdlib.sft --params FILE` (what `accelerate launch -m wdlib.sft` runs on every rank)."""

from wdlib.sft.train import main

main()
