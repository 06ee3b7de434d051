"""Hospital integration end to end, against a real PACS (Orthanc) and a real modality (dcmtk's storescu):
modality -> Fracture Review's listener (a `manage.py dicom_listener` process) -> a real `celery worker`
with the shipped model -> SR + Secondary Captures sent to Orthanc -> checked through Orthanc's REST API;
then the clinician's review -> the final-call SR in Orthanc; and the same through DICOMweb STOW-RS both ways.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom.uid import generate_uid
from rest_framework.authtoken.models import Token

from radiology import services
from radiology.dicomnet.models import DicomArrival, ResultDelivery
from radiology.models import Prediction, Radiograph, Study
from tests.dicomnet import factory
from tests.e2e.harness import ROOT, free_port, start_worker, wait_for
from tests.e2e.orthanc import Orthanc, running_orthanc
from tests.factories import ClinicianFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
AE_TITLE = "FRACTUREREVIEW"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path) as pacs:
        yield pacs


def _env(worker_env: dict[str, str], destination: str, listener_port: int) -> dict[str, str]:
    return {
        **worker_env,
        "DICOM_DESTINATION": destination,
        "DICOM_AE_TITLE": AE_TITLE,
        "DICOM_PORT": str(listener_port),
        "DICOM_QUIET_PERIOD_SECONDS": "1",
        "DICOM_POLL_INTERVAL_SECONDS": "1",
    }


def _start_listener(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "dicom_listener"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            assert process.poll() is None, "the DICOM listener exited"
            return False

    wait_for(listening, timeout=60, message="the DICOM listener")
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def _write_study(folder: Path, study_uid: str, accession: str) -> list[Path]:
    paths = []
    for index, modality in enumerate(("DX", "CR", "DX")):
        path = folder / f"{index}.dcm"
        path.write_bytes(
            factory.radiograph(
                study_uid=study_uid,
                modality=modality,
                syntax="jpeg_lossless_sv1",
                accession=accession,
                size=384,
            )
        )
        paths.append(path)
    return paths


def _sent(study: Study, kind: str) -> ResultDelivery | None:
    return ResultDelivery.objects.filter(study=study, kind=kind, status=ResultDelivery.Status.SENT).first()


def _check_results_in_orthanc(orthanc: Orthanc, study: Study, study_uid: str) -> dict[str, Any]:
    held = orthanc.instances_of_study(study_uid)
    by_class: dict[str, list[dict[str, Any]]] = {}
    for tags in held:
        by_class.setdefault(tags["SOPClassUID"], []).append(tags)
    sources = {r.dicom_attributes["SOPInstanceUID"] for r in study.radiographs.all()}
    assert len(by_class[SC_CLASS]) == 3, "a Secondary Capture per radiograph"
    assert {tags["BurnedInAnnotation"] for tags in by_class[SC_CLASS]} == {"YES"}
    model_sr = next(t for t in by_class[SR_CLASS] if t["VerificationFlag"] == "UNVERIFIED")
    assert model_sr["ContentTemplateSequence"][0]["TemplateIdentifier"] == "1500"
    referenced = {
        sop["ReferencedSOPInstanceUID"]
        for series in model_sr["CurrentRequestedProcedureEvidenceSequence"][0]["ReferencedSeriesSequence"]
        for sop in series["ReferencedSOPSequence"]
    }
    assert referenced == sources
    assert model_sr["PatientID"] == "DCM-7001"
    return model_sr


def test_modality_to_listener_to_model_to_orthanc(
    live_server: Any, worker_env: dict[str, str], orthanc: Orthanc, tmp_path: Path
) -> None:
    listener_port = free_port()
    env = _env(worker_env, orthanc.c_store_destination, listener_port)
    worker = start_worker(env, name="dicom", beat=True)
    listener = _start_listener(env, listener_port)
    try:
        study_uid = generate_uid()
        paths = _write_study(tmp_path, study_uid, accession=f"PACS-{uuid.uuid4().hex[:8]}")
        send = subprocess.run(
            [
                "storescu",
                "-xs",
                "-aet",
                "MODALITY",
                "-aec",
                AE_TITLE,
                "127.0.0.1",
                str(listener_port),
                *map(str, paths),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert send.returncode == 0, send.stderr
        # The same study sent again (a modality retrying): nothing new anywhere.
        again = subprocess.run(
            [
                "storescu",
                "-xs",
                "-aet",
                "MODALITY",
                "-aec",
                AE_TITLE,
                "127.0.0.1",
                str(listener_port),
                *map(str, paths),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert again.returncode == 0, again.stderr

        arrival = wait_for(
            lambda: DicomArrival.objects.filter(study_instance_uid=study_uid, state="filed").first(),
            timeout=60,
            message="the arrival to be filed",
        )
        study = arrival.study
        delivered = wait_for(
            lambda: _sent(study, ResultDelivery.Kind.MODEL_RESULT),
            timeout=400,
            message=f"the result to reach Orthanc\n{worker.output()[-3000:]}",
        )
        assert Radiograph.objects.filter(study=study).count() == 3
        assert Prediction.objects.filter(radiograph__study=study).count() == 3
        model_sr = _check_results_in_orthanc(orthanc, study, study_uid)
        assert model_sr["SOPInstanceUID"] == delivered.sr_sop_instance_uid

        # The clinician confirms every image: the final-call SR follows, naming the first.
        clinician = ClinicianFactory.create(
            username=f"reader-{uuid.uuid4().hex[:6]}", first_name="Ada", last_name="Reader"
        )
        for radiograph in study.radiographs.all():
            services.review_submit(radiograph_id=radiograph.pk, reviewer=clinician, decision="confirm")
        final = wait_for(
            lambda: _sent(study, ResultDelivery.Kind.FINAL_CALL),
            timeout=120,
            message="the final call in Orthanc",
        )
        held = {t["SOPInstanceUID"]: t for t in orthanc.instances_of_study(study_uid)}
        final_sr = held[final.sr_sop_instance_uid]
        assert final_sr["VerificationFlag"] == "VERIFIED"
        predecessor = final_sr["PredecessorDocumentsSequence"][0]["ReferencedSeriesSequence"][0]
        assert (
            predecessor["ReferencedSOPSequence"][0]["ReferencedSOPInstanceUID"]
            == delivered.sr_sop_instance_uid
        )
        assert len(held) == 5  # 1 + 1 SR, 3 Secondary Captures: nothing twice despite the re-send
        print(f"\nOrthanc holds for study {study_uid}:\n{orthanc.describe(study_uid)}")  # the run's record
    finally:
        _stop(listener)
        worker.stop()


def test_stow_rs_in_and_out(
    live_server: Any, worker_env: dict[str, str], orthanc: Orthanc, tmp_path: Path
) -> None:
    env = _env(worker_env, orthanc.dicomweb_url, free_port())
    worker = start_worker(env, name="stow", beat=True)
    try:
        clinician = ClinicianFactory.create(username=f"stow-{uuid.uuid4().hex[:6]}")
        token = Token.objects.create(user=clinician).key
        study_uid = generate_uid()
        boundary = uuid.uuid4().hex
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + path.read_bytes()
                + b"\r\n"
                for path in _write_study(tmp_path, study_uid, accession=f"STOW-{uuid.uuid4().hex[:8]}")
            )
            + f"--{boundary}--\r\n".encode()
        )
        response = requests.post(
            f"{live_server.url}/dicomweb/studies",
            data=body,
            headers={
                "Authorization": f"Token {token}",
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["00081199"]["Value"]) == 3
        # STOW-RS arrivals are filed by the beat's housekeeping (no listener runs in this test).
        arrival = wait_for(
            lambda: DicomArrival.objects.filter(study_instance_uid=study_uid, state="filed").first(),
            timeout=60,
            message="the arrival to be filed",
        )
        study = arrival.study
        delivered = wait_for(
            lambda: _sent(study, ResultDelivery.Kind.MODEL_RESULT),
            timeout=400,
            message=f"the result to reach Orthanc by STOW-RS\n{worker.output()[-3000:]}",
        )
        assert delivered.destination == f"STOW-RS {orthanc.dicomweb_url}"
        _check_results_in_orthanc(orthanc, study, study_uid)
    finally:
        worker.stop()
