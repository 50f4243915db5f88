"""metrics.jsonl across a crash and resume: the steps past the restored checkpoint are written once."""

from __future__ import annotations

import json
import time

from cft_jax.training.metrics import MetricsWriter, read_jsonl, truncate_jsonl


def writer(workdir, initial_step: int) -> MetricsWriter:
    return MetricsWriter(
        workdir, total_steps=10, initial_step=initial_step, jsonl=True, tensorboard=False, progress_bar=False
    )


def test_a_resumed_run_drops_the_steps_after_its_checkpoint(tmp_path):
    first = writer(tmp_path, 0)
    for step in range(1, 8):
        first.write(step, {"loss": float(step)})
    first.write(7, {"eval_loss": 0.5})
    first.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"note": "no step"}) + "\n")
    # Crashed at step 7; the newest checkpoint is step 5.
    resumed = writer(tmp_path, 5)
    resumed.write(6, {"loss": 60.0})
    resumed.close()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r.get("step") for r in records] == [1, 2, 3, 4, 5, None, 6]
    assert records[-1]["loss"] == 60.0 and records[5] == {"note": "no step"}
    assert not list(tmp_path.glob(".metrics.jsonl.tmp*"))


def test_a_torn_last_line_is_dropped_and_an_intact_file_left_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    intact = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2))
    path.write_text(intact)
    mtime = path.stat().st_mtime_ns
    assert truncate_jsonl(path, 2) == intact and path.stat().st_mtime_ns == mtime
    path.write_text(intact + '{"step": 3, "lo')
    assert truncate_jsonl(path, 5) == intact and path.read_text() == intact
    assert truncate_jsonl(tmp_path / "absent.jsonl", 0) == ""


def test_a_fresh_run_in_an_old_workdir_starts_the_file_over(tmp_path):
    old = writer(tmp_path, 0)
    for step in (1, 2, 3):
        old.write(step, {"loss": 1.0})
    old.close()
    new = writer(tmp_path, 0)
    new.write(1, {"loss": 2.0})
    new.close()
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]


def _events(path) -> list:
    """The Event protos of one TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        n = int.from_bytes(data[at : at + 8], "little")
        events.append(Event.FromString(data[at + 12 : at + 12 + n]))
        at += 12 + n + 4
    return events


def test_tensorboard_is_told_to_purge_the_steps_after_the_checkpoint(tmp_path):
    """A SessionLog START at step 6: TensorBoard then hides the crashed run's events from step 6 on."""
    from tensorboardX.proto.event_pb2 import SessionLog

    seen: set = set()
    for initial, steps in ((0, range(1, 8)), (5, [6])):
        time.sleep(1.1)  # event files are named by the second they were opened in
        w = MetricsWriter(
            tmp_path, total_steps=10, initial_step=initial, jsonl=False, tensorboard=True, progress_bar=False
        )
        for step in steps:
            w.write(step, {"loss": float(step)})
        w.close()
        [new] = set((tmp_path / "tensorboard").glob("events.out.tfevents.*")) - seen
        seen.add(new)
        starts = [e.step for e in _events(new) if e.session_log.status == SessionLog.START]
        assert starts == [initial + 1]
