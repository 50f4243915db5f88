"""Async chat calls to any OpenAI-compatible endpoint, built for tens of thousands of paid calls.

The official `openai` client does the HTTP; its own retries are switched off (`max_retries=0`) so
that every retry happens here, is counted, honours Retry-After and backs off with jitter. A semaphore
per endpoint bounds the requests in flight. Token use and cost are accounted per endpoint from each
response's `usage`.

The API key is read from the environment variable the endpoint names, and is redacted from every
error message this module produces: errors end up in failure files and logs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import os
import random
import time
from typing import Any

import openai

from cft_jax.errors import InputError

# Status codes worth retrying: timeouts, conflicts, rate limits and server errors. Others (400 bad
# request, 401 bad key, 404 unknown model) fail the same way every time.
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class ConfigError(InputError):
    """A configuration the user must fix; the message says what and how."""


class RequestFailed(Exception):
    """A request that failed for good: not retryable, or still failing after the retry budget."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message)
        self.attempts = attempts


class MalformedResponse(Exception):
    """The server answered 200 with a body that is not a chat completion (e.g. truncated JSON)."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One model behind one OpenAI-compatible URL.

    `api_key_env` names the environment variable holding the key; None means the server needs no
    key (a local vLLM/SGLang server). Prices are USD per million tokens, for the cost estimate.
    """

    name: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 120.0
    price_input: float = 0.0
    price_output: float = 0.0

    def public(self) -> dict[str, Any]:
        """What provenance records: everything but secrets (the key never lives here anyway)."""
        return {"name": self.name, "model": self.model, "base_url": self.base_url}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: delay ~ U(0, min(max_delay, base_delay * 2**attempt))."""

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError(f"retry: 'max_attempts' must be an integer >= 1, got {self.max_attempts!r}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigError("retry: 'base_delay' and 'max_delay' must be >= 0 seconds")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # The server said when; a little jitter keeps many workers from returning in lockstep.
            return min(self.max_delay, retry_after) + random.uniform(0, self.base_delay / 10)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


@dataclasses.dataclass
class ModelUsage:
    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Accounting:
    """Per-endpoint counts of requests, retries, failures, tokens and cost."""

    def __init__(self) -> None:
        self.by_model: dict[str, ModelUsage] = {}

    def get(self, name: str) -> ModelUsage:
        return self.by_model.setdefault(name, ModelUsage())

    def add_usage(self, endpoint: Endpoint, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        u = self.get(endpoint.name)
        u.prompt_tokens += prompt_tokens
        u.completion_tokens += completion_tokens
        u.cost_usd += (prompt_tokens * endpoint.price_input + completion_tokens * endpoint.price_output) / 1e6
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}

    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(u) for name, u in self.by_model.items()}


def api_key(endpoint: Endpoint) -> str:
    """The endpoint's key from the environment; an error naming the variable if it is unset."""
    if endpoint.api_key_env is None:
        return "EMPTY"  # local servers ignore it, but the client insists on a value
    key = os.environ.get(endpoint.api_key_env)
    if not key:
        raise ConfigError(
            f"endpoint {endpoint.name!r}: environment variable {endpoint.api_key_env} is not set; "
            f"export it (keys are read from the environment only), or set api_key_env to null for a "
            f"server that needs no key"
        )
    return key


def redact(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` (and its last 4+ characters) replaced."""
    if not secret or secret == "EMPTY":
        return text
    text = text.replace(secret, "[REDACTED]")
    # Servers often echo a key's tail ("Incorrect API key provided: sk-...abcd").
    return text.replace(secret[-8:], "[REDACTED]") if len(secret) >= 16 else text


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers = response.headers
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)  # the HTTP-date form
        return max(0.0, when.timestamp() - time.time()) if when else None


def _retryable(error: Exception) -> bool:
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError, MalformedResponse)):
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code in RETRYABLE_STATUS


@dataclasses.dataclass
class Completion:
    texts: list[str]
    usage: dict[str, int]
    attempts: int


class ChatClient:
    """Chat completions against one endpoint with bounded concurrency, retries and accounting."""

    def __init__(self, endpoint: Endpoint, retry: RetryPolicy, accounting: Accounting):
        self.endpoint = endpoint
        self.retry = retry
        self.accounting = accounting
        self._key = api_key(endpoint)
        self._client = openai.AsyncOpenAI(
            api_key=self._key, base_url=endpoint.base_url, max_retries=0, timeout=endpoint.timeout
        )
        self._semaphore = asyncio.Semaphore(endpoint.concurrency)

    async def close(self) -> None:
        await self._client.close()

    async def chat(self, messages: list[dict[str, str]], **params: Any) -> Completion:
        """The completion texts (one per choice); RequestFailed after the retry budget."""
        usage = self.accounting.get(self.endpoint.name)
        for attempt in range(self.retry.max_attempts):
            try:
                async with self._semaphore:
                    usage.requests += 1
                    response = await self._client.chat.completions.create(
                        model=self.endpoint.model, messages=messages, **params
                    )
                if not hasattr(response, "choices"):
                    raise MalformedResponse(f"not a chat completion: {str(response)[:200]!r}")
                texts = [c.message.content or "" for c in response.choices]
                usage_obj = response.usage
                tokens = self.accounting.add_usage(
                    self.endpoint,
                    int(getattr(usage_obj, "prompt_tokens", 0) or 0),
                    int(getattr(usage_obj, "completion_tokens", 0) or 0),
                )
                return Completion(texts, tokens, attempt + 1)
            except Exception as error:  # noqa: BLE001 (classified right below)
                message = redact(f"{type(error).__name__}: {error}", self._key)
                if not _retryable(error):
                    usage.failures += 1
                    raise RequestFailed(message, attempt + 1) from None
                if attempt + 1 == self.retry.max_attempts:
                    usage.failures += 1
                    raise RequestFailed(f"{message} (after {attempt + 1} attempts)", attempt + 1) from None
                usage.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, _retry_after(error)))
        raise AssertionError("unreachable: max_attempts >= 1, and the last attempt returns or raises")
