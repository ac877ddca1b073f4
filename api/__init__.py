"""The landscape web service: REST API, job queue and worker around the ``landscape`` library.

``api.app:create_app(settings)`` builds the FastAPI app; ``api.worker.Worker`` runs queued jobs.
Neither is imported by the library (``landscape/`` never imports ``api/``).
"""
