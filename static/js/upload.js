// Upload form: files by drag-and-drop or the picker, listed (with the ones over the size limit flagged)
// before anything is sent; a DICOM file's patient and study attributes are read here in the browser
// (its header only) to fill the blank fields, so the file travels once, with the upload. The form is
// posted in the background: a refusal (a duplicate accession number, details that differ from the DICOM
// header) is shown without losing the chosen files.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = form.querySelector('input[type="file"]');
  const zone = document.getElementById("drop-zone");
  const list = document.getElementById("file-list");
  const status = document.getElementById("dicom-status");
  const maxBytes = Number(form.dataset.maxBytes);
  const maxFiles = Number(form.dataset.maxFiles);
  const button = document.getElementById("upload-button");
  let files = [];

  const TAGS = {
    "00100020": "PatientID", "00100010": "PatientName", "00100030": "PatientBirthDate", "00100040": "PatientSex",
    "00080050": "AccessionNumber", "00080020": "StudyDate", "00180015": "BodyPartExamined",
  };
  const REGIONS = {
    HAND: "hand", FINGER: "hand", WRIST: "wrist", FOREARM: "forearm", ELBOW: "elbow", HUMERUS: "humerus", ARM: "humerus",
    SHOULDER: "shoulder", CLAVICLE: "shoulder", HIP: "hip", PELVIS: "pelvis", FEMUR: "femur", THIGH: "femur",
    KNEE: "knee", LEG: "leg", "LOWER LEG": "leg", TIBIA: "leg", ANKLE: "ankle", FOOT: "foot", TOE: "foot",
    SPINE: "spine", CSPINE: "spine", TSPINE: "spine", LSPINE: "spine",
  };
  const LONG_VR = ["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"];

  // The header of a DICOM file (Part 10): the tags above, read from explicit or implicit VR little endian
  // data elements up to the pixel data. Returns null for anything else (the server still checks it all).
  function readDicomHeader(buffer) {
    const view = new DataView(buffer);
    if (buffer.byteLength < 136 || String.fromCharCode(view.getUint8(128), view.getUint8(129), view.getUint8(130), view.getUint8(131)) !== "DICM") return null;
    const text = new TextDecoder("latin1");
    const found = {};
    let offset = 132;
    let explicit = true;
    let syntax = "";
    function tagAt(at) {
      return (view.getUint16(at, true).toString(16).padStart(4, "0") + view.getUint16(at + 2, true).toString(16).padStart(4, "0")).toUpperCase();
    }
    function skipUndefined(at) {
      // Items and sequences of undefined length: walk to the matching sequence delimiter.
      let depth = 0;
      while (at + 8 <= buffer.byteLength) {
        const tag = tagAt(at);
        const length = view.getUint32(at + 4, true);
        if (tag === "FFFEE000") { at += 8; if (length !== 0xffffffff) at += length; else depth += 1; continue; }
        if (tag === "FFFEE00D") { at += 8; depth -= 1; continue; }
        if (tag === "FFFEE0DD") { at += 8; if (depth <= 0) return at; depth -= 1; continue; }
        const next = element(at, true);
        if (next < 0) return -1;
        at = next;
      }
      return -1;
    }
    function element(at, nested) {
      if (at + 8 > buffer.byteLength) return -1;
      const group = view.getUint16(at, true);
      const tag = tagAt(at);
      const isExplicit = group === 0x0002 ? true : explicit;
      let vr = "";
      let length;
      let start;
      if (isExplicit) {
        vr = String.fromCharCode(view.getUint8(at + 4), view.getUint8(at + 5));
        if (LONG_VR.indexOf(vr) !== -1) { length = view.getUint32(at + 8, true); start = at + 12; }
        else { length = view.getUint16(at + 6, true); start = at + 8; }
      } else {
        length = view.getUint32(at + 4, true);
        start = at + 8;
      }
      if (tag === "7FE00010") return -1; // pixel data: the header is over
      if (length === 0xffffffff) return skipUndefined(start);
      if (start + length > buffer.byteLength) return -1;
      if (!nested && TAGS[tag]) found[TAGS[tag]] = text.decode(new Uint8Array(buffer, start, length)).replace(/\0/g, "").trim();
      if (tag === "00020010") syntax = text.decode(new Uint8Array(buffer, start, length)).replace(/\0/g, "").trim();
      return start + length;
    }
    while (offset + 8 <= buffer.byteLength) {
      const group = view.getUint16(offset, true);
      if (group !== 0x0002 && syntax) {
        if (syntax === "1.2.840.10008.1.2") explicit = false;
        else if (syntax === "1.2.840.10008.1.2.2" || syntax === "1.2.840.10008.1.2.1.99") return found; // big endian, deflated
        syntax = "";
      }
      const next = element(offset, false);
      if (next < 0) break;
      offset = next;
    }
    return found;
  }

  function fill(name, value) {
    const field = form.elements.namedItem(name);
    if (field && !field.value && value) field.value = value;
  }

  function isoDate(value) {
    return /^\d{8}$/.test(value || "") ? value.slice(0, 4) + "-" + value.slice(4, 6) + "-" + value.slice(6, 8) : "";
  }

  async function prefill(file) {
    const header = readDicomHeader(await file.slice(0, 1024 * 1024).arrayBuffer());
    if (!header) return false;
    fill("mrn", header.PatientID);
    fill("accession_number", header.AccessionNumber);
    // DICOM names are Family^Given^Middle^Prefix^Suffix (then "=" and other writings): the form shows
    // "Prefix Given Middle Family Suffix", as the server files a name from DICOM (radiology/ingest.py).
    const parts = (header.PatientName || "").split("=")[0].split("^").map(function (p) { return p.trim(); });
    fill("patient_name", [parts[3], parts[1], parts[2], parts[0], parts[4]].filter(Boolean).join(" "));
    fill("date_of_birth", isoDate(header.PatientBirthDate));
    fill("study_date", isoDate(header.StudyDate));
    fill("sex", { F: "F", M: "M", O: "O" }[(header.PatientSex || "").toUpperCase()]);
    fill("body_region", REGIONS[(header.BodyPartExamined || "").toUpperCase()]);
    return true;
  }

  function size(bytes) {
    return bytes >= 1024 * 1024 ? (bytes / 1024 / 1024).toFixed(1) + " MB" : Math.max(1, Math.round(bytes / 1024)) + " KB";
  }

  function renderList() {
    list.textContent = "";
    files.forEach(function (file, index) {
      const item = document.createElement("li");
      item.textContent = file.name + " · " + size(file.size);
      if (file.size > maxBytes) {
        item.className = "error";
        item.textContent += " — over the " + size(maxBytes) + " limit: it will be refused";
      }
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link-dark";
      remove.textContent = "Remove";
      remove.addEventListener("click", function () { files.splice(index, 1); sync(); });
      item.appendChild(remove);
      list.appendChild(item);
    });
    if (files.length > maxFiles) {
      const item = document.createElement("li");
      item.className = "error";
      item.textContent = files.length + " files: a study holds at most " + maxFiles + ".";
      list.appendChild(item);
    }
  }

  async function sync() {
    // The file input holds what will be sent (also without this script's background post).
    const transfer = new DataTransfer();
    files.forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
    renderList();
    status.textContent = "";
    for (const file of files) {
      try {
        if (await prefill(file)) {
          status.textContent = "Patient and study details were read from " + file.name + "; check them before uploading.";
          break;
        }
      } catch (err) {
        // An unreadable header: the server reads the file on upload and says what is wrong with it.
      }
    }
  }

  function add(chosen) {
    const names = files.map(function (f) { return f.name + ":" + f.size; });
    Array.prototype.forEach.call(chosen, function (file) {
      if (names.indexOf(file.name + ":" + file.size) === -1) files.push(file);
    });
    sync();
  }

  input.addEventListener("change", function () {
    files = [];
    add(input.files);
  });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) add(event.dataTransfer.files);
  });

  function showErrors(answer) {
    form.querySelectorAll(".field-errors").forEach(function (node) { node.textContent = ""; });
    const general = document.getElementById("form-problems");
    general.textContent = "";
    general.hidden = true;
    const filesErrors = document.getElementById("files-errors");
    filesErrors.textContent = "";
    Object.keys(answer.errors || {}).forEach(function (name) {
      const target = name === "files" ? filesErrors
        : (form.querySelector('[data-field="' + name + '"] .field-errors') || general);
      answer.errors[name].forEach(function (message) {
        const p = document.createElement("p");
        p.className = "error";
        p.textContent = message;
        target.appendChild(p);
      });
      if (target === general) general.hidden = false;
    });
    const rejected = document.getElementById("rejected-list");
    rejected.textContent = "";
    (answer.rejected || []).forEach(function (r) {
      const li = document.createElement("li");
      const strong = document.createElement("strong");
      strong.textContent = r.file;
      li.appendChild(strong);
      li.appendChild(document.createTextNode(": " + r.message));
      rejected.appendChild(li);
    });
    rejected.hidden = !(answer.rejected || []).length;
    document.getElementById("confirm-mismatch").hidden = !answer.patient_mismatch && !form.elements.namedItem("confirm_patient_mismatch").checked;
    const first = form.querySelector(".error p, p.error, .field-errors .error");
    if (first) first.scrollIntoView({ block: "center" });
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    button.disabled = true;
    status.textContent = "Uploading…";
    try {
      const response = await fetch(form.action || window.location.href, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      const answer = await response.json();
      if (response.ok && answer.redirect) {
        window.location.assign(answer.redirect);
        return;
      }
      status.textContent = "";
      showErrors(answer);
    } catch (err) {
      status.textContent = "The upload did not reach the server; your files are still chosen. Try again.";
    }
    button.disabled = false;
  });
})();
