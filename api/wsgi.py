"""The WSGI entry gunicorn serves: ``gunicorn api.wsgi:app`` (settings from the environment)."""
import logging

from api import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

app = create_app()
