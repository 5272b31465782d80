"""Start-up on Android: HTTPS must trust a certificate bundle python-for-android can read."""

from __future__ import annotations

import os
import ssl

import certifi
import pytest

from client.__main__ import trust_bundled_certificates


def test_on_android_https_trusts_certifis_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv("ANDROID_PRIVATE", str(tmp_path))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    trust_bundled_certificates()
    assert os.environ["SSL_CERT_FILE"] == certifi.where()
    # What urllib3's default context loads: OpenSSL's default paths, which follow SSL_CERT_FILE.
    assert ssl.get_default_verify_paths().cafile == certifi.where()


def test_elsewhere_the_systems_certificates_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANDROID_PRIVATE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    trust_bundled_certificates()
    assert "SSL_CERT_FILE" not in os.environ


def test_a_bundle_the_user_chose_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv("ANDROID_PRIVATE", str(tmp_path))
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    trust_bundled_certificates()
    assert os.environ["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
