"""Where the shared fixtures live: ../shared beside the checkout."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO.parent / 'shared'
PARITY = SHARED / 'parity'
NYUD_SAMPLES = SHARED / 'data' / 'nyud_samples'
