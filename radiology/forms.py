from __future__ import annotations

from typing import Any, ClassVar

from django import forms

from radiology.models import Band, BodyRegion, Sex, Study


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that takes several files (Django's documented recipe)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "widget",
            MultipleFileInput(
                attrs={"accept": ".png,.jpg,.jpeg,.dcm,image/png,image/jpeg,application/dicom"}
            ),
        )
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        # Each file's content is judged by ingest, which names the file in its answer; Django's own
        # per-file check would refuse an empty file without saying which one.
        items = list(data) if isinstance(data, list | tuple) else ([data] if data else [])
        if not items and self.required:
            raise forms.ValidationError(self.error_messages["required"], code="required")
        return items


class StudyUploadForm(forms.Form):
    """Patient and study fields may stay blank when the DICOM files carry them."""

    mrn = forms.CharField(label="Medical record number", max_length=64, required=False)
    patient_name = forms.CharField(label="Patient name", max_length=200, required=False)
    date_of_birth = forms.DateField(
        label="Date of birth", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    sex = forms.ChoiceField(label="Sex", choices=[("", "—"), *Sex.choices], required=False)
    accession_number = forms.CharField(label="Accession number", max_length=64, required=False)
    body_region = forms.ChoiceField(
        label="Body region", choices=[("", "From DICOM / choose…"), *BodyRegion.choices], required=False
    )
    study_date = forms.DateField(
        label="Study date", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    clinical_notes = forms.CharField(
        label="Clinical notes", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    confirm_patient_mismatch = forms.BooleanField(
        label="File it under the details typed here although the DICOM file names another patient "
        "(recorded in the audit trail)",
        required=False,
    )
    # Django moves declared fields off the class, so this does not shadow BaseForm.files at run time.
    files = MultipleFileField(label="Radiographs (PNG, JPEG or DICOM)")  # type: ignore[assignment]


class QueueFilterForm(forms.Form):
    """The queue's tab and filters from the query string; a bad value is dropped, never an error page."""

    ALL = "all"

    state = forms.ChoiceField(
        choices=[*Study.State.choices, (ALL, "All")], required=False, widget=forms.HiddenInput
    )
    SORTS: ClassVar[dict[str, tuple[str, ...]]] = {
        # name: order (a leading "-" in the query string reverses it)
        "patient": ("patient__name", "pk"),
        "accession": ("accession_number", "pk"),
        "region": ("body_region", "created_at", "pk"),
        "waiting": ("created_at", "pk"),
        "images": ("radiograph_count", "created_at", "pk"),
        "study_date": ("study_date", "pk"),
    }

    q = forms.CharField(
        label="Name, MRN or accession",
        required=False,
        max_length=64,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, MRN or accession number"}),
    )
    band = forms.ChoiceField(label="Model band", choices=[("", "All bands"), *Band.choices], required=False)
    sort = forms.CharField(required=False, max_length=20, widget=forms.HiddenInput)
    body_region = forms.ChoiceField(
        label="Body region", choices=[("", "All regions"), *BodyRegion.choices], required=False
    )
    date_from = forms.DateField(
        label="Uploaded from", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(label="to", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def filters(self) -> dict[str, Any]:
        """The valid filters (tab excluded) as selector keyword arguments."""
        data = self.cleaned_data if self.is_bound else {}
        valid = {name: value for name, value in data.items() if name not in self.errors}
        date_from, date_to = valid.get("date_from"), valid.get("date_to")
        if date_from and date_to and date_from > date_to:
            date_from, date_to = date_to, date_from  # reversed: read as meant (reversed_dates() says so)
        return {
            "body_region": valid.get("body_region") or None,
            "date_from": date_from,
            "date_to": date_to,
            "search": (valid.get("q") or "").strip() or None,
            "band": valid.get("band") or None,
        }

    def reversed_dates(self) -> bool:
        data = self.cleaned_data if self.is_bound else {}
        first, last = data.get("date_from"), data.get("date_to")
        return bool(first and last and first > last)

    def ordering(self) -> tuple[str, tuple[str, ...]] | None:
        """The chosen column sort as (query value, order_by fields), or None for the queue's own order."""
        value = (self.cleaned_data.get("sort") or "") if self.is_bound else ""
        fields = self.SORTS.get(value.lstrip("-"))
        if fields is None:
            return None
        if value.startswith("-"):
            fields = tuple(f[1:] if f.startswith("-") else f"-{f}" for f in fields)
        return value, fields

    def current_state(self) -> str:
        if self.is_bound and "state" not in self.errors:
            return str(self.cleaned_data.get("state") or Study.State.AWAITING_REVIEW)
        return Study.State.AWAITING_REVIEW

    def clean(self) -> dict[str, Any]:
        # Invalid fields are dropped rather than reported: is_valid() is only used to clean what is good.
        return self.cleaned_data


class DateRangeForm(forms.Form):
    date_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    model_version = forms.CharField(required=False, max_length=100, widget=forms.HiddenInput)

    def range(self) -> dict[str, Any]:
        if not self.is_bound:
            return {"date_from": None, "date_to": None}
        self.is_valid()
        data = {name: value for name, value in self.cleaned_data.items() if name not in self.errors}
        return {"date_from": data.get("date_from"), "date_to": data.get("date_to")}
