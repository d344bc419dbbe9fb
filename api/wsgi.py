"""The WSGI entry gunicorn serves: ``gunicorn api.wsgi:app`` (settings from the environment)."""
from api import create_app
from jobs import logs
from jobs.settings import Settings

settings = Settings.from_env()
logs.configure(settings.log_json)

app = create_app(settings)
