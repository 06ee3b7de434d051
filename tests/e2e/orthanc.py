"""A real PACS for the end-to-end tests: Debian's Orthanc with its DICOMweb plug-in, started on free ports
with a generated configuration (installed by `make dicom-tools`), and a small client for its REST API."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness import free_port

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass
class Orthanc:
    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    ae_title: str = "ORTHANC"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def c_store_destination(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: bytes) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def instances_of_study(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """Every instance Orthanc holds for the study, with its tags (simplified: keyword -> value)."""
        found = self.post("/tools/lookup", study_instance_uid.encode())
        studies = [item["ID"] for item in found if item["Type"] == "Study"]
        if not studies:
            return []
        return [
            self.get(f"/instances/{item['ID']}/tags?simplify")
            for item in self.get(f"/studies/{studies[0]}/instances")
        ]

    def describe(self, study_instance_uid: str) -> str:
        """What Orthanc holds for the study, for a reader: one line per instance, and each SR's content
        tree (concept: value), as the test run's record."""
        lines = []
        for tags in sorted(self.instances_of_study(study_instance_uid), key=lambda t: t.get("Modality", "")):
            lines.append(
                f"{tags.get('Modality')} {tags.get('SOPClassUID')} {tags.get('SOPInstanceUID')} "
                f"series {tags.get('SeriesDescription', '')!r}"
            )
            if tags.get("Modality") == "SR":
                lines.append(
                    f"  {tags.get('CompletionFlag')} {tags.get('VerificationFlag')}, template "
                    f"{tags.get('ContentTemplateSequence', [{}])[0].get('TemplateIdentifier')}"
                )
                lines += _sr_content(tags.get("ContentSequence", []), depth=1)
        return "\n".join(lines)


def _sr_content(items: list[dict[str, Any]], depth: int) -> list[str]:
    lines = []
    for item in items:
        name = (item.get("ConceptNameCodeSequence") or [{}])[0].get("CodeMeaning", item.get("ValueType"))
        value: Any = ""
        if "TextValue" in item:
            value = item["TextValue"]
        elif "ConceptCodeSequence" in item:
            value = item["ConceptCodeSequence"][0].get("CodeMeaning")
        elif "MeasuredValueSequence" in item:
            measured = item["MeasuredValueSequence"][0]
            unit = (measured.get("MeasurementUnitsCodeSequence") or [{}])[0].get("CodeValue", "")
            value = f"{measured.get('NumericValue')} {unit}"
        elif "PersonName" in item:
            value = item["PersonName"]
        elif "UID" in item:
            value = item["UID"]
        elif "GraphicType" in item:
            value = f"{item['GraphicType']} {item.get('GraphicData')}"
        elif "ReferencedSOPSequence" in item:
            value = item["ReferencedSOPSequence"][0].get("ReferencedSOPInstanceUID")
        lines.append(f"{'  ' * depth}{name}: {value}")
        lines += _sr_content(item.get("ContentSequence", []), depth + 1)
    return lines


@contextmanager
def running_orthanc(folder: Path) -> Iterator[Orthanc]:
    http_port, dicom_port = free_port(), free_port()
    storage = folder / "orthanc-storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "fracture-review-tests",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config))
    process = subprocess.Popen(
        [ORTHANC, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder
    )
    orthanc = Orthanc(process, http_port, dicom_port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                orthanc.get("/system")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start (exit {process.poll()})") from None
                time.sleep(0.2)
        yield orthanc
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
