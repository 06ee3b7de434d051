"""Every read of the clinical records that views, API views and the admin share.

Clinical data is visible to clinicians and admins only; `require_clinical` scopes every queryset, so a
caller without the role gets an empty result rather than someone else's patients.
One module per topic; callers import from this package (`from radiology import selectors`).
"""

from radiology.selectors.audit import (
    AgreementPoint,
    ModelVersionAudit,
    Proportion,
    audit_agreement_by_day,
    audit_model_versions,
    prediction_export_rows,
    review_recent,
)
from radiology.selectors.batches import batch_get, batch_progress
from radiology.selectors.radiographs import (
    export_radiographs,
    prediction_get,
    radiograph_awaiting_review,
    radiograph_current_prediction,
    radiograph_get,
    radiograph_get_with_results,
    radiograph_latest_review,
    radiograph_list,
    radiograph_queryset_for,
    radiograph_refusal,
    radiograph_reviews,
    radiograph_tallied_count,
    radiographs_awaiting_review,
    radiographs_with_results,
)
from radiology.selectors.reviews import StudyOutcome, StudyVerdict, Verdict, study_outcome, study_verdict
from radiology.selectors.scoping import require_admin, require_clinical
from radiology.selectors.studies import (
    next_study_to_review,
    start_of_day,
    study_get,
    study_queue,
    study_queue_counts,
    study_queue_neighbours,
    study_queue_with_results,
    study_search,
    study_tallied_count,
)

__all__ = [
    "AgreementPoint",
    "ModelVersionAudit",
    "Proportion",
    "StudyOutcome",
    "StudyVerdict",
    "Verdict",
    "audit_agreement_by_day",
    "audit_model_versions",
    "batch_get",
    "batch_progress",
    "export_radiographs",
    "next_study_to_review",
    "prediction_export_rows",
    "prediction_get",
    "radiograph_awaiting_review",
    "radiograph_current_prediction",
    "radiograph_get",
    "radiograph_get_with_results",
    "radiograph_latest_review",
    "radiograph_list",
    "radiograph_queryset_for",
    "radiograph_refusal",
    "radiograph_reviews",
    "radiograph_tallied_count",
    "radiographs_awaiting_review",
    "radiographs_with_results",
    "require_admin",
    "require_clinical",
    "review_recent",
    "start_of_day",
    "study_get",
    "study_outcome",
    "study_queue",
    "study_queue_counts",
    "study_queue_neighbours",
    "study_queue_with_results",
    "study_search",
    "study_tallied_count",
    "study_verdict",
]
