"""The naive pipeline a clinic might script itself, for the side-by-side comparison.

Run as ``python -m edge.tools.bench.baseline`` by the bench, in its own process, on the
same files and model as the daemon. It does what such a script does and no more:
every ``poll_s`` it lists the folder, and for each new file reads it whole with
pydicom, takes ``pixel_array`` (pydicom's default decoder choice, full
resolution), resizes with OpenCV's default interpolation, scales to [0, 1], runs
ONNX Runtime with default session options on that one image, and once a study has
four images publishes its score with paho (QoS 1, waiting for the PUBACK).

A file it cannot read yet (still being written) is tried again at the next poll.
It runs until it is terminated.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pydicom
from pydicom.errors import InvalidDicomError

from edge.bundle.manifest import load_bundle
from edge.common.mqttclient import make_client

READY = "baseline ready"
TOPIC = "bench/baseline/results"
#: what reading a half-written file raises; the script tries it again later
NOT_READY = (InvalidDicomError, ValueError, EOFError, OSError, AttributeError, KeyError)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    bundle = load_bundle(args.bundle)
    spec = bundle.manifest.preprocessing
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    client = make_client("baseline", protocol="3.1.1", reconnect_on_failure=True)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    print(READY, flush=True)
    done: set[str] = set()
    studies: dict[str, list[float]] = {}
    while True:
        for path in sorted(args.folder.iterdir()):
            if path.name in done:
                continue
            try:
                study_uid, score = score_file(path, session, input_name, spec.height, spec.width)
            except NOT_READY:
                continue  # still being written: the next poll takes it
            done.add(path.name)
            scores = studies.setdefault(study_uid, [])
            scores.append(score)
            if len(scores) == 4:
                payload = json.dumps({"study_uid": study_uid, "score": max(scores)})
                client.publish(TOPIC, payload, qos=1).wait_for_publish()
        time.sleep(args.poll_s)


def score_file(
    path: Path, session: ort.InferenceSession, input_name: str, height: int, width: int
) -> tuple[str, float]:
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array.astype(np.float32)
    image = cv2.resize(pixels, (width, height))
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    # The first output is the score; a suspicion map beside it is no part of the baseline.
    output = session.run(None, {input_name: image[np.newaxis, np.newaxis].astype(np.float32)})[0]
    return str(dataset.StudyInstanceUID), float(np.asarray(output).reshape(-1)[0])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True, help="engine bundle folder")
    parser.add_argument("--port", type=int, required=True, help="broker port on 127.0.0.1")
    parser.add_argument("--poll-s", type=float, default=1.0, help="seconds between listings")
    return parser


if __name__ == "__main__":
    main()
