"""Every write to the clinical records. Views, API views, admin actions, commands and tasks call these.

Functions are keyword-only and named <entity>_<action>. Each either completes or leaves nothing behind:
database work is atomic, and files written to storage are removed again if the transaction fails.
One module per topic; callers import from this package (`from radiology import services`).
"""

from radiology.services.audit import audit_event, audit_record
from radiology.services.batches import BatchItemInput, BatchItemResult, BatchSubmitResult, batch_submit
from radiology.services.classification import (
    PredictionResult,
    prediction_store,
    prediction_store_batch,
    radiograph_claim,
    radiograph_claim_batch,
    radiograph_fail,
    radiograph_read_image,
    radiograph_release,
    radiograph_retry,
    radiographs_resend_stale,
    radiographs_set_current_prediction,
)
from radiology.services.errors import ServiceError
from radiology.services.idempotency import idempotency_purge_expired
from radiology.services.reading import (
    adjudication_decide,
    adjudication_open_if_needed,
    adjudication_trigger,
    reader_blinding,
    reader_is_blinded,
    reader_setting_update,
    site_blinded_default_update,
    site_settings_get,
    study_mark_reading,
    study_release_reading,
    unaided_read_record,
)
from radiology.services.reconcile import ReconcileResult, idempotency_expire_stale, storage_reconcile
from radiology.services.reviews import (
    override_reasons_for,
    review_submit,
    study_confirm,
    study_read_without_model,
)
from radiology.services.storage import cleanup_files_on_error, save_file
from radiology.services.studies import (
    StudyDetails,
    StudyUploadResult,
    UploadedImage,
    radiograph_from_image,
    study_create,
)
from radiology.services.tallies import tallies_rebuild, trigger_tallies_recount
from radiology.services.tokens import api_token_issue
from radiology.services.triage import (
    current_predictions,
    studies_refresh_triage,
    study_refresh_triage,
    study_verdict_of,
)

__all__ = [
    "BatchItemInput",
    "BatchItemResult",
    "BatchSubmitResult",
    "PredictionResult",
    "ReconcileResult",
    "ServiceError",
    "StudyDetails",
    "StudyUploadResult",
    "UploadedImage",
    "adjudication_decide",
    "adjudication_open_if_needed",
    "adjudication_trigger",
    "api_token_issue",
    "audit_event",
    "audit_record",
    "batch_submit",
    "cleanup_files_on_error",
    "current_predictions",
    "idempotency_expire_stale",
    "idempotency_purge_expired",
    "override_reasons_for",
    "prediction_store",
    "prediction_store_batch",
    "radiograph_claim",
    "radiograph_claim_batch",
    "radiograph_fail",
    "radiograph_from_image",
    "radiograph_read_image",
    "radiograph_release",
    "radiograph_retry",
    "radiographs_resend_stale",
    "radiographs_set_current_prediction",
    "reader_blinding",
    "reader_is_blinded",
    "reader_setting_update",
    "review_submit",
    "save_file",
    "site_blinded_default_update",
    "site_settings_get",
    "storage_reconcile",
    "studies_refresh_triage",
    "study_confirm",
    "study_create",
    "study_mark_reading",
    "study_read_without_model",
    "study_refresh_triage",
    "study_release_reading",
    "study_verdict_of",
    "tallies_rebuild",
    "trigger_tallies_recount",
    "unaided_read_record",
]
