"""The service's own web page: upload three photos, follow the job, view and download the head."""
