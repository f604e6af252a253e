"""``python -m serving.client``: send one image to the clip service, follow its progress, save the clip.

From Python::

    from serving.client import generate_clip
    path = generate_clip("http://127.0.0.1:8000", "cat.png", "cat.mp4", token="...", options={"seed": 3})
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import requests
from tqdm.auto import tqdm

from contract.atomic import write_bytes_atomic
from contract.cli import run_cli
from contract.errors import ToolkitError

EXAMPLES = """examples:
  python -m serving.client --url http://127.0.0.1:8000 --image cat.png --out cat.mp4 --token-file token.txt
  python -m serving.client --url http://127.0.0.1:8000 --image cat.png --out cat.gif --options '{"seed": 3, "steps": 1}'"""


class ServiceError(ToolkitError):
    """The service refused the request or the job failed; the message is the service's."""


def generate_clip(url: str, image: str | Path, out: str | Path, *, token: str | None = None, options: dict | None = None,
                  format: str | None = None, poll_s: float = 0.25, timeout_s: float = 3600, progress: bool = True,
                  session: requests.Session | None = None) -> Path:
    """Upload ``image``, wait for the clip, write it atomically to ``out``; returns ``out``.

    ``format`` defaults to ``out``'s extension (mp4, webp, gif, npy). Raises :class:`ServiceError`
    with the service's message on 4xx/5xx or a failed or cancelled job.
    """
    out = Path(out)
    fmt = format or out.suffix.lstrip(".").lower() or "mp4"
    http = session or requests.Session()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    job_id = submit(http, url, image, headers, options, fmt)
    with tqdm(total=100, desc="clip", unit="%", disable=None if progress else True) as bar:
        deadline = time.monotonic() + timeout_s
        while True:
            state = _check(http.get(f"{url}/v1/clips/{job_id}", headers=headers, timeout=30))
            bar.set_postfix_str(f"{state['status']} {state.get('stage') or ''}".strip())
            bar.update(round(100 * state["progress"]) - bar.n)
            if state["status"] == "done":
                break
            if state["status"] in ("failed", "cancelled"):
                raise ServiceError(f"clip {job_id} {state['status']}: {state.get('error')}")
            if time.monotonic() > deadline:
                raise ServiceError(f"clip {job_id} not done after {timeout_s:g} s (status {state['status']})")
            time.sleep(poll_s)
    video = http.get(f"{url}/v1/clips/{job_id}/video", headers=headers, timeout=300)
    _check(video, json_body=False)
    write_bytes_atomic(out, video.content)
    return out


def submit(http: requests.Session, url: str, image: str | Path, headers: dict, options: dict | None, fmt: str) -> str:
    """POST one image; returns the job id."""
    with open(image, "rb") as f:
        data = {"format": fmt} | ({"options": json.dumps(options)} if options else {})
        return _check(http.post(f"{url}/v1/clips", files={"image": (Path(image).name, f)}, data=data,
                                headers=headers, timeout=300))["id"]


def _check(response: requests.Response, json_body: bool = True):
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise ServiceError(f"{response.request.method} {response.url}: HTTP {response.status_code}: {detail}")
    return response.json() if json_body else response


@run_cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.client", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Make one clip with a running clip service (python -m serving.serve).")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default http://127.0.0.1:8000)")
    p.add_argument("--image", required=True, help="conditioning image")
    p.add_argument("--out", required=True, help="clip.mp4 | clip.webp | clip.gif | clip.npy")
    p.add_argument("--token-file", help="file holding the bearer token")
    p.add_argument("--options", help='generation options as JSON, e.g. \'{"seed": 3, "steps": 1, "max_guidance": 1.0}\'')
    args = p.parse_args(argv)
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    try:
        options = json.loads(args.options) if args.options else None
    except json.JSONDecodeError as exc:
        raise ServiceError(f"--options is not valid JSON: {exc}") from None
    try:
        path = generate_clip(args.url.rstrip("/"), args.image, args.out, token=token, options=options)
    except requests.ConnectionError as exc:
        raise ServiceError(f"cannot reach {args.url}: {exc.__class__.__name__}; is `python -m serving.serve` running?") from None
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
