"""Hospital integration over DICOM: studies in (C-STORE listener, DICOMweb STOW-RS), results out (DICOM SR and
Secondary Capture sent to the PACS). FHIR lives in radiology.fhir."""
