"""WebDancer reproduction: the thin library behind the notebooks."""

import os

# On a small CPU box the model's generate() shares cores with tool threads (page extraction, the loopback server)
# and other processes; OpenMP's default spin-waiting then slows generation ~10x (measured: 79 s vs 7.7 s for 64
# tokens under load). Passive waiting costs nothing when the cores are free. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Keys never reach a log, at any level (urllib3 logs SerpAPI's request URL, key included, at DEBUG): every log record
# is redacted as it is made (`wdlib.redact`).
from wdlib.redact import install_log_redaction  # noqa: E402

install_log_redaction()
