"""Keyless signing and verification through sigstore-python: a short-lived Fulcio certificate
for the CI's (or the user's) OIDC identity, the signature logged in Rekor; verified offline
against a trusted root and an identity policy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omi_build.errors import SigningError, VerificationError

from .dsse import Statement, parse_statement

_ISSUER_OIDS = ("1.3.6.1.4.1.57264.1.8", "1.3.6.1.4.1.57264.1.1")  # Fulcio's v2, then v1 issuer


class Signer:
    """Signs DSSE statements with a Fulcio certificate for `token` (SIGSTORE_ID_TOKEN, the
    --identity-token option, or GitHub Actions' ambient credentials)."""

    def __init__(self, token: str | None, *, staging: bool = False) -> None:
        from sigstore.models import ClientTrustConfig  # noqa: PLC0415 - slow imports, keyless only
        from sigstore.oidc import IdentityError, IdentityToken, detect_credential  # noqa: PLC0415
        from sigstore.sign import SigningContext  # noqa: PLC0415

        try:
            raw = token or detect_credential()
        except IdentityError as exc:
            msg = f"cannot get an OIDC identity token: {exc}"
            raise SigningError(msg, hint="pass --identity-token, or give the job 'id-token: write'") from exc
        if not raw:
            msg = "keyless signing needs an OIDC identity token, and none was found"
            raise SigningError(
                msg,
                hint="in GitHub Actions give the job 'permissions: id-token: write'; "
                "elsewhere pass --identity-token or set SIGSTORE_ID_TOKEN, or sign with --key",
            )
        try:
            self._token = IdentityToken(raw)
            config = ClientTrustConfig.staging() if staging else ClientTrustConfig.production()
            self._context = SigningContext.from_trust_config(config)
        except Exception as exc:  # sigstore raises many kinds (network, token format, TUF)
            msg = f"cannot start keyless signing: {exc}"
            raise SigningError(msg, hint="check the token and the network to Fulcio and Rekor") from exc
        self.identity = f"{self._token.identity} ({self._token.issuer})"

    def bundle(self, statement: bytes, *, model: bool = False) -> bytes:  # noqa: ARG002 - one form
        from sigstore.dsse import Statement as SigstoreStatement  # noqa: PLC0415

        try:
            with self._context.signer(self._token) as signer:
                return signer.sign_dsse(SigstoreStatement(statement)).to_json().encode()
        except Exception as exc:
            msg = f"keyless signing failed: {exc}"
            raise SigningError(
                msg, hint="check the network to Fulcio and Rekor, and the token's expiry"
            ) from exc


@dataclass(frozen=True, kw_only=True, slots=True)
class Identity:
    """Who must have signed: an exact identity and issuer, or regular expressions for them."""

    identity: str = ""
    identity_regexp: str = ""
    issuer: str = ""
    issuer_regexp: str = ""

    def describe(self) -> str:
        who = self.identity or f"/{self.identity_regexp}/"
        return f"{who} ({self.issuer or '/' + self.issuer_regexp + '/'})"

    def policy(self) -> Any:
        from sigstore.verify import policy  # noqa: PLC0415

        if self.identity and self.issuer:
            return policy.Identity(identity=self.identity, issuer=self.issuer)
        return _RegexIdentity(self)


class _RegexIdentity:
    """sigstore's VerificationPolicy for identities given as regular expressions (cosign's
    --certificate-identity-regexp and --certificate-oidc-issuer-regexp): full matches only."""

    def __init__(self, wanted: Identity) -> None:
        self._wanted = wanted

    def verify(self, cert: Any) -> None:
        from cryptography import x509  # noqa: PLC0415
        from sigstore.errors import VerificationError as PolicyError  # noqa: PLC0415

        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            identities = [str(v) for v in names.get_values_for_type(x509.RFC822Name)]
            identities += [str(v) for v in names.get_values_for_type(x509.UniformResourceIdentifier)]
        except x509.ExtensionNotFound:
            identities = []
        issuers = []
        for oid in _ISSUER_OIDS:
            try:
                raw = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value
            except x509.ExtensionNotFound:
                continue
            issuers.append(_der_utf8(raw) if oid.endswith(".8") else raw.decode(errors="replace"))
        wanted = self._wanted
        if not any(_matches(wanted.identity, wanted.identity_regexp, i) for i in identities):
            msg = f"the certificate's identity {identities} does not match {wanted.describe()}"
            raise PolicyError(msg)
        if not any(_matches(wanted.issuer, wanted.issuer_regexp, i) for i in issuers):
            msg = f"the certificate's issuer {issuers} does not match {wanted.describe()}"
            raise PolicyError(msg)


def _der_utf8(raw: bytes) -> str:
    # A DER UTF8String: tag 0x0c, a short or long length, the text.
    if len(raw) < 2:
        return ""
    length, start = raw[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(raw[2 : 2 + count], "big"), 2 + count
    return raw[start : start + length].decode(errors="replace")


def _matches(exact: str, pattern: str, value: str) -> bool:
    if exact:
        return value == exact
    return bool(pattern) and re.fullmatch(pattern, value) is not None


def _verifier(trusted_root: Path | None) -> Any:
    from sigstore.models import TrustedRoot  # noqa: PLC0415
    from sigstore.verify import Verifier  # noqa: PLC0415

    if trusted_root is None:
        return Verifier.production(offline=True)  # the trust root in sigstore's wheel: no network
    try:
        return Verifier(trusted_root=TrustedRoot.from_file(str(trusted_root)))
    except Exception as exc:
        msg = f"{trusted_root} is not a sigstore trusted root ({exc})"
        raise VerificationError(
            msg, hint="pass a trusted_root.json (sigstore's TUF repository has one)"
        ) from exc


def open_bundle(data: bytes, identity: Identity, *, trusted_root: Path | None, what: str) -> Statement:
    """The statement of a keyless DSSE bundle, verified offline: certificate chain to the
    trusted root, transparency-log proof, signed time inside the certificate's validity, the
    identity policy, and the envelope's signature."""
    from sigstore.models import Bundle  # noqa: PLC0415

    try:
        bundle = Bundle.from_json(data)
        payload_type, payload = _verifier(trusted_root).verify_dsse(bundle, identity.policy())
    except VerificationError:
        raise
    except Exception as exc:  # sigstore's own errors, and malformed bundles
        msg = f"{what}: {exc}"
        raise VerificationError(msg, hint=f"the signer must be {identity.describe()}") from exc
    if payload_type != "application/vnd.in-toto+json":
        msg = f"{what}: the envelope's payload type is {payload_type!r}, not an in-toto statement"
        raise VerificationError(msg)
    return parse_statement(payload, what=what)


def verify_artifact(data: bytes, artifact: bytes, identity: Identity, *, trusted_root: Path | None) -> None:
    """A keyless message-signature bundle over `artifact` (sigstore-python's own format)."""
    from sigstore.models import Bundle  # noqa: PLC0415

    try:
        _verifier(trusted_root).verify_artifact(artifact, Bundle.from_json(data), identity.policy())
    except Exception as exc:
        raise VerificationError(str(exc)) from exc
