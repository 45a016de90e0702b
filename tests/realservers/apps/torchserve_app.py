"""A real TorchServe 0.12.0 serving a tiny real torch model, in the foreground.

Run with the Python of the ``torchserve`` server venv::

    python torchserve_app.py --workdir DIR --inference-port P --management-port Q

It builds, under DIR:

- ``build/``: a TorchScript ``torch.nn.Linear(4, 2)`` (``model.pt``) and its handler;
- ``model-store/``: ``tiny.mar`` (loaded at start, one worker), ``idle.mar``
  (only archived: a test registers it with ``initial_workers=0`` through the
  management API, which ``enable_model_api=true`` allows) and ``broken.mar``
  (only archived: its handler raises while loading, so its worker crash-loops);
- ``tiny_handler.py``: with ``--switches DIR``, inference obeys the files of
  tests/realservers/apps/switches.py in DIR (wedge, slow, soft-fail);
- ``config.properties``: the inference and management API on the given ports,
  metrics and both gRPC APIs on free ports of their own, token auth ON (the
  default), no config snapshots;

then becomes ``torchserve --start --foreground`` (an exec: the process stays
in front, and its Java frontend and Python workers are in its process group),
working in DIR, so TorchServe writes its ``key_file.json`` to DIR. TMPDIR is
DIR/tmp: TorchServe keeps a pid file in the temp folder and refuses to start
while another instance's pid file names a live TorchServe.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

HANDLER = '''\
"""Handler of the tiny model: JSON rows of 4 numbers in, rows of 2 out.

The switches of tests/realservers/apps/switches.py, in SWITCHES (the worker
runs where that module cannot be imported): wedge, slow, soft-fail.
"""

import json
import os
import time

import torch
from ts.torch_handler.base_handler import BaseHandler

SWITCHES = "@SWITCHES@"


def _switch(name):
    return os.path.join(SWITCHES, name) if SWITCHES else None


class TinyHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for item in data:
            body = item.get("data") or item.get("body")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            rows.append(body)
        return torch.tensor(rows, dtype=torch.float32)

    def inference(self, data, *args, **kwargs):
        while _switch("wedge") and os.path.exists(_switch("wedge")):
            time.sleep(0.05)
        try:
            with open(_switch("slow") or "") as fp:
                time.sleep(float(fp.read()))
        except (OSError, ValueError):
            pass
        return super().inference(data, *args, **kwargs)

    def postprocess(self, data):
        if _switch("soft-fail") and os.path.exists(_switch("soft-fail")):
            return [[] for _ in range(len(data))]
        return data.tolist()
'''

BROKEN_HANDLER = '''\
"""Handler of a model that cannot load: its worker crash-loops."""

from ts.torch_handler.base_handler import BaseHandler


class BrokenHandler(BaseHandler):
    def initialize(self, context):
        raise RuntimeError("this model cannot load")
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_model(build: Path) -> Path:
    import torch

    torch.manual_seed(0)
    model = torch.jit.script(torch.nn.Linear(4, 2).eval())
    path = build / "model.pt"
    model.save(str(path))
    return path


def archive(name: str, model: Path, handler: Path, store: Path) -> None:
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    subprocess.run(
        [
            str(archiver),
            "--model-name", name,
            "--version", "1.0",
            "--serialized-file", str(model),
            "--handler", str(handler),
            "--export-path", str(store),
            "--force",
        ],
        check=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--inference-port", required=True, type=int)
    parser.add_argument("--management-port", required=True, type=int)
    parser.add_argument("--model", default="tiny", help="loaded at start with one worker")
    parser.add_argument("--spare", default="idle", help="archived only, for the tests to register")
    parser.add_argument("--broken", default="broken", help="archived only; its handler fails")
    parser.add_argument("--switches", type=Path, help="the inference switches' folder")
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    build, store, tmp = workdir / "build", workdir / "model-store", workdir / "tmp"
    for folder in (build, store, tmp):
        folder.mkdir(parents=True, exist_ok=True)

    model = build_model(build)
    handler = build / "tiny_handler.py"
    switches = str(args.switches.resolve()) if args.switches else ""
    handler.write_text(HANDLER.replace("@SWITCHES@", switches))
    for name in (args.model, args.spare):
        archive(name, model, handler, store)
    broken = build / "broken_handler.py"
    broken.write_text(BROKEN_HANDLER)
    archive(args.broken, model, broken, store)

    config = workdir / "config.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{args.inference_port}",
                f"management_address=http://127.0.0.1:{args.management_port}",
                f"metrics_address=http://127.0.0.1:{free_port()}",
                f"grpc_inference_port={free_port()}",
                f"grpc_management_port={free_port()}",
                f"model_store={store}",
                f"load_models={args.model}.mar",
                "default_workers_per_model=1",
                "enable_model_api=true",
                "disable_system_metrics=true",
                "number_of_netty_threads=2",
                "netty_client_threads=2",
                "vmargs=-Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
                "",
            ]
        )
    )

    torchserve = Path(sys.executable).parent / "torchserve"
    command = [
        str(torchserve),
        "--start",
        "--foreground",
        "--ncs",
        "--model-store", str(store),
        "--ts-config", str(config),
    ]  # fmt: skip
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "TEMP": str(tmp),
        "LOG_LOCATION": str(workdir / "logs"),
    }
    env.pop("TS_CONFIG_FILE", None)
    os.chdir(workdir)
    sys.stdout.flush()
    os.execve(str(torchserve), command, env)


if __name__ == "__main__":
    main()
