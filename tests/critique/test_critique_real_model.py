"""sample -> teach -> filter on real text: the local server answers from SmolLM2-135M-Instruct."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from openai_server import OpenAIServer

from cft_jax.critique.client import RetryPolicy
from cft_jax.critique.config import spec_from_dict
from cft_jax.critique.filter import FilterConfig, filter_file
from cft_jax.critique.sample import sample
from cft_jax.critique.teach import teach
from cft_jax.schema import parse_verdict


@pytest.fixture(scope="module")
def smollm2_responder(smollm2_transformers_dir):
    """Greedy-or-sampled generation through transformers, honouring temperature and max_tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # One intra-op thread: the 2 cores are shared with the grader and the client, and
    # oversubscribed torch threads make CPU generation several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(smollm2_transformers_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_transformers_dir, dtype=torch.float32).eval()
    lock = threading.Lock()  # one generation at a time: the server is threaded, the model is not

    def respond(messages: list[dict], body: dict) -> str:
        ids = tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        temperature = float(body.get("temperature") or 0)
        kwargs = {"do_sample": temperature > 0, "max_new_tokens": int(body.get("max_tokens") or 32)}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=float(body.get("top_p") or 1.0))
        with lock, torch.no_grad():
            torch.manual_seed(int(body.get("seed") or 0))
            out = model.generate(**ids, **kwargs, pad_token_id=tok.eos_token_id)
        return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    yield respond
    torch.set_num_threads(threads)  # leave the session's other torch tests as they were


@pytest.mark.slow
def test_sample_teach_filter_on_real_model_text(tmp_path, smollm2_responder):
    problems = tmp_path / "problems.jsonl"
    rows = [
        {"id": "p0", "question": "What is 2 + 3?", "reference_answer": "5"},
        {"id": "p1", "question": "What is 10 - 4?", "reference_answer": "6"},
    ]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    solutions, critiques, cft = tmp_path / "s.jsonl", tmp_path / "c.jsonl", tmp_path / "cft.jsonl"
    retry = RetryPolicy(max_attempts=2, base_delay=0.01)
    with OpenAIServer(smollm2_responder, models=("smollm2",)) as server:
        # One request at a time and a generous timeout: CPU generation on a shared machine is slow.
        common = {"model": "smollm2", "base_url": server.base_url, "api_key_env": None, "timeout": 300}
        common["concurrency"] = 1
        gen = spec_from_dict({**common, "temperature": 0.7, "max_tokens": 12}, role="generator", where="t")
        summary = sample(problems, solutions, tmp_path / "sf.jsonl", [gen], retry)
        assert summary.written == 2 and summary.failed == 0
        teacher = spec_from_dict({**common, "max_tokens": 12, "temperature": 0}, role="teacher", where="t")
        taught = asyncio.run(teach(solutions, critiques, tmp_path / "cf.jsonl", [teacher], retry))
        assert taught.written == 2 and taught.failed == 0
    sols = [json.loads(line) for line in solutions.read_text().splitlines()]
    assert all(s["solution"].strip() and isinstance(s["is_correct"], bool) for s in sols)
    crits = [json.loads(line) for line in critiques.read_text().splitlines()]
    assert all(c["critique"].strip() and c["verdict"] == parse_verdict(c["critique"]) for c in crits)
    assert all(c["provenance"]["usage"]["completion_tokens"] > 0 for c in crits)
    report = filter_file(critiques, cft, FilterConfig(require=()))
    assert report["input"] == 2 and report["kept"] == len(cft.read_text().splitlines())
