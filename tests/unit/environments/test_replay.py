"""Replay between environments on the embedded stores: a whole copy gives production-quality
results, a hash sample of entities exact values for each sampled one, a time range and a
stream list copy just those; refusals write nothing; an interrupted replay resumes; --follow
keeps the target in step."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from headwater import Project
from headwater.environments.replay import ReplayError, ReplayOptions, sampled
from headwater.privacy.policies import PiiSecret, load_secret
from tests.environments_shop import (
    FEATURES,
    fill,
    micros,
    records,
    same_results,
    users,
    write,
)
from tests.unit.training.conftest import NOW

ENVIRONMENTS = ("production", "staging", "sample", "window", "busy", "resume", "follow", "internal")
STAGING_SECRET = "staging-only-secret-" + "s" * 32


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HEADWATER_PII_SECRET_STAGING", STAGING_SECRET)
    folder = write(tmp_path_factory.mktemp("replay") / "shop", "", ENVIRONMENTS)
    with Project(folder, env="production", clock=lambda: NOW) as production:
        fill(production)
        yield folder, production
    mp.undo()


def _open(folder, env):
    return Project(folder, env=env, clock=lambda: NOW)


def test_a_whole_replay_rekeyed_gives_production_quality_results(shop):
    folder, production = shop
    with _open(folder, "staging") as staging:
        replay = production.replay_into(staging, options=ReplayOptions(rekey=True))
        stats = replay.run()
        assert stats.copied == sum(
            len(records(production, s)) for s in ("visits", "signups", "purchases")
        )
        assert replay.lag() == 0
        # ids, event times and payloads, the pseudonyms re-keyed under staging's secret
        secret = PiiSecret(STAGING_SECRET.encode())
        source, copied = records(production, "signups"), records(staging, "signups")
        assert source.keys() == copied.keys()
        for event_id, (when, payload) in source.items():
            import orjson

            a, b = orjson.loads(payload), orjson.loads(copied[event_id][1])
            assert copied[event_id][0] == when
            assert b == {**a, "email": secret.pseudonym(a["email"])}
            assert b["email"].startswith("pii_") and b["email"] != a["email"]
        assert records(production, "visits") == records(staging, "visits")
        assert "predictions" not in staging.log.streams()  # internal: only when asked
        staging.process()
        same_results(production, staging, users(production))
        # nothing new: a second run copies nothing and adds nothing
        assert replay.run().copied == 0
        assert len(records(staging, "visits")) == len(records(production, "visits"))


def test_a_sample_of_entities_copies_each_sampled_one_whole(shop):
    folder, production = shop
    with _open(folder, "sample") as target:
        production.replay_into(target, options=ReplayOptions(sample=0.3)).run()
        target.process()
        everyone = users(production)
        chosen = [u for u in everyone if sampled(u, 0.3)]
        assert users(target) == chosen
        assert 0.1 * len(everyone) < len(chosen) < 0.5 * len(everyone)
        keys = [{"user_id": u} for u in chosen]
        assert target.online_features(keys, FEATURES) == production.online_features(keys, FEATURES)
        left_out = [{"user_id": u} for u in everyone if u not in chosen][:5]
        assert all(
            row["visits_30d"] in (None, 0) for row in target.online_features(left_out, FEATURES)
        )


def test_a_time_range_and_a_stream_list_copy_just_those(shop):
    folder, production = shop
    since, until = NOW - timedelta(days=20), NOW - timedelta(days=5)
    with _open(folder, "window") as target:
        options = ReplayOptions(since_us=micros(since), until_us=micros(until))
        stats = production.replay_into(target, streams=["visits"], options=options).run()
        kept = {
            i: v
            for i, v in records(production, "visits").items()
            if micros(since) <= v[0] < micros(until)
        }
        assert records(target, "visits") == kept and stats.copied == len(kept) > 0
        assert stats.filtered == len(records(production, "visits")) - len(kept)
        assert "signups" not in target.log.streams()


def _nothing_written(target: Project) -> bool:
    return all(target.log.end_offset(s) == 0 for s in ("visits", "signups", "purchases"))


def test_refusals_say_what_to_do_and_write_nothing(shop, tmp_path, monkeypatch):
    folder, production = shop
    with pytest.raises(ReplayError, match="same log"):
        production.replay_into(production)
    with _open(folder, "busy") as busy:
        busy.ingest("visits", [{"user_id": "x", "device": "ios", "ts": NOW}])
        with pytest.raises(ReplayError, match="already holds events of visits.*--append"):
            production.replay_into(busy)
        assert busy.log.end_offset("signups") == 0
        stats = production.replay_into(busy, streams=["visits"], append=True).run()
        assert stats.copied == len(records(production, "visits"))
    with _open(folder, "resume") as target:
        with pytest.raises(ReplayError, match="no stream 'clicks'"):
            production.replay_into(target, streams=["clicks"])
        # another project whose visits differ
        other = write(tmp_path / "other", "", ["staging"], name="other")
        text = (other / "definitions.py").read_text()
        changed_fields = text.replace(
            '"device": "string", ', '"device": "string", "os": "string", '
        )
        (other / "definitions.py").write_text(changed_fields)
        with Project(other, env="staging") as changed:
            with pytest.raises(ReplayError, match="'visits' is defined differently"):
                production.replay_into(changed)
            assert _nothing_written(changed)
        # no PII secret in the target: PII streams and --rekey are refused
        monkeypatch.delenv("HEADWATER_PII_SECRET")
        assert load_secret({}, None, "resume") is None
        with pytest.raises(ReplayError, match="need the target's PII secret.*init-secret --env"):
            production.replay_into(target)
        with pytest.raises(ReplayError, match="--rekey need"):
            production.replay_into(target, streams=["visits"], options=ReplayOptions(rekey=True))
        assert _nothing_written(target)
    with pytest.raises(ReplayError, match="above 0%"):
        ReplayOptions(sample=1.5)
    with pytest.raises(ReplayError, match="--since must be before --until"):
        ReplayOptions(since_us=2, until_us=1)


def test_an_interrupted_replay_resumes_without_copying_anything_twice(shop, monkeypatch):
    folder, production = shop
    with _open(folder, "resume") as target:
        replay = production.replay_into(target, streams=["visits"], batch=500)
        real = target.metadata.put_records
        calls = {"n": 0}

        def dies_on_third_checkpoint(batch):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt  # killed between an append and its checkpoint
            return real(batch)

        monkeypatch.setattr(target.metadata, "put_records", dies_on_third_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            replay.run()
        monkeypatch.setattr(target.metadata, "put_records", real)
        assert len(records(target, "visits")) == 1500  # three batches landed, two checkpointed
        with pytest.raises(ReplayError, match="other options"):
            production.replay_into(target, streams=["visits"], options=ReplayOptions(sample=0.5))
        again = production.replay_into(target, streams=["visits"], batch=500).run()
        assert again.resumed == 500  # the unrecorded batch was found, not appended again
        total = len(records(production, "visits"))
        assert again.copied == total - 1500
        assert records(target, "visits") == records(production, "visits")


def test_follow_keeps_the_target_in_step(shop):
    folder, production = shop
    with _open(folder, "follow") as target:
        replay = production.replay_into(target, streams=["visits"])
        stop = threading.Event()
        passes = []
        thread = threading.Thread(
            target=replay.follow, args=(stop,), kwargs={"interval": 0.05, "on_pass": passes.append}
        )
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while replay.lag() and time.monotonic() < deadline:
                time.sleep(0.05)
            before = len(records(target, "visits"))
            assert before == len(records(production, "visits"))
            new = [{"user_id": "late", "device": "web", "ts": NOW - timedelta(hours=1)}]
            production.ingest("visits", new)
            while len(records(target, "visits")) == before and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(10)
        assert not thread.is_alive()
        assert records(target, "visits") == records(production, "visits")
        assert len(passes) >= 2


def test_internal_streams_are_copied_only_when_asked(shop):
    folder, production = shop
    production.serving.predict("risk", [{"user_id": "u1"}, {"user_id": "u2"}], "test")
    production.serving.logger.flush()
    with _open(folder, "internal") as target:
        stats = production.replay_into(target, include_internal=True).run()
        assert stats.streams["predictions"] == len(records(production, "predictions")) >= 2
        assert records(target, "predictions") == records(production, "predictions")
