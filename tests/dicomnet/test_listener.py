"""The C-STORE SCP on a real socket: pynetdicom and dcmtk's storescu as the modality."""

from __future__ import annotations

import io
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE

from radiology.dicomnet.listener import DicomListener, FilingLoop, ListenerConfig
from radiology.dicomnet.models import DicomArrival, DicomInstance
from radiology.models import Study
from tests.dicomnet import factory

pytestmark = pytest.mark.django_db(transaction=True)

AE_TITLE = "FRTEST"


@pytest.fixture
def listener(settings: Any) -> Iterator[DicomListener]:
    running = DicomListener(
        ListenerConfig(
            ae_title=AE_TITLE,
            host="127.0.0.1",
            port=0,
            allowed_calling_ae_titles=("MODALITY", "STORESCU"),
            network_timeout=10,
        )
    )
    running.start()
    yield running
    running.stop()


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"{generate_uid()}.dcm"
    path.write_bytes(data)
    return path


def send(
    port: int, paths: list[Path], *, calling: str = "MODALITY", called: str = AE_TITLE
) -> list[int] | None:
    """C-STORE each file in one association; the statuses, or None when the association was refused."""
    ae = AE(ae_title=calling)
    # One presentation context per (SOP class, transfer syntax) the files use, as storescu proposes them.
    pairs = set()
    for path in paths:
        header = dcmread(path, stop_before_pixels=True)
        pairs.add((str(header.file_meta.MediaStorageSOPClassUID), str(header.file_meta.TransferSyntaxUID)))
    for sop_class, transfer_syntax in sorted(pairs):
        ae.add_requested_context(sop_class, transfer_syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None
    try:
        return [int(assoc.send_c_store(path).Status) for path in paths]
    finally:
        assoc.release()


def half_a_frame(data: bytes) -> bytes:
    """A well-formed file whose JPEG-LS frame stops halfway (a modality's encoder cut short)."""
    dataset = dcmread(io.BytesIO(data))
    frame = next(generate_frames(dataset.PixelData))
    dataset.PixelData = encapsulate([frame[: len(frame) // 2]])
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def inbox_files() -> list[Path]:
    folder = Path(django_settings.MEDIA_ROOT) / "dicom-inbox"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_it_answers_each_instance_with_the_right_status(listener: DicomListener, tmp_path: Path) -> None:
    good = write(tmp_path, factory.radiograph())
    compressed = write(tmp_path, factory.radiograph(syntax="jpeg_ls_lossless"))
    ct = write(tmp_path, factory.radiograph(sop_class=CTImageStorage, modality="CT"))
    mr_in_dx = write(tmp_path, factory.radiograph(modality="MR"))
    broken = write(tmp_path, half_a_frame(factory.radiograph(syntax="jpeg_ls_lossless")))

    statuses = send(listener.port, [good, compressed, ct, mr_in_dx, broken, good])

    # stored, stored, SOP class not supported, data set does not match, cannot understand, already stored
    assert statuses == [0x0000, 0x0000, 0x0122, 0xA900, 0xC000, 0x0000]
    assert DicomInstance.objects.count() == 2
    assert {i.calling_ae_title for i in DicomInstance.objects.all()} == {"MODALITY"}


def test_an_unknown_calling_ae_title_is_refused(listener: DicomListener, tmp_path: Path) -> None:
    assert send(listener.port, [write(tmp_path, factory.radiograph())], calling="STRANGER") is None
    assert send(listener.port, [write(tmp_path, factory.radiograph())], called="SOMEONEELSE") is None
    assert DicomInstance.objects.count() == 0


def test_storescu_sends_a_study_in_one_association(listener: DicomListener, tmp_path: Path) -> None:
    study_uid = generate_uid()
    paths = [
        write(
            tmp_path, factory.radiograph(study_uid=study_uid, syntax="jpeg_lossless_sv1", modality=modality)
        )
        for modality in ("DX", "CR", "DX")
    ]
    # -xs: propose JPEG lossless (SV1), as a modality that stores its radiographs compressed does.
    command = ["storescu", "-xs", "-aet", "STORESCU", "-aec", AE_TITLE, "127.0.0.1", str(listener.port)]
    first = subprocess.run([*command, *map(str, paths)], capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*command, *map(str, paths)], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    arrival = DicomArrival.objects.get(study_instance_uid=study_uid)
    assert arrival.instances.count() == 3
    assert {i.transfer_syntax_uid for i in arrival.instances.all()} == {"1.2.840.10008.1.2.4.70"}


@pytest.mark.parametrize(
    ("syntax", "option", "uid"),
    [("jpeg2000_lossless", "-xv", "1.2.840.10008.1.2.4.90"), ("rle", "-xr", "1.2.840.10008.1.2.5")],
)
def test_storescu_sends_other_compressed_syntaxes(
    listener: DicomListener, tmp_path: Path, syntax: str, option: str, uid: str
) -> None:
    path = write(tmp_path, factory.radiograph(syntax=syntax))
    run = subprocess.run(
        [
            "storescu",
            option,
            "-aet",
            "STORESCU",
            "-aec",
            AE_TITLE,
            "127.0.0.1",
            str(listener.port),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert DicomInstance.objects.get().transfer_syntax_uid == uid


class CuttingProxy:
    """Forwards one connection to the listener and drops it after `limit` bytes from the sender."""

    def __init__(self, target_port: int, limit: int) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.target_port = target_port
        self.limit = limit
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client, _ = self.server.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))

        def back() -> None:
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=back, daemon=True).start()
        forwarded = 0
        try:
            while forwarded < self.limit and (data := client.recv(min(65536, self.limit - forwarded))):
                upstream.sendall(data)
                forwarded += len(data)
        finally:
            for sock in (client, upstream, self.server):
                sock.close()


def test_a_dropped_association_leaves_nothing(listener: DicomListener, tmp_path: Path) -> None:
    big = write(tmp_path, factory.radiograph(size=1200))  # ~2.9 MB uncompressed, 12-bit
    proxy = CuttingProxy(listener.port, limit=1_000_000)
    run = subprocess.run(
        [
            "storescu",
            "-to",
            "5",
            "-aet",
            "STORESCU",
            "-aec",
            AE_TITLE,
            "127.0.0.1",
            str(proxy.port),
            str(big),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode != 0
    time.sleep(0.5)  # the listener notices the closed socket
    assert (DicomArrival.objects.count(), DicomInstance.objects.count()) == (0, 0)
    assert inbox_files() == []
    # The modality sends it again on a good connection: stored once.
    assert send(listener.port, [big]) == [0x0000]
    assert DicomInstance.objects.count() == 1


def test_the_listener_files_quiet_studies_itself(
    listener: DicomListener, tmp_path: Path, settings: Any
) -> None:
    settings.DICOM_QUIET_PERIOD_SECONDS = 0.5
    loop = FilingLoop(interval=0.2)
    loop.start()
    try:
        study_uid = generate_uid()
        paths = [write(tmp_path, factory.radiograph(study_uid=study_uid, modality=m)) for m in ("DX", "CR")]
        assert send(listener.port, paths) == [0, 0]
        deadline = time.monotonic() + 20
        while not Study.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        loop.stop()
        loop.join(timeout=10)
    study = Study.objects.get()
    assert study.radiographs.count() == 2
    assert DicomArrival.objects.get().state == DicomArrival.State.FILED
