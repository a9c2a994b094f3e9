"""``cnnlab serve [CHECKPOINT]``: the prediction service on uvicorn."""

from __future__ import annotations

import argparse
import math

from cnnlab.cli._util import Formatter, Parser, SubParsers


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "serve", parents=[common], formatter_class=formatter,
        help="serve a model over HTTP (predict, health, metrics)",
        description="Serve a model over HTTP with FastAPI on uvicorn: POST /v1/predict (an "
                    "image as multipart\n`file`, a raw image/png or image/jpeg body, or JSON "
                    "{\"image\": base64} or {\"pixels\": array}),\nPOST /v1/predict/batch, POST "
                    "/v1/feedback, POST /v1/admin/reload, GET /v1/health, GET /v1/model,\nGET "
                    "/metrics (Prometheus), /docs (served offline), and a web page at / to draw "
                    "or\nupload an image and correct the answer.\n"
                    "Concurrent requests are micro-batched. Binds to 127.0.0.1 unless --host "
                    "says otherwise.\nBodies, pixels per image and per request, and the "
                    "decoding time of a request are bounded\n(413 and 503 past them); large "
                    "images decode on worker threads, shrunk while decoded.",
        epilog="Examples:\n  cnnlab serve                      (the packaged default model)\n"
               "  cnnlab serve runs/fast --port 8080\n"
               "  curl -F file=@digit.png http://127.0.0.1:8000/v1/predict")
    p.add_argument("checkpoint", nargs="?", default="default", metavar="CHECKPOINT",
                   help="run directory, checkpoint, or `default` (default: default)")
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default: 8000")
    p.add_argument("--engine", choices=["auto", "torch", "onnx", "int8"], default="auto",
                   help="what runs the model: torch, onnx (FP32), int8 (see `cnnlab predict "
                        "--help`) or auto, the fastest available at batch 1 (default: auto)")
    p.add_argument("--engine-threads", type=int, default=2, metavar="N",
                   help="ONNX Runtime threads per batch (default: 2; 0: one per core)")
    p.add_argument("--inference-thread", action="store_true",
                   help="run batches on a worker thread beside the event loop instead of in "
                        "it (for machines with cores to spare; on 2 cores the event loop "
                        "served more requests)")
    p.add_argument("--max-batch-size", type=int, default=32,
                   help="images run together from concurrent requests (default: 32)")
    p.add_argument("--max-batch-delay-ms", type=float, default=0.0,
                   help="how long a request also waits for others to batch with (default: 0: "
                        "requests that queue while a batch runs form the next batch)")
    p.add_argument("--feedback-db", default="sqlite:///runs/serve/feedback.db", metavar="URL",
                   help="the feedback store, a database URL or a SQLite file path (default: "
                        "sqlite:///runs/serve/feedback.db)")
    p.add_argument("--max-body-mb", type=float, default=10.0,
                   help="largest request body accepted, counted as it is read, chunked "
                        "bodies too (default: 10 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                   help="most pixels in one image, from its header (default: 40000000)")
    p.add_argument("--max-request-pixels", type=int, default=64_000_000, metavar="N",
                   help="most pixels in all images of one request (default: 64000000)")
    p.add_argument("--decode-workers", type=int, default=2, metavar="N",
                   help="threads decoding large images, at most N at once (default: 2)")
    p.add_argument("--decode-timeout-s", type=float, default=5.0, metavar="S",
                   help="time budget of a request's decoding; past it the answer is 503 "
                        "(default: 5)")
    p.add_argument("--feedback-memory-mb", type=float, default=64.0, metavar="MB",
                   help="memory for the inputs of recent predictions that feedback can "
                        "refer to (at most 10000 of them; default: 64 MB)")
    p.add_argument("--drift-window", type=int, default=1000, metavar="N",
                   help="predictions the sliding-window drift in /metrics covers "
                        "(default: 1000)")
    p.add_argument("--allow-reload-path", action="store_true",
                   help="let POST /v1/admin/reload load a checkpoint path; without it only "
                        "versions of the model registry are loaded (default: off)")
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    """Every numeric flag finite and in range.

    Raises:
        ConfigError: the first one that is not, with the range it must be in.
    """
    from cnnlab.errors import ConfigError

    checks = [
        ("--port", args.port, 1, 65535), ("--max-batch-size", args.max_batch_size, 1, 4096),
        ("--max-batch-delay-ms", args.max_batch_delay_ms, 0, 10_000),
        ("--engine-threads", args.engine_threads, 0, 1024),
        ("--max-body-mb", args.max_body_mb, 0.001, 4096),
        ("--max-pixels", args.max_pixels, 1, 1_000_000_000),
        ("--max-request-pixels", args.max_request_pixels, 1, 10_000_000_000),
        ("--decode-workers", args.decode_workers, 1, 256),
        ("--decode-timeout-s", args.decode_timeout_s, 0.001, 3600),
        ("--feedback-memory-mb", args.feedback_memory_mb, 0, 1_000_000),
        ("--drift-window", args.drift_window, 1, 10_000_000),
    ]
    for flag, value, low, high in checks:
        if not (math.isfinite(value) and low <= value <= high):
            raise ConfigError(f"{flag} must be a number from {low:g} to {high:g}; got {value}")


def _return_freed_memory() -> None:
    """Let glibc give large freed buffers back to the OS at once.

    The entry point keeps them (``_tune_malloc``: batch-1000 inference 2.3x faster), but the
    service's batches are small, and its large buffers are one request's image: kept, 50
    decodes of a 6300x6300 PNG left the server 660 MB larger for good; given back, RSS
    returns to where it started (benchmarks/bench_serve.py --hostile).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 20)  # 1 MiB and up: mapped, unmapped on free
        libc.mallopt(m_trim_threshold, 4 << 20)
    except (OSError, AttributeError):
        pass


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from cnnlab.serve.app import ServeSettings, create_app
    from cnnlab.serve.framing import bind, server_config

    _check(args)
    _return_freed_memory()
    sock = bind(args.host, args.port)  # before loading the model: a port in use fails fast
    try:
        app = create_app(ServeSettings(
            checkpoint=args.checkpoint, engine=args.engine, engine_threads=args.engine_threads,
            inference_thread=args.inference_thread,
            max_batch_size=args.max_batch_size,
            max_batch_delay_ms=args.max_batch_delay_ms,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=args.max_pixels,
            max_request_pixels=args.max_request_pixels, decode_workers=args.decode_workers,
            decode_timeout_s=args.decode_timeout_s,
            remember_bytes=int(args.feedback_memory_mb * 1024 * 1024),
            drift_window=args.drift_window, allow_reload_path=args.allow_reload_path,
            feedback_url=args.feedback_db))
        config = server_config(app, log_level="warning" if args.quiet else "info")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
