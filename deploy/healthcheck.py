#!/usr/bin/env python3
"""Container health probe: GET a URL, exit 0 on HTTP 200, 1 otherwise.

Installed in the image as ``footfall-healthcheck`` and used by the Dockerfile's
HEALTHCHECK and by every footfall service's ``healthcheck:`` in docker-compose.yml.
The slim image has no curl or wget, and adding them would only enlarge the attack
surface, so this uses the standard library alone.

Usage: ``footfall-healthcheck [URL]``; without URL it reads ``FOOTFALL_HEALTHCHECK_URL``
(default ``http://127.0.0.1:8080/healthz``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

_DEFAULT_URL = "http://127.0.0.1:8080/healthz"
_TIMEOUT_S = 3.0


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else os.environ.get("FOOTFALL_HEALTHCHECK_URL", _DEFAULT_URL)
    if not url.startswith(("http://", "https://")):
        print(f"footfall-healthcheck: {url!r} is not an http(s) URL", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310 - scheme checked above
            status = response.status
    except urllib.error.HTTPError as exc:  # 503 from /readyz lands here
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print(f"footfall-healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"footfall-healthcheck: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
