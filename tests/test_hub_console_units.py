"""The console's pieces without a server: statistics, sessions, the users file, its config."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.hub.aggregates import counter_changes, latency_bin, latency_upper_ms, score_bin
from edge.hub.config import load_hub_config
from edge.hub.console import stats
from edge.hub.console.sessions import LoginLimiter, SessionSigner, csrf_ok
from edge.hub.console.users import UserBook, add_user, new_token, remove_user


def test_auc_of_binned_scores_matches_the_mann_whitney_count() -> None:
    generator = random.Random(7)
    positives = [generator.betavariate(4, 2) for _ in range(300)]
    negatives = [generator.betavariate(2, 4) for _ in range(900)]
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    exact = pairs / (len(positives) * len(negatives))
    binned = stats.auc(_histogram(positives, 1000), _histogram(negatives, 1000))
    assert binned is not None
    assert binned.value == pytest.approx(exact, abs=1e-3)
    assert binned.low < binned.value < binned.high
    assert binned.high - binned.low == pytest.approx(0.054, abs=0.01)  # Hanley-McNeil, n=300/900


def test_a_perfect_auc_on_few_cases_is_not_certain() -> None:
    area = stats.auc([0, 0, 2], [2, 0, 0])
    assert area is not None and area.value == 1.0 and area.low < 0.88


def test_drift_statistics() -> None:
    same = [10, 20, 30, 40]
    assert stats.psi(same, same) == 0.0 and stats.ks_distance(same, same) == 0.0
    shifted = [40, 30, 20, 10]
    psi = stats.psi(same, shifted)
    assert psi is not None and psi > 0.25
    assert stats.drift_level(psi, 0.1, 0.25) == "alarm"
    assert stats.ks_distance(same, shifted) == pytest.approx(0.4)
    assert stats.psi([], []) is None


def test_wilson_interval_has_the_textbook_values() -> None:
    interval = stats.wilson(8, 10)
    assert interval is not None
    assert (round(interval.low, 3), round(interval.high, 3)) == (0.490, 0.943)
    assert stats.wilson(0, 0) is None


def test_bins_and_health_counter_changes() -> None:
    assert score_bin(0.0) == 0 and score_bin(1.0) == 19 and score_bin(0.5) == 10
    assert latency_upper_ms(latency_bin(300.0)) >= 300.0
    before = {"counters": {"received": 5, "quarantined_by_reason": {"truncated": 1}}}
    after = {"counters": {"received": 9, "quarantined_by_reason": {"truncated": 2}}}
    assert counter_changes(before, after) == {("received", ""): 4, ("quarantined", "truncated"): 1}
    restarted = {"counters": {"received": 2, "quarantined_by_reason": {}}}
    assert counter_changes(after, restarted) == {("received", ""): 2}


def test_a_session_cookie_cannot_be_changed_or_outlive_its_time() -> None:
    signer = SessionSigner(b"k" * 32, lifetime_s=60)
    session = signer.logged_in("ada")
    value = signer.dump(session)
    assert signer.load(value) == session
    payload, signature = value.rsplit(".", 1)
    assert signer.load(payload[:-2] + "xx." + signature) is None
    assert SessionSigner(b"j" * 32, 60).load(value) is None
    expired = SessionSigner(b"k" * 32, lifetime_s=-1)
    assert expired.load(expired.dump(expired.new())) is None
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, "other")


def test_the_login_limiter_forgets_after_its_window() -> None:
    limiter = LoginLimiter(attempts=2, window_s=0.2)
    limiter.failed("ada")
    assert limiter.blocked_for("ada") == 0
    limiter.failed("ada")
    assert limiter.blocked_for("ada") > 0 and limiter.blocked_for("bob") == 0
    time.sleep(0.25)
    assert limiter.blocked_for("ada") == 0


def test_users_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    assert add_user(path, "ada", "admin", "long enough")
    book = UserBook(path)
    assert book.check_password("ada", "long enough") is not None
    assert book.check_password("ada", "wrong password") is None
    assert book.check_password("nobody", "long enough") is None
    token = new_token(path, "ada")
    user = book.user_for_token(token)
    assert user is not None and user.may("reader")
    with pytest.raises(ConfigError, match="at least 8"):
        add_user(path, "bob", "viewer", "short")
    with pytest.raises(ConfigError, match="user name"):
        add_user(path, "bad name", "viewer", "long enough")
    assert remove_user(path, "ada")
    assert book.user_for_token(token) is None and book.user("ada") is None


def test_console_keys_are_validated_and_resolved_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("console: {port: 9000}\nmonitoring: {auc_floor: 0.9}\n")
    config = load_hub_config(path)
    assert config.console.users_file == tmp_path / "users.yaml"
    assert config.console.session_secret_file == tmp_path / "console.secret"
    assert config.monitoring.auc_floor == 0.9
    path.write_text("console:\n  port: 0\n")
    with pytest.raises(ConfigError, match=r"console.port \(line 2\)"):
        load_hub_config(path)
    path.write_text("monitoring:\n  auc_flor: 0.9\n")
    with pytest.raises(ConfigError, match=r"monitoring.auc_flor \(line 2\): unknown key"):
        load_hub_config(path)


def _histogram(values: list[float], bins: int) -> list[int]:
    counts = [0] * bins
    for value in values:
        counts[min(int(value * bins), bins - 1)] += 1
    return counts
