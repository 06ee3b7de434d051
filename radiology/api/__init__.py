"""The REST API (/api/v1/): thin DRF views over radiology.services (writes) and selectors (reads)."""
