"""The user's Hugging Face token, for a gated download: found, sent in one request header, never shown.

Where it comes from (the first found wins): the file named by --hf-token-file, $HF_TOKEN (or the older
$HUGGING_FACE_HUB_TOKEN), then the token `hf auth login` / `huggingface-cli login` saved, in huggingface_hub's token
file ($HF_TOKEN_PATH, else $HF_HOME/token, else $XDG_CACHE_HOME/huggingface/token, else ~/.cache/huggingface/token).
It is never printed, logged or written anywhere, except where the user asks (--save-hf-token): into that same token
file, owner-only, as `hf auth login` would. Messages name where a token came from, never the token.

Standard library only: it runs before the app's venv exists.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TOKENS_PAGE = "https://huggingface.co/settings/tokens"
ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


class TokenError(ValueError):
    """A token source the user named is unusable; the message says why, without the token."""


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)     # repr, str and messages never show it
    source: str                        # "HF_TOKEN", "the file X", "your Hugging Face login (PATH)"

    def header(self) -> dict:
        return {"Authorization": f"Bearer {self.value}"}

    def __str__(self) -> str:
        return f"a Hugging Face token from {self.source}"


def token_path(environ=None) -> Path:
    """huggingface_hub's token file, as it computes it (constants.HF_TOKEN_PATH) for this environment."""
    env = os.environ if environ is None else environ
    if env.get("HF_TOKEN_PATH"):
        return Path(os.path.expanduser(env["HF_TOKEN_PATH"]))
    if env.get("HF_HOME"):
        return Path(os.path.expanduser(env["HF_HOME"])) / "token"
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "huggingface" / "token"


def clean(text: str, source: str) -> str:
    """The token in `text` (its first non-empty line), or TokenError: it goes into an HTTP header verbatim."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise TokenError(f"{source} holds no token (it is empty)")
    value = lines[0]
    if not value.isascii() or not value.isprintable() or " " in value:
        raise TokenError(f"{source} does not hold a Hugging Face token (its first line has spaces or characters a "
                         f"token never has); make one at {TOKENS_PAGE}")
    return value


def find_token(token_file=None, environ=None) -> Token | None:
    """The token to use, or None when there is none. A --hf-token-file that cannot be read is a TokenError (the
    user named it); an unreadable login file counts as no login."""
    env = os.environ if environ is None else environ
    if token_file is not None:
        path = Path(os.path.expanduser(os.fspath(token_file)))
        source = f"the file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else "not a text file"
            raise TokenError(f"--hf-token-file {path} cannot be read ({why})") from None
        return Token(clean(text, source), source)
    for var in ENV_VARS:
        if env.get(var, "").strip():
            return Token(clean(env[var], f"${var}"), f"${var}")
    path = token_path(env)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return Token(clean(text, f"the login token file {path}"), f"your Hugging Face login ({path})")
    except TokenError:
        return None


def save_token(token: Token, environ=None) -> Path | None:
    """Write the token into huggingface_hub's token file (owner-only), as `hf auth login` does; None when it
    already came from there. OSError when the file cannot be written."""
    path = token_path(environ)
    try:
        if path.is_file() and path.read_text(encoding="utf-8").strip() == token.value:
            return None
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token.value)
    try:
        os.chmod(path, 0o600)              # an existing file keeps its old mode through O_CREAT
    except OSError:
        pass
    return path
