"""Every episode equals the one recorded in ``tests/fixtures/trajectory_hashes.json``.

The fixture was recorded from the pure-numpy simulator; an implementation change (such as the
compiled kernel) must leave observation, reward and info of every id unchanged, bit for bit.
"""

from __future__ import annotations

import json

import pytest

import envs
from tests.golden import ACTION_TYPES, FIXTURE, VARIANTS, single_digest, vector_digest

RECORDED = json.loads(FIXTURE.read_text())


def test_fixture_covers_every_id():
    ids = {k.split("|")[1] for k in RECORDED}
    assert ids == set(envs.ENV_IDS)
    assert len(RECORDED) == 2 * len(envs.ENV_IDS) * len(ACTION_TYPES) * len(VARIANTS)


def test_add_missing_keeps_recorded_keys(monkeypatch):
    # Adding the digests of missing keys never recomputes (or changes) a recorded one.
    import tests.golden as golden

    calls = []
    monkeypatch.setattr(golden, "digest", lambda key: calls.append(key) or "new")
    recorded = {k: v for k, v in RECORDED.items() if "-v1|" not in k}
    out = golden.add_missing(recorded)
    assert {k: out[k] for k in recorded} == recorded
    assert set(out) == set(RECORDED)
    assert sorted(calls) == sorted(set(RECORDED) - set(recorded))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_single_env_episodes_unchanged(env_id, action_type, variant):
    key = f"single|{env_id}|{action_type}|{variant}"
    assert single_digest(env_id, action_type, VARIANTS[variant]) == RECORDED[key]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_vector_env_episodes_unchanged(env_id, action_type, variant):
    key = f"vector|{env_id}|{action_type}|{variant}"
    assert vector_digest(env_id, action_type, VARIANTS[variant]) == RECORDED[key]
