from django.apps import AppConfig


class RadiologyConfig(AppConfig):
    name = "radiology"
    verbose_name = "Radiology"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import logging

        import pydicom.config

        from radiology import signals  # noqa: F401 - connects the receivers

        # pydicom warns about malformed values by quoting them, and DICOM values include patient names
        # and IDs: such warnings must not reach the logs. Malformed files are refused by ingest instead.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        logging.getLogger("pydicom").setLevel(logging.ERROR)
