"""``cnnlab serve [CHECKPOINT]``: the prediction service on uvicorn."""

from __future__ import annotations

import argparse

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
                    "says otherwise.",
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
                   help="largest request body accepted (default: 10 MB)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from cnnlab.errors import ConfigError
    from cnnlab.serve.app import ServeSettings, create_app

    if (args.max_batch_size < 1 or args.max_batch_delay_ms < 0 or args.max_body_mb <= 0
            or args.engine_threads < 0):
        raise ConfigError("--max-batch-size must be >= 1, --max-batch-delay-ms >= 0, "
                          "--max-body-mb > 0 and --engine-threads >= 0")
    app = create_app(ServeSettings(
        checkpoint=args.checkpoint, engine=args.engine, engine_threads=args.engine_threads,
        inference_thread=args.inference_thread,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024), feedback_url=args.feedback_db))
    # ws="none": the service has no websocket routes
    uvicorn.run(app, host=args.host, port=args.port, ws="none",
                log_level="warning" if args.quiet else "info")
    return 0
