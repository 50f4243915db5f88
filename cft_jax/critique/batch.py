"""teach through the OpenAI Batch API: submit a file of requests, poll, collect; resumable.

For large jobs the Batch API is half the price and has its own rate limits. A small JSON state
file records each submitted batch right after creation, so a killed run resumes polling the same
batch instead of paying for a second one; collection skips critique ids already written, so
collecting twice writes nothing twice. Lines the batch reports as errors (or never answers) go to
the failures file. Control-plane calls (upload, create, poll, download) use the openai client's
own retries: they are cheap and idempotent to retry, unlike completions.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import openai

from cft_jax.critique.client import Accounting, ConfigError, api_key, redact
from cft_jax.critique.config import ModelSpec
from cft_jax.critique.records import read_records
from cft_jax.critique.runner import RunSummary, now
from cft_jax.critique.teach import critique_id, critique_record
from cft_jax.schema import JsonlAppender, SolutionRecord, done_ids

TERMINAL = ("completed", "failed", "expired", "cancelled")
ENDPOINT = "/v1/chat/completions"


def _load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"batches": []}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}: batch state is not JSON ({e}); restore it or delete it to resubmit"
        ) from None


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a kill leaves the old state or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _submit(client: openai.OpenAI, teacher: ModelSpec, todo: list[SolutionRecord]) -> dict[str, Any]:
    lines = []
    for s in todo:
        body = {"model": teacher.endpoint.model, "messages": teacher.template.render(s.question, s.solution)}
        lines.append(
            json.dumps(
                {
                    "custom_id": critique_id(s.id, teacher),
                    "method": "POST",
                    "url": ENDPOINT,
                    "body": {**body, **teacher.params},
                }
            )
        )
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    uploaded = client.files.create(file=("critique-requests.jsonl", io.BytesIO(payload)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")
    return {
        "teacher": teacher.name,
        "batch_id": batch.id,
        "input_file_id": uploaded.id,
        "requests": len(todo),
        "submitted_at": now(),
        "collected": False,
    }


def _failure(
    cid: str, error: str, batch_id: str, teacher: ModelSpec, by_id: dict[str, SolutionRecord]
) -> dict:
    solution = by_id.get(cid)
    return {
        "id": cid,
        "error": error,
        "attempts": 1,
        "time": now(),
        "batch_id": batch_id,
        "solution_id": solution.id if solution else None,
        "teacher": teacher.name,
    }


def _collect(
    client: openai.OpenAI,
    batch: Any,
    teacher: ModelSpec,
    by_id: dict[str, SolutionRecord],
    writer: JsonlAppender,
    failure_log: JsonlAppender,
    accounting: Accounting,
    summary: RunSummary,
    key: str,
) -> None:
    done = done_ids(writer.path)
    answered: set[str] = set()
    failed: list[dict] = []
    # What was asked, read back from the batch's own input file (the state file stays small).
    submitted = {
        json.loads(line)["custom_id"]
        for line in client.files.content(batch.input_file_id).text.splitlines()
        if line.strip()
    }
    if batch.output_file_id:
        for line in client.files.content(batch.output_file_id).text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            cid, response = row["custom_id"], row.get("response") or {}
            answered.add(cid)
            if cid in done or cid not in by_id:
                continue
            if response.get("status_code") != 200:
                error = redact(json.dumps(response.get("body"))[:500], key)
                failed.append(
                    _failure(cid, f"status {response.get('status_code')}: {error}", batch.id, teacher, by_id)
                )
                continue
            body = response["body"]
            usage = body.get("usage") or {}
            tokens = accounting.add_usage(
                teacher.endpoint, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
            )
            meta = {"finished_at": now(), "usage": tokens, "attempts": 1, "batch_id": batch.id}
            text = body["choices"][0]["message"]["content"] or ""
            writer.write(critique_record(by_id[cid], teacher, text, meta))
            done.add(cid)
            summary.written += 1
    if batch.error_file_id:
        for line in client.files.content(batch.error_file_id).text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            cid = row["custom_id"]
            answered.add(cid)
            if cid not in done and cid in by_id:
                error = redact(json.dumps(row.get("error") or row.get("response"))[:500], key)
                failed.append(_failure(cid, error, batch.id, teacher, by_id))
    for cid in sorted(submitted - answered - done):
        failed.append(
            _failure(
                cid, f"batch {batch.id} ended {batch.status} without an answer", batch.id, teacher, by_id
            )
        )
    failure_log.write_all(failed)
    summary.failed += len(failed)


def teach_batch(
    solutions: str | Path,
    out: str | Path,
    failures: str | Path,
    teachers: list[ModelSpec],
    state_path: str | Path,
    *,
    poll_seconds: float = 30.0,
    max_wait_seconds: float = 48 * 3600,
) -> RunSummary:
    """Critiques every solution with every teacher through one batch per teacher."""
    started = time.monotonic()
    state_path, summary, accounting = Path(state_path), RunSummary(), Accounting()
    state = _load_state(state_path)
    solutions_list = list(read_records(solutions, SolutionRecord))
    with JsonlAppender(out) as writer, JsonlAppender(failures) as failure_log:
        for teacher in teachers:
            key = api_key(teacher.endpoint)
            client = openai.OpenAI(
                api_key=key,
                base_url=teacher.endpoint.base_url,
                max_retries=5,
                timeout=teacher.endpoint.timeout,
            )
            by_id = {critique_id(s.id, teacher): s for s in solutions_list}
            entry = next(
                (b for b in state["batches"] if b["teacher"] == teacher.name and not b["collected"]), None
            )
            if entry is None:
                done = done_ids(out)
                todo = [s for cid, s in by_id.items() if cid not in done]
                summary.skipped += len(by_id) - len(todo)
                if not todo:
                    continue
                entry = _submit(client, teacher, todo)
                state["batches"].append(entry)
                _save_state(state_path, state)
            deadline = time.monotonic() + max_wait_seconds
            batch = client.batches.retrieve(entry["batch_id"])
            while batch.status not in TERMINAL:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"batch {batch.id} still {batch.status}; rerun later to resume polling it"
                    )
                time.sleep(poll_seconds)
                batch = client.batches.retrieve(entry["batch_id"])
            _collect(client, batch, teacher, by_id, writer, failure_log, accounting, summary, key)
            entry["collected"], entry["status"] = True, batch.status
            _save_state(state_path, state)
            client.close()
    summary.usage = accounting.summary()
    summary.seconds = round(time.monotonic() - started, 3)
    return summary
