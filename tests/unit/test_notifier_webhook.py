"""Outbound webhook signing and the SSRF checks on subscriber URLs."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from casegate_notifier.adapters.webhook import WebhookSender, refused, sign, verify


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"ref":"CS-7K3M9Q"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(b"s3cret", "1700000000", body) == expected
    header = "sha256=" + expected
    assert verify(b"s3cret", "1700000000", body, header, now=1700000100)
    assert not verify(b"other", "1700000000", body, header, now=1700000100)
    assert not verify(b"s3cret", "1700000000", body + b" ", header, now=1700000100)
    assert not verify(b"s3cret", "1700000000", body, header, now=1700000000 + 301)  # stale
    assert not verify(b"s3cret", "soon", body, header, now=1700000000)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200",
     "0.0.0.0", "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "224.0.0.1", "240.0.0.1"],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refused(address) is not None


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "1.1.1.1"]
)
def test_public_addresses_pass(address: str) -> None:
    assert refused(address) is None


def test_urls_https_only_unless_allowed_and_literal_addresses_checked_before_connecting() -> None:
    strict = WebhookSender({}, allow_http=False, allow_private=False, timeout_s=1)
    assert strict.check_url("https://hooks.example.com/x") is None
    assert strict.check_url("http://hooks.example.com/x") == "only https webhook URLs are allowed"
    assert strict.check_url("https://127.0.0.1/x") == "127.0.0.1 is a loopback address"
    assert "link-local" in (strict.check_url("https://169.254.169.254/latest/meta-data") or "")
    assert "loopback" in (strict.check_url("https://[::ffff:127.0.0.1]/") or "")
    assert strict.check_url("file:///etc/passwd") == "only https webhook URLs are allowed"
    relaxed = WebhookSender({}, allow_http=True, allow_private=True, timeout_s=1)
    assert relaxed.check_url("http://127.0.0.1:8080/x") is None
