"""Choosing a backend by URL scheme."""

from __future__ import annotations

import pytest

from headwater.stores.urls import BackendError, open_backend


def test_an_unknown_scheme_names_the_known_ones_and_hides_the_password(tmp_path) -> None:
    with pytest.raises(BackendError) as info:
        open_backend("online", "memcached://app:s3cret@cache:11211/0", tmp_path)
    message = str(info.value)
    assert "memcached://app:***@cache:11211/0" in message and "s3cret" not in message
    assert "known schemes: sqlite://, redis://" in message
