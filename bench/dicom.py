"""DICOM throughput: N instances sent by dcmtk's storescu in one association to the listener, classified by
the shipped model, and their SRs and Secondary Captures delivered to a real Orthanc.

    python -m bench.dicom [--instances 200] [--per-study 2] [--backend services|embedded]

Prints: instances per second on receive (storescu's one association, from its start to its exit: every
instance acknowledged means its file and row were committed), and the end-to-end time from the first
instance sent until Orthanc holds every study's SR and every Secondary Capture.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stack import ROOT, _spawn, _wait, free_port, running_stack
from tests.dicomnet import factory
from tests.e2e.orthanc import running_orthanc

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--per-study", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="pixels on the long side")
    parser.add_argument("--backend", choices=["services", "embedded"], default="services")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="fracture-dicom-bench-"))
    studies = max(1, args.instances // args.per_study)
    paths = []
    for study in range(studies):
        study_uid = factory.generate_uid()
        for index in range(args.per_study):
            path = folder / f"{study:04d}-{index}.dcm"
            path.write_bytes(
                factory.radiograph(
                    study_uid=study_uid,
                    accession=f"BENCH-{study:04d}",
                    patient=factory.Patient(mrn=f"BENCH-{study:04d}", name=f"Bench^Patient{study}"),
                    modality="DX" if index % 2 == 0 else "CR",
                    syntax="jpeg_lossless_sv1",
                    size=args.size,
                )
            )
            paths.append(path)
    print(f"{len(paths)} instances in {studies} studies, {args.size} px, JPEG lossless, {args.backend}")

    with running_orthanc(folder) as orthanc:
        listener_port = free_port()
        extra = {
            "DICOM_DESTINATION": orthanc.c_store_destination,
            "DICOM_PORT": str(listener_port),
            "DICOM_QUIET_PERIOD_SECONDS": "2",
            "DICOM_POLL_INTERVAL_SECONDS": "1",
        }
        with running_stack(backend=args.backend, extra_env=extra) as stack:
            listener, ready = _spawn(
                "listener",
                [sys.executable, "manage.py", "dicom_listener"],
                stack.env,
                marker="DICOM listener",
            )
            stack.processes.append(listener)
            _wait(ready, listener, 120)
            started = time.monotonic()
            send = subprocess.run(
                [
                    "storescu",
                    "-xs",
                    "-aet",
                    "BENCH",
                    "-aec",
                    "FRACTUREREVIEW",
                    "127.0.0.1",
                    str(listener_port),
                ]
                + [str(p) for p in paths],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=False,
            )
            received = time.monotonic() - started
            if send.returncode != 0:
                raise SystemExit(f"storescu failed:\n{send.stderr[-3000:]}")
            print(
                f"receive: {len(paths)} instances in {received:.1f} s "
                f"= {len(paths) / received:.1f} instances/s"
            )

            deadline = started + args.timeout
            srs = scs = 0
            while time.monotonic() < deadline:
                classes = [
                    orthanc.get(f"/instances/{i}/tags?simplify")["SOPClassUID"]
                    for i in orthanc.get("/instances")
                ]
                srs, scs = classes.count(SR_CLASS), classes.count(SC_CLASS)
                if srs >= studies and scs >= len(paths):
                    break
                time.sleep(2)
            total = time.monotonic() - started
            print(
                f"Orthanc holds {srs} SR and {scs} Secondary Capture instances "
                f"({studies} / {len(paths)} expected)"
            )
            print(
                f"end to end (first instance sent -> last result in Orthanc): {total:.1f} s "
                f"= {len(paths) / total:.2f} instances/s"
            )
            if srs < studies or scs < len(paths):
                raise SystemExit("timed out before every result reached Orthanc")


if __name__ == "__main__":
    main()
