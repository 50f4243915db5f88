"""The client's pieces that the integration tests cannot pin exactly: backoff bounds and redaction."""

from __future__ import annotations

import pytest

from cft_jax.critique.client import ConfigError, RetryPolicy, redact


def test_backoff_is_jittered_exponential_and_capped():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        delays = [policy.delay(attempt, None) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling / 2  # jitter spreads over the whole range


def test_retry_after_wins_over_backoff_but_stays_capped():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert 3.0 <= policy.delay(0, 3.0) <= 3.05
    assert 4.0 <= policy.delay(0, 120.0) <= 4.05


def test_retry_policy_rejects_zero_attempts():
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_redact_removes_the_key_and_its_tail():
    key = "sk-proj-0123456789abcdefXYZW"
    text = f"auth {key} failed; Incorrect API key provided: sk-proj-...{key[-8:]}"
    assert key not in redact(text, key) and key[-8:] not in redact(text, key)
    assert redact("no secret here", key) == "no secret here"
