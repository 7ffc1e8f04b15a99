"""The pure decisions of several CAs: which CA a certificate's next attempt goes to, whether a CA offers the
configured profile, the EAB MAC key, and which of a CA's chains is served (snakeway.acme.issuers, chains)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from snakeway.acme.chains import alternate_links, choose_chain, issuer_names
from snakeway.acme.issuers import PROFILE_UNAVAILABLE, after_failure, decode_mac_key, issuer_index, profile_refusal
from snakeway.acme.issuing import transient
from snakeway.acme.schedule import is_permanent
from snakeway.errors import IssuanceError

# --- which CA next --------------------------------------------------------------------------------------------


def test_three_failures_at_the_first_ca_move_on_to_the_second() -> None:
    assert [after_failure(0, n, 2, 3) for n in (1, 2, 3)] == [None, None, 1]


def test_after_the_last_ca_the_first_comes_again() -> None:
    assert after_failure(2, 3, 3, 3) == 0


def test_a_hopeless_failure_moves_on_at_once() -> None:
    assert after_failure(0, 1, 2, 3, hopeless=True) == 1


def test_one_ca_is_never_left() -> None:
    assert after_failure(0, 100, 1, 3, hopeless=True) is None


@given(
    issuers=st.integers(1, 6), threshold=st.integers(1, 10), failures=st.integers(1, 30),
    hopeless=st.booleans(), data=st.data(),
)
def test_fallback_properties(issuers: int, threshold: int, failures: int, hopeless: bool, data: st.DataObject) -> None:
    current = data.draw(st.integers(0, issuers - 1))
    following = after_failure(current, failures, issuers, threshold, hopeless=hopeless)
    if following is None:  # stays: one CA, or neither enough failures nor hopeless
        assert issuers == 1 or (failures < threshold and not hopeless)
    else:  # the next one in order, wrapping around
        assert issuers > 1 and (failures >= threshold or hopeless)
        assert following == (current + 1) % issuers != current


@pytest.mark.parametrize(
    ("current", "failures", "issuers", "threshold"), [(0, 0, 2, 3), (2, 1, 2, 3), (-1, 1, 2, 3), (0, 1, 0, 3),
                                                      (0, 1, 2, 0)],
)
def test_out_of_range_is_refused(current: int, failures: int, issuers: int, threshold: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        after_failure(current, failures, issuers, threshold)


def test_the_stored_issuer_is_found_by_its_directory_url() -> None:
    urls = ["https://a.test/dir", "https://b.test/dir"]
    assert issuer_index(urls, None) == 0
    assert issuer_index(urls, "https://b.test/dir") == 1
    assert issuer_index(urls, "https://gone.test/dir") == 0  # removed from the configuration: the first


# --- profiles ------------------------------------------------------------------------------------------------


def test_an_offered_profile_or_none_asked_for_may_be_ordered() -> None:
    assert profile_refusal("shortlived", {"classic": "90 days", "shortlived": "6 days"}) is None
    assert profile_refusal(None, None) is None
    assert profile_refusal(None, {"classic": "90 days"}) is None


def test_a_profile_the_ca_lacks_is_refused_naming_what_it_offers() -> None:
    assert profile_refusal("tlsserver", {"shortlived": "", "classic": ""}) == (
        "the CA does not offer profile 'tlsserver' (it offers: classic, shortlived)"
    )
    assert profile_refusal("tlsserver", None) == (
        "the CA offers no certificate profiles, and profile 'tlsserver' is configured"
    )
    assert profile_refusal("tlsserver", {}) == profile_refusal("tlsserver", None)


# --- the EAB MAC key -----------------------------------------------------------------------------------------


@given(st.binary(min_size=1, max_size=64))
def test_a_mac_key_round_trips_from_base64url_with_or_without_padding(key: bytes) -> None:
    padded = base64.urlsafe_b64encode(key).decode()
    assert decode_mac_key(padded) == key
    assert decode_mac_key(padded.rstrip("=") + "\n") == key


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected the base64url MAC key"),
    ("ab+/cd", "expected the base64url MAC key"),  # standard base64, not base64url
    ("a", "not base64url"),
    ("====", "expected the base64url MAC key"),
])
def test_a_bad_mac_key_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_mac_key(text)


# --- chains --------------------------------------------------------------------------------------------------


def test_alternate_links_are_read_from_joined_and_separate_fields() -> None:
    joined = ('<https://ca.test/cert/1/alt/1>;rel="alternate", <https://ca.test/dir>;rel="index", '
              '<https://ca.test/cert/1/alt/2> ; rel=alternate')
    assert alternate_links([joined, '<https://ca.test/cert/1/alt/3>; rel="Alternate up"']) == [
        "https://ca.test/cert/1/alt/1", "https://ca.test/cert/1/alt/2", "https://ca.test/cert/1/alt/3",
    ]
    assert alternate_links([""]) == []


def test_the_chain_whose_top_is_issued_by_the_preferred_name_wins() -> None:
    default = ["R10", "ISRG Root X1"]
    cross = ["R10", "DST Root CA X3"]
    assert choose_chain([default, cross], "DST Root CA X3") == 1
    assert choose_chain([default, cross], "ISRG Root X1") == 0


def test_a_name_anywhere_in_a_chain_is_second_best_and_no_match_is_none() -> None:
    chains = [["R10", "ISRG Root X1"], ["R10", "ISRG Root X1", "DST Root CA X3"], ["E5", "ISRG Root X2"]]
    assert choose_chain(chains, "ISRG Root X2") == 2  # a top-most match beats an earlier chain's middle
    assert choose_chain([["Leaf CA", "Mid"], ["Other", "Top"]], "Leaf CA") == 0
    assert choose_chain(chains, "Nobody") is None


def _cert(subject: str, issuer: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_issuer_names_are_read_leaf_first() -> None:
    chain = _cert("a.test", "Intermediate X") + _cert("Intermediate X", "Root Y")
    assert issuer_names(chain) == ["Intermediate X", "Root Y"]
    with pytest.raises(ValueError):
        issuer_names(b"not a certificate")


# --- refusals decided before any request are not retried within the attempt ------------------------------------


def test_a_refusal_without_a_status_but_with_a_problem_is_not_transient() -> None:
    assert not transient(IssuanceError("no such profile", problem_type=PROFILE_UNAVAILABLE))
    assert not transient(IssuanceError("needs EAB", problem_type="urn:ietf:params:acme:error:externalAccountRequired"))
    assert transient(IssuanceError("connection reset by peer"))  # a lost connection still is
    assert is_permanent("urn:ietf:params:acme:error:externalAccountRequired", stage="order")
