"""The security policy, rule by rule: each fails on a violating model naming the rule and the
item, passes once the rule allows it, and lets harmless look-alikes through."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from omi_build import layers, policy
from omi_build.errors import PolicyError
from omi_build.layers import Blob, Component, Entry, Facts, Layer
from omi_build.manifest import Manifest, load
from omi_build.policy._secrets import looks_secret
from tests.conftest import EXAMPLES

# Real-looking samples (made up here, in the formats the services issue) and look-alikes.
_PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n"
_SECRETS = {
    "keys/id_rsa": "anything",
    "keys/id_ed25519": "anything",
    "deploy.pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n",
    "weights/notes.txt": "left here by mistake\n" + _PRIVATE_KEY,
    "signer.key": "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n",
    ".env": "API_URL=http://localhost\n",
    "config/.env.production": "DEBUG=0\n",
    ".aws/credentials": "[default]\n",
    "home/.docker/config.json": "{}",
    ".git/config": "[core]\n",
    ".netrc": "machine example.com login a password b\n",
    "settings.yaml": "aws_access_key_id: AKIAQ3EGRR7NZ4NXH5QT\n",
    "ci.txt": "token: ghp_8Yq2mJx0aB3kLw9ZtR4vN6pC1dE5fG7hI0jK\n",
    "hub.json": '{"token": "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"}',
    "slack.cfg": "webhook=xoxb-2048-4096-Ab3dEf5gHi7jKl9mNo\n",
    "gcp.json": '{"type": "service_account", "project_id": "p", "private_key": "-----BEGIN"}',
    "keystore.p12": "binary",
}
_HARMLESS = {
    "tokenizer.json": '{"model": {"type": "BPE", "vocab": {"token": 0, "secret": 1, "AKIA": 2}}}',
    "tokenizer_config.json": '{"bos_token": "<s>", "eos_token": "</s>"}',
    "signer.pub": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY",
    "ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "id_rsa.pub": "ssh-rsa AAAAB3NzaC1yc2E user@host\n",
    ".env.example": "API_KEY=\n",
    "secrets.md": "Never commit your secret key or a token.\n",
    "model.npz": "\x93NUMPY binary weights AKIA",
    "environment.yml": "name: model\n",
}


@pytest.mark.parametrize("name", sorted(_SECRETS))
def test_files_that_look_like_secrets_are_found(tmp_path: Path, name: str) -> None:
    path = tmp_path / "file"
    path.write_text(_SECRETS[name])
    assert looks_secret(name, path) is not None


@pytest.mark.parametrize("name", sorted(_HARMLESS))
def test_harmless_look_alikes_pass(tmp_path: Path, name: str) -> None:
    path = tmp_path / "file"
    path.write_text(_HARMLESS[name])
    assert looks_secret(name, path) is None


def _manifest(tmp_path: Path, security: str = "", files: dict[str, str] | None = None) -> Manifest:
    example = tmp_path / "iris"
    shutil.copytree(
        EXAMPLES / "iris-sklearn", example, ignore=shutil.ignore_patterns("omi-out", "__pycache__")
    )
    text = (example / "omi.yaml").read_text()
    for name, content in (files or {}).items():
        (example / name).parent.mkdir(parents=True, exist_ok=True)
        (example / name).write_text(content)
    if files:
        listed = ", ".join(["model.py", "model.npz", *files])
        text = text.replace("files: [model.py, model.npz]", f"files: [{listed}]")
    if security:
        start = text.index("security:\n")
        end = text.index("build:\n")
        text = text[:start] + security + text[end:]
    (example / "omi.yaml").write_text(text)
    return load(example)


def _files(manifest: Manifest) -> list[str]:
    return list(layers.model_file_digests(manifest.directory, manifest.model.files, allow_links=False))


def _failing(results: list[policy.Result]) -> list[str]:
    return [r.rule for r in results if not r.ok]


def test_secrets_among_model_files_fail_naming_them_unless_allowed(tmp_path: Path) -> None:
    files = {"id_rsa": _PRIVATE_KEY, "aws/.aws/credentials": "[default]\n", "tokenizer.json": "{}"}
    manifest = _manifest(tmp_path, files=files)
    result = policy.check_secrets(manifest, _files(manifest))
    assert not result.ok
    assert [item.split(" ")[0] for item in result.offending] == ["aws/.aws/credentials", "id_rsa"]
    with pytest.raises(PolicyError, match=r"rule secrets: aws/\.aws/credentials \(AWS credentials\), id_rsa"):
        policy.enforce([result])
    allowed = _manifest(
        tmp_path / "allowed",
        security="security:\n  allow_secret_files: [id_rsa, 'aws/*/credentials']\n",
        files=files,
    )
    result = policy.check_secrets(allowed, _files(allowed))
    assert result.ok
    assert "2 allowed by security.allow_secret_files" in result.found


def _layer(
    name: str, *, components: tuple[Component, ...] = (), facts: Facts | None = None, size: int = 10
) -> Layer:
    blob = Blob(diff_id="sha256:" + "0" * 64, digest="sha256:" + "1" * 64, size=size, media_type="x",
                uncompressed_size=size)  # fmt: skip
    return Layer(name=name, blob=blob, inventory=components, facts=facts or Facts())


_GPL_WHEEL = Component(
    kind="wheel", name="gplthing", version="1.0", sha256="a" * 64, licenses=("GPL-3.0-only",)
)
_NVIDIA = Component(
    kind="wheel", name="nvidia-cuda-runtime", version="13.0.96", sha256="b" * 64,
    licenses=("LicenseRef-NVIDIA-Proprietary",),
)  # fmt: skip
_DUAL = Component(kind="deb", name="dual", version="1", sha256="c" * 64, licenses=("GPL-3.0-only OR MIT",))


def test_a_denied_license_fails_naming_the_package_and_allowing_it_passes(tmp_path: Path) -> None:
    layers = [_layer("python packages", components=(_GPL_WHEEL, _DUAL))]
    denied = _manifest(tmp_path, security="security:\n  licenses: {deny: [GPL-3.0-only]}\n")
    result = policy.check_licenses(denied, "linux/amd64", layers)
    assert result.offending == ("the wheel gplthing 1.0 is licensed GPL-3.0-only",)  # dual: MIT will do
    with pytest.raises(PolicyError, match=r"rule licenses \(linux/amd64\): the wheel gplthing"):
        policy.enforce([result])
    allowed = _manifest(tmp_path / "b", security="security:\n  licenses: {deny: [AGPL-3.0-only]}\n")
    assert policy.check_licenses(allowed, "linux/amd64", layers).ok


def test_an_allow_list_names_nvidias_license_and_unknown_licenses(tmp_path: Path) -> None:
    unknown = Component(kind="deb", name="mystery", version="1", sha256="d" * 64, licenses=())
    layers = [_layer("nvidia", components=(_NVIDIA, unknown))]
    strict = _manifest(tmp_path, security="security:\n  licenses: {allow: [MIT]}\n")
    assert len(policy.check_licenses(strict, "linux/amd64", layers).offending) == 2
    named = _manifest(
        tmp_path / "b",
        security="security:\n  licenses: {allow: [MIT, LicenseRef-NVIDIA-Proprietary, NOASSERTION]}\n",
    )
    assert policy.check_licenses(named, "linux/amd64", layers).ok


@pytest.mark.parametrize(
    ("expression", "passes"),
    [
        ("MIT", True),
        ("GPL-3.0-only", False),
        ("MIT OR GPL-3.0-only", True),
        ("MIT AND GPL-3.0-only", False),
        ("GPL-3.0-only WITH GCC-exception-3.1", False),
        ("(Apache-2.0 OR GPL-3.0-only) AND BSD-3-Clause", True),
        ("NOASSERTION", True),
    ],
)
def test_license_expressions_are_judged_as_spdx_reads_them(expression: str, passes: bool) -> None:
    assert policy.license_verdict(expression, frozenset(), frozenset({"GPL-3.0-only"})) is passes


def test_setuid_files_shells_and_package_managers_fail_naming_them() -> None:
    facts = Facts.of([
        Entry(path="usr/bin/passwd", mode=0o4755, data=b"x"),
        Entry(path="usr/bin/wall", mode=0o2755, data=b"x"),
        Entry(path="usr/bin/ok", mode=0o755, data=b"x"),
        Entry(path="usr/bin/apt-get", mode=0o755, data=b"x"),
        Entry(path="usr/lib/python3/dist-packages/pip/__init__.py", data=b""),
        Entry(path="var/local", kind="dir", mode=0o2775),  # a folder: its bits are cleared, not refused
    ])  # fmt: skip
    assert facts.setid == ("usr/bin/passwd", "usr/bin/wall")
    assert facts.programs == ("usr/bin/apt-get", "usr/lib/python3/dist-packages/pip/__init__.py")
    setid, programs = policy.check_files("linux/arm64", [_layer("debian base", facts=facts)])
    assert setid.offending == ("/usr/bin/passwd (layer debian base)", "/usr/bin/wall (layer debian base)")
    assert programs.offending[0] == "/usr/bin/apt-get (layer debian base)"
    with pytest.raises(PolicyError, match=r"rule no-setuid \(linux/arm64\): /usr/bin/passwd"):
        policy.enforce([setid, programs])
    clean = policy.check_files(
        "linux/arm64", [_layer("debian base", facts=Facts.of([Entry(path="a", data=b"")]))]
    )
    assert _failing(clean) == []


def test_an_oversized_image_fails_and_a_larger_limit_passes(tmp_path: Path) -> None:
    layers = [_layer("a", size=90_000_000), _layer("b", size=20_000_000)]
    small = _manifest(tmp_path, security="security:\n  max_image_size: 100MB\n")
    result = policy.check_size(small, "linux/amd64", layers)
    assert result.offending == ("110.0 MB is over 100MB",)
    large = _manifest(tmp_path / "b", security="security:\n  max_image_size: 0.2GiB\n")
    assert policy.check_size(large, "linux/amd64", layers).ok
    assert policy.parse_size("1.5 KiB") == 1536


def test_the_iris_example_holds_every_rule_that_needs_no_layer() -> None:
    manifest = load(EXAMPLES / "iris-sklearn")
    results = policy.check_model(manifest, _files(manifest), [])
    assert [r.rule for r in results] == ["user", "hash-pinned", "wheels-only", "secrets"]
    assert _failing(results) == []


def test_the_deployment_carries_the_policy() -> None:
    manifest = load(EXAMPLES / "iris-sklearn")
    settings = policy.pod_security(manifest, "cpu")
    container = settings["container"]
    assert container["runAsUser"] == settings["pod"]["runAsUser"] == 65532
    assert container["runAsNonRoot"]
    assert container["readOnlyRootFilesystem"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    assert settings["resources"] == {}  # a cpu target asks for no GPU
