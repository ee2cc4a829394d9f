"""Integrations with frameworks; each needs its extra (``pip install "memo[fastapi]"``)."""
