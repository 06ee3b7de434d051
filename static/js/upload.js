// Upload form: when the first chosen file is DICOM, read its patient and study attributes on the server
// and fill the form fields that are still blank (the clinician can correct them before submitting).
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = form.querySelector('input[type="file"]');
  const status = document.getElementById("dicom-status");
  const mapping = {
    PatientID: "mrn",
    PatientName: "patient_name",
    PatientBirthDate: "date_of_birth",
    AccessionNumber: "accession_number",
  };
  const sexes = { F: "F", M: "M", O: "O" };
  const regions = {
    HAND: "hand", WRIST: "wrist", FOREARM: "forearm", ELBOW: "elbow", HUMERUS: "humerus",
    SHOULDER: "shoulder", HIP: "hip", PELVIS: "pelvis", FEMUR: "femur", KNEE: "knee", LEG: "leg",
    ANKLE: "ankle", FOOT: "foot", SPINE: "spine",
  };

  function fill(name, value) {
    const field = form.elements.namedItem(name);
    if (field && !field.value && value) field.value = value;
  }

  input.addEventListener("change", async function () {
    status.textContent = "";
    const file = input.files && input.files[0];
    if (!file) return;
    const body = new FormData();
    body.append("file", file);
    body.append("csrfmiddlewaretoken", form.elements.namedItem("csrfmiddlewaretoken").value);
    try {
      const response = await fetch(form.dataset.inspectUrl, { method: "POST", body: body, credentials: "same-origin" });
      const result = await response.json();
      if (!response.ok) {
        status.textContent = file.name + ": " + result.error;
        return;
      }
      if (result.format !== "DICOM") return;
      const a = result.attributes;
      for (const key in mapping) fill(mapping[key], a[key]);
      fill("sex", sexes[(a.PatientSex || "").toUpperCase()]);
      fill("body_region", regions[(a.BodyPartExamined || "").toUpperCase()]);
      status.textContent = "Patient and study details were read from the DICOM file; check them before uploading.";
    } catch (err) {
      status.textContent = "";
    }
  });
})();
