"""``python -m serving.serve``: the clip service on Ray Serve (a local Ray instance, or a cluster).

The application is two deployments: ``Gateway`` (FastAPI ingress, one replica, no CPU of its
own) and ``Generator`` (the replicas that hold the pipeline; ``--replicas`` or ``--autoscale``,
``--replica-cpus`` / ``--replica-gpus`` each). docs/serving.md says why the pipeline is not split
into one deployment per network.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
import time
from pathlib import Path

import ray
from ray import serve

from contract.bundle import Bundle
from contract.cli import run_cli
from runtime.errors import InputError
from runtime.generate import add_engine_arguments, bundle_dir, engine_options
from runtime.options import GenerateOptions, add_arguments, from_arguments
from serving.gateway import Gateway
from serving.generator import Generator
from serving.settings import APP_NAME, Settings, token_digest

DEFAULTS = Settings(bundle="", results="")

EXAMPLES = """examples:
  # a local one-node Ray instance, two replicas, a token from a file
  python -m serving.serve --bundle bundle --token-file token.txt --replicas 2
  # SF-V's one step as the default of every request; the fast decoder
  python -m serving.serve --bundle bundle --token-file token.txt --steps 1 --max-guidance 1 --decoder fast
  # loopback only, no token (refused on any other address)
  python -m serving.serve --bundle bundle --no-auth
  # onto a running Ray cluster (`ray start --head` on one node, `ray start --address HEAD:6379` on the others),
  # one GPU per replica, 1 to 8 replicas by queue length
  python -m serving.serve --bundle /shared/bundle --address auto --host 0.0.0.0 --token-file token.txt \\
      --backend tensorrt --replica-gpus 1 --autoscale 1,8

Then: curl -H "Authorization: Bearer $(cat token.txt)" -F image=@cat.png -F 'options={"seed": 3}' http://127.0.0.1:8000/v1/clips
The OpenAPI page is at http://127.0.0.1:8000/docs."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.serve", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Serve image-to-video clips over HTTP with Ray Serve.")
    p.add_argument("--bundle", required=True, help="exported bundle directory (the same path on every node)")
    p.add_argument("--host", default="127.0.0.1", help="address the HTTP proxy binds (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=1, help="generator replicas (default 1)")
    scale.add_argument("--autoscale", metavar="MIN,MAX", help="scale the generator replicas between MIN and MAX on queue length")
    p.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves per generator replica (default 1)")
    p.add_argument("--replica-gpus", type=float, default=0.0, help="GPUs per generator replica (default 0)")
    p.add_argument("--address", help="a running Ray cluster: auto (this node's) or ray://HOST:PORT; default: start a local Ray instance")
    p.add_argument("--num-cpus", type=int, help="with a local Ray instance: the CPUs it may use (default: all)")
    p.add_argument("--max-batch", type=int, default=DEFAULTS.max_batch, help=f"clips per pipeline call (default {DEFAULTS.max_batch})")
    p.add_argument("--batch-wait-ms", type=float, default=DEFAULTS.batch_wait_ms,
                   help=f"how long a busy replica waits to fill a batch; a request alone on an idle one starts at once "
                        f"(default {DEFAULTS.batch_wait_ms:g})")
    p.add_argument("--max-queue", type=int, default=DEFAULTS.max_queue,
                   help=f"jobs queued or running before uploads get 429 (default {DEFAULTS.max_queue})")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULTS.max_upload_bytes / 2**20,
                   help=f"upload size cap in MiB (default {DEFAULTS.max_upload_bytes / 2**20:g})")
    p.add_argument("--max-pixels", type=int, default=DEFAULTS.max_pixels, help=f"image pixel cap (default {DEFAULTS.max_pixels})")
    p.add_argument("--results", default="sfv-results", help="job records and clips, kept across restarts (default ./sfv-results)")
    p.add_argument("--ttl", type=float, default=DEFAULTS.ttl_s, help=f"seconds a finished job's files are kept (default {DEFAULTS.ttl_s:g})")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token-file", help="file holding the bearer token clients must send (one line)")
    auth.add_argument("--no-auth", action="store_true", help="no token (only with a loopback --host)")
    add_engine_arguments(p)
    generation = p.add_argument_group("generation defaults", "each request's options override these (JSON field names)")
    add_arguments(generation)
    return p


def settings_from_arguments(args) -> Settings:
    """Check the arguments (one-line :class:`InputError`) and turn them into :class:`Settings`."""
    if args.no_auth:
        if not is_loopback(args.host):
            raise InputError(f"--no-auth binds to loopback only; --host {args.host} is reachable from elsewhere: pass --token-file")
        digest = None
    elif args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read --token-file {args.token_file}: {exc.strerror}") from None
        if not token:
            raise InputError(f"--token-file {args.token_file} is empty; write the bearer token into it (e.g. `openssl rand -hex 32`)")
        digest = token_digest(token)
    else:
        raise InputError("refusing to start without a token: pass --token-file FILE, or --no-auth with a loopback --host")
    for name in ("max_batch", "max_queue", "port", "replicas"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    bundle = Bundle.load(bundle_dir(args.bundle))
    defaults = from_arguments(args)
    defaults.resolve(bundle.config, bundle.sampler)  # a bad default fails here, not on every request
    changed = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(GenerateOptions)
               if getattr(defaults, f.name) != f.default}
    return Settings(bundle=str(Path(bundle.root).resolve()), results=str(Path(args.results).resolve()),
                    engines=engine_options(args), option_defaults=changed, max_batch=args.max_batch,
                    batch_wait_ms=args.batch_wait_ms, max_queue=args.max_queue,
                    max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels, ttl_s=args.ttl,
                    token_sha256=digest)


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--autoscale takes MIN,MAX (e.g. 1,4), got {text!r}") from None
    if not 0 <= low <= high or high < 1:
        raise InputError(f"--autoscale MIN,MAX needs 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return low, high


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(settings: Settings, *, replicas: int = 1, autoscale: tuple[int, int] | None = None,
              replica_cpus: float = 1.0, replica_gpus: float = 0.0):
    """The Serve application: the gateway bound to a handle of the generator deployment."""
    scaling = ({"autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                       "target_ongoing_requests": settings.max_batch}}
               if autoscale else {"num_replicas": replicas})
    generator = Generator.options(ray_actor_options={"num_cpus": replica_cpus, "num_gpus": replica_gpus},
                                  # a replica holds one batch running and the next one filling
                                  max_ongoing_requests=2 * settings.max_batch, **scaling).bind(settings)
    return Gateway.bind(generator, settings)


def start(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
          num_cpus: int | None = None, object_store_bytes: int | None = None, ray_options: dict | None = None,
          **scaling) -> str:
    """Connect to (``address``) or start a Ray instance, deploy the application; returns its URL.

    ``ray_options``: more ``ray.init`` arguments for a local instance (e.g. ``_system_config``).
    """
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=object_store_bytes,
                     **(ray_options or {}))
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(settings, **scaling), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def stop() -> None:
    """Shut down Serve and the local Ray instance :func:`start` began."""
    serve.shutdown()
    ray.shutdown()


@run_cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_arguments(args)
    url = start(settings, host=args.host, port=args.port, address=args.address, num_cpus=args.num_cpus,
                replicas=args.replicas, autoscale=parse_autoscale(args.autoscale),
                replica_cpus=args.replica_cpus, replica_gpus=args.replica_gpus)
    print(f"serving {settings.bundle} at {url} (OpenAPI page {url}/docs, results in {settings.results}); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    finally:
        if args.address:  # a shared cluster keeps running; only this application goes
            serve.delete(APP_NAME)
        else:
            stop()


if __name__ == "__main__":
    sys.exit(main())
