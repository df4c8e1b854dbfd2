"""The randomized ring stress suite (a hypothesis state machine, fixtures/stress.py)."""
