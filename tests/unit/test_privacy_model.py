"""Envelope encryption of personal data: what opens, what does not, and rotation."""

from __future__ import annotations

import pytest

from instock.privacy.model import Keyring, Sealer, Undecryptable, UnknownKey

OLD, NEW = Keyring.generate("old"), Keyring.generate("new")


def sealer(keyring: Keyring, subject: str = "cus-1") -> Sealer:
    data_key, _, _ = keyring.new_data_key(subject)
    return Sealer(subject, data_key, keyring)


def test_a_sealed_value_opens_where_it_was_sealed() -> None:
    s = sealer(Keyring.parse(OLD))
    token = s.encrypt("customers", "email_enc", "ann@example.com")
    assert "ann" not in token
    assert s.decrypt("customers", "email_enc", token) == "ann@example.com"
    # A fresh nonce each time: equal values do not look equal at rest.
    assert s.encrypt("customers", "email_enc", "ann@example.com") != token


def test_another_column_table_or_subject_does_not_open_it() -> None:
    keyring = Keyring.parse(OLD)
    data_key, _, _ = keyring.new_data_key("cus-1")
    s = Sealer("cus-1", data_key, keyring)
    token = s.encrypt("customers", "email_enc", "ann@example.com")
    for table, column in (("customers", "name_enc"), ("orders", "email_enc")):
        with pytest.raises(Undecryptable):
            s.decrypt(table, column, token)
    # Even under the same data key, another person's row is other associated data.
    with pytest.raises(Undecryptable):
        Sealer("cus-2", data_key, keyring).decrypt("customers", "email_enc", token)
    with pytest.raises(Undecryptable):
        sealer(keyring).decrypt("customers", "email_enc", token)  # another data key


def test_a_tampered_value_does_not_open() -> None:
    s = sealer(Keyring.parse(OLD))
    token = s.encrypt("customers", "phone_enc", "+33612345678")
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    for bad in (flipped, token[:-2], "", "not base64 at all!"):
        with pytest.raises(Undecryptable):
            s.decrypt("customers", "phone_enc", bad)


def test_a_key_wrapped_under_an_old_master_key_opens_after_rotation_and_rewraps() -> None:
    before = Keyring.parse(OLD)
    data_key, kid, wrapped = before.new_data_key("cus-1")
    assert kid == "old"
    after = Keyring.parse(f"{NEW},{OLD}")  # the new key first: current
    assert after.unwrap("cus-1", "old", wrapped) == data_key
    new_kid, rewrapped = after.rewrap("cus-1", kid, wrapped)
    assert new_kid == "new"
    assert Keyring.parse(NEW).unwrap("cus-1", "new", rewrapped) == data_key
    with pytest.raises(UnknownKey):
        Keyring.parse(NEW).unwrap("cus-1", "old", wrapped)  # the old key gone
    with pytest.raises(Undecryptable):
        after.unwrap("cus-2", "old", wrapped)  # a wrapped key is bound to its subject


def test_the_lookup_hash_is_stable_normalised_and_keyed() -> None:
    keyring = Keyring.parse(OLD)
    h = keyring.lookup_hash("ann@example.com")
    assert h == keyring.lookup_hash("  Ann@Example.COM ") == Keyring.parse(OLD).lookup_hash(
        "ann@example.com")
    assert "ann" not in h and len(h) == 64
    assert Keyring.parse(NEW).lookup_hash("ann@example.com") != h
    assert Keyring.parse(f"{NEW},{OLD}").lookup_hashes("ANN@example.com")[1] == h


# Fixed ids: the keys are made per run, and test ids must not change between runs (or workers).
@pytest.mark.parametrize("text", ["", "nokey", "k:not-base64!", "k:AAAA", f"{OLD},{OLD}",
                                  "bad kid:" + OLD.split(":")[1]],
                         ids=["empty", "no-key", "not-base64", "short-key", "repeated-kid",
                              "bad-kid"])
def test_a_bad_keyring_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Keyring.parse(text)
