"""The PIN-wrapped data key and the wrong-PIN lock."""

from __future__ import annotations

import json

import pytest

from client.vault import PinRejected, Vault, VaultLocked, WrongPin, lock_seconds


def make(tmp_path, now, n=2**10):
    return Vault(tmp_path / "vault.json", clock=lambda: now[0], scrypt_n=n)


def test_the_data_key_comes_back_only_with_the_right_pin(tmp_path):
    now = [0.0]
    vault = make(tmp_path, now)
    key = vault.create("135790")
    assert len(key) == 32
    assert make(tmp_path, now).unlock("135790") == key
    with pytest.raises(WrongPin):
        make(tmp_path, now).unlock("135791")
    raw = (tmp_path / "vault.json").read_text()
    assert key.hex() not in raw and "135790" not in raw


def test_default_scrypt_cost_is_the_strong_one(tmp_path):
    vault = Vault(tmp_path / "vault.json")
    vault.create("1234")
    assert json.loads(vault.path.read_text())["kdf"]["n"] == 2**15


def test_pin_rules():
    for bad in ("", "123", "12ab", "1234567890123", "１２３４"):
        with pytest.raises(PinRejected):
            Vault.create(Vault.__new__(Vault), bad)


def test_five_wrong_pins_lock_with_a_growing_delay_that_survives_restart(tmp_path):
    now = [1000.0]
    make(tmp_path, now).create("2468")
    for left in (4, 3, 2, 1):
        with pytest.raises(WrongPin) as err:
            make(tmp_path, now).unlock("0000")  # a new Vault object each time: a restarted app
        assert err.value.attempts_left == left and err.value.locked_for == 0
    with pytest.raises(WrongPin) as fifth:
        make(tmp_path, now).unlock("0000")
    assert fifth.value.attempts_left == 0 and fifth.value.locked_for == 30
    with pytest.raises(VaultLocked) as locked:
        make(tmp_path, now).unlock("2468")
    assert 29 < locked.value.seconds <= 30
    now[0] += 30.5
    with pytest.raises(WrongPin) as sixth:
        make(tmp_path, now).unlock("0000")
    assert sixth.value.locked_for == 60
    assert make(tmp_path, now).locked_for() == pytest.approx(60)
    now[0] += 60.5
    assert len(make(tmp_path, now).unlock("2468")) == 32
    assert make(tmp_path, now).failures() == 0


def test_lock_delay_doubles_and_is_capped():
    assert [lock_seconds(n) for n in range(1, 9)] == [0, 0, 0, 0, 30, 60, 120, 240]
    assert lock_seconds(40) == 3600


def test_change_pin_keeps_the_same_data_key(tmp_path):
    now = [0.0]
    vault = make(tmp_path, now)
    key = vault.create("1111")
    vault.change_pin("1111", "2222")
    assert vault.unlock("2222") == key
    with pytest.raises(WrongPin):
        vault.unlock("1111")


def test_open_cipher_seals_with_the_unwrapped_key(tmp_path):
    from sync.client.cipher import AesGcmCipher

    now = [0.0]
    key = make(tmp_path, now).create("8642")
    sealed = make(tmp_path, now).open_cipher("8642").encrypt(b"household", b"aad")
    assert AesGcmCipher(key).decrypt(sealed, b"aad") == b"household"
