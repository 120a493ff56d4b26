"""A real OpenID Connect provider as a test peer.

The provider is panva's certified ``oidc-provider`` (npm, exact version pinned
in ``package.json`` / ``package-lock.json`` beside this file), configured by
``server.mjs`` and run with Node on 127.0.0.1 on a free port.  Nobody on the
project wrote it, so tests against it check the gateway against someone else's
reading of the specs.

Helpers (stdlib + requests only):

* :func:`node_available` -- ``None`` when the peer can run, else a reason string
  (for ``pytest.skip``).
* :func:`ensure_installed` -- ``npm ci`` here when ``node_modules`` is absent.
* :class:`OIDCPeer` -- start/stop the provider; ``issuer`` once started.
* :func:`login_and_consent` -- plays the person at the browser: login form,
  consent form (or Cancel), and returns the final redirect to the client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

__all__ = [
    "PEER_DIR",
    "OIDCPeer",
    "OIDCPeerError",
    "ensure_installed",
    "login_and_consent",
    "node_available",
    "pkce_pair",
]

PEER_DIR = Path(__file__).resolve().parent
SERVER_JS = PEER_DIR / "server.mjs"
NODE_MODULES = PEER_DIR / "node_modules"
PROVIDER_PACKAGE = NODE_MODULES / "oidc-provider" / "package.json"

START_TIMEOUT = 20.0


class OIDCPeerError(RuntimeError):
    """The peer could not be installed, started, or driven."""


def node_available() -> str | None:
    """Return ``None`` if the peer can run here, else why not (for a skip)."""
    if shutil.which("node") is None:
        return "node is not on PATH (needed for the oidc-provider peer in tests/oidc_peer)"
    if not PROVIDER_PACKAGE.is_file():
        return (
            "tests/oidc_peer/node_modules is missing: run `npm ci` in tests/oidc_peer "
            "(or call tests.oidc_peer.ensure_installed())"
        )
    return None


def ensure_installed(timeout: float = 300.0) -> None:
    """Run ``npm ci`` in tests/oidc_peer when its node_modules is absent."""
    if PROVIDER_PACKAGE.is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise OIDCPeerError("npm is not on PATH; cannot install tests/oidc_peer dependencies")
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PEER_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0 or not PROVIDER_PACKAGE.is_file():
        raise OIDCPeerError(
            f"`npm ci` in {PEER_DIR} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )


def provider_version() -> str | None:
    """The installed oidc-provider version, or None if not installed."""
    try:
        return json.loads(PROVIDER_PACKAGE.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def pkce_pair() -> tuple[str, str]:
    """Return ``(code_verifier, code_challenge)`` for PKCE S256."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


class OIDCPeer:
    """Runs ``node server.mjs`` with a config; ``issuer`` is set once started.

    ``clients``: dicts with ``client_id``, ``client_secret``, ``redirect_uris``
    and optionally ``token_endpoint_auth_method`` (``client_secret_basic``,
    the default, or ``client_secret_post``); any other client metadata the
    library accepts passes through.  Clients get grant types
    ``authorization_code`` and ``refresh_token`` unless they say otherwise.
    """

    def __init__(
        self,
        clients: list[dict],
        access_token_ttl: int = 3600,
        rotate_refresh_token: bool = True,
    ) -> None:
        self.config = {
            "port": 0,
            "clients": clients,
            "access_token_ttl": access_token_ttl,
            "rotate_refresh_token": rotate_refresh_token,
        }
        self.issuer: str | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._stderr_lines: list[str] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> OIDCPeer:
        if self._proc is not None:
            raise OIDCPeerError("peer already started")
        reason = node_available()
        if reason:
            raise OIDCPeerError(reason)
        started = time.monotonic()
        self._proc = subprocess.Popen(
            ["node", str(SERVER_JS)],
            cwd=PEER_DIR,
            env={**os.environ, "OIDC_PEER_CONFIG": json.dumps(self.config)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._stderr_lines = []
        lines: queue.Queue[str | None] = queue.Queue()

        def read_stdout(stream):
            for line in stream:
                lines.put(line)
            lines.put(None)

        self._threads = [
            threading.Thread(
                target=self._drain, args=(self._proc.stderr, self._stderr_lines), daemon=True
            ),
            threading.Thread(target=read_stdout, args=(self._proc.stdout,), daemon=True),
        ]
        for t in self._threads:
            t.start()

        deadline = started + START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"no ready line within {START_TIMEOUT:.0f} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._fail("peer exited before it was ready")
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # not ours; stdout should be quiet, but be lenient
            if isinstance(msg, dict) and msg.get("ready") is True:
                self.issuer = msg["issuer"]
                self.startup_seconds = time.monotonic() - started
                return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._close(proc)

    def __enter__(self) -> OIDCPeer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def stderr(self) -> str:
        """What the peer wrote to stderr so far (warnings, errors)."""
        return "".join(self._stderr_lines)

    # -- conveniences ----------------------------------------------------------
    def url(self, path: str) -> str:
        if self.issuer is None:
            raise OIDCPeerError("peer not started")
        return self.issuer + path

    def discovery(self) -> dict:
        resp = requests.get(self.url("/.well-known/openid-configuration"), timeout=10)
        resp.raise_for_status()
        return resp.json()

    # -- internals -------------------------------------------------------------
    @staticmethod
    def _drain(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def _close(self, proc: subprocess.Popen) -> None:
        # The process is gone: the readers see EOF; then close the pipes.
        for t in self._threads:
            t.join(timeout=2)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def _fail(self, why: str):
        proc = self._proc
        self._proc = None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
            self._close(proc)
        code = None if proc is None else proc.returncode
        raise OIDCPeerError(
            f"oidc peer failed to start: {why} (exit code {code}).\n"
            f"command: node {SERVER_JS}\nstderr:\n{self.stderr or '(empty)'}"
        )


# -- the person at the browser --------------------------------------------------


class _PageParser(HTMLParser):
    """Collects forms (action, method, inputs) and links from a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.links: list[tuple[str, str]] = []  # (href, text)
        self._form: dict | None = None
        self._link: list | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = {
                "action": a.get("action") or "",
                "method": (a.get("method") or "get").lower(),
                "inputs": [],
            }
            self.forms.append(self._form)
        elif tag in ("input", "button") and self._form is not None:
            self._form["inputs"].append(
                {
                    "tag": tag,
                    "type": (a.get("type") or "").lower(),
                    "name": a.get("name"),
                    "value": a.get("value") or "",
                }
            )
        elif tag == "a" and a.get("href"):
            self._link = [a["href"], ""]
            self.links.append(self._link)  # type: ignore[arg-type]

    def handle_data(self, data):
        if self._link is not None:
            self._link[1] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "a":
            self._link = None


def _same_endpoint(url: str, target: str) -> bool:
    u, t = urlsplit(url), urlsplit(target)
    return (u.scheme, u.netloc, u.path) == (t.scheme, t.netloc, t.path)


def login_and_consent(
    auth_url: str,
    login: str,
    *,
    deny: bool = False,
    session: requests.Session | None = None,
    password: str = "any-password",
    max_steps: int = 20,
) -> str:
    """Drive the devInteractions login and consent pages; return the redirect.

    GETs ``auth_url`` and walks ``Location`` headers by hand
    (``allow_redirects=False``).  On the login page it POSTs the form with
    ``login`` (which becomes the subject and email) and ``password``; on the
    consent page it POSTs the consent form.  With ``deny=True`` it follows the
    page's "[ Cancel ]" link (``/interaction/<uid>/abort``) on the first
    interaction page instead, which makes the provider answer the client with
    ``error=access_denied``.

    Returns the URL the provider redirects to on the client's side (the
    ``redirect_uri`` of ``auth_url`` with ``code``/``state``/``iss``, or
    ``error``...), without requesting it.  Raises :class:`OIDCPeerError` on
    anything else (an error page, an unexpected page, too many steps).
    """
    s = session if session is not None else requests.Session()
    query = parse_qs(urlsplit(auth_url).query)
    redirect_uri = (query.get("redirect_uri") or [None])[0]
    provider_origin = urlsplit(auth_url)[:2]

    def is_client_redirect(url: str) -> bool:
        if redirect_uri is not None:
            return _same_endpoint(url, redirect_uri)
        return urlsplit(url)[:2] != provider_origin

    method, url, data = "GET", auth_url, None
    for _ in range(max_steps):
        resp = s.request(method, url, data=data, allow_redirects=False, timeout=10)
        if resp.is_redirect or resp.status_code in (301, 302, 303, 307, 308):
            location = resp.headers.get("Location")
            if not location:
                raise OIDCPeerError(f"{resp.status_code} without Location from {url}")
            nxt = urljoin(url, location)
            if is_client_redirect(nxt):
                return nxt
            method, url, data = "GET", nxt, None
            continue

        if resp.status_code != 200 or "html" not in resp.headers.get("Content-Type", ""):
            raise OIDCPeerError(
                f"unexpected {resp.status_code} from {method} {url}:\n{resp.text[:2000]}"
            )

        page = _PageParser()
        page.feed(resp.text)
        page.close()

        if deny:
            abort = next((href for href, _ in page.links if "/abort" in href), None)
            if abort is None:
                raise OIDCPeerError(f"no abort link on {url}:\n{resp.text[:2000]}")
            method, url, data = "GET", urljoin(url, abort), None
            continue

        form = next((f for f in page.forms if f["method"] == "post"), None)
        if form is None:
            raise OIDCPeerError(f"no form on {url}:\n{resp.text[:2000]}")
        fields = {
            i["name"]: i["value"] for i in form["inputs"] if i["tag"] == "input" and i["name"]
        }
        prompt = fields.get("prompt")
        if prompt == "login":
            fields["login"] = login
            fields["password"] = password
        elif prompt != "consent":
            raise OIDCPeerError(f"unknown interaction prompt {prompt!r} on {url}")
        method, url, data = "POST", urljoin(url, form["action"] or url), fields
    raise OIDCPeerError(f"no redirect to the client after {max_steps} steps (last: {url})")
