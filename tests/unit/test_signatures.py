"""Webhook signatures: what one side signs the other accepts, and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.platform.signatures import SignatureError, sign, verify

NOW = 1_800_000_000


@given(body=st.binary(max_size=200), secret=st.text(min_size=1, max_size=20))
def test_a_signed_body_verifies(body: bytes, secret: str) -> None:
    assert verify(body, sign(body, secret, NOW), secret, now=NOW) == NOW


@given(body=st.binary(max_size=50), other=st.binary(max_size=50))
def test_another_body_does_not(body: bytes, other: bytes) -> None:
    header = sign(body, "s3cret", NOW)
    if other != body:
        with pytest.raises(SignatureError, match="does not match"):
            verify(other, header, "s3cret", now=NOW)


def test_wrong_secret_is_refused_and_a_rotated_one_accepted() -> None:
    header = sign(b"{}", "new", NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify(b"{}", header, "old", now=NOW)
    assert verify(b"{}", header, ["old", "new"], now=NOW) == NOW


def test_an_old_signature_is_a_replay() -> None:
    header = sign(b"{}", "k", NOW - 301)
    with pytest.raises(SignatureError, match="replay"):
        verify(b"{}", header, "k", tolerance_seconds=300, now=NOW)
    assert verify(b"{}", sign(b"{}", "k", NOW - 299), "k", tolerance_seconds=300, now=NOW)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=1", "t=x,v1=abc", "garbage"])
def test_malformed_headers_are_refused(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify(b"{}", header, "k", now=NOW)
