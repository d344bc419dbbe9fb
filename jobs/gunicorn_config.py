"""gunicorn's settings for the API beyond its command line (``gunicorn -c python:jobs.gunicorn_config``,
see ``jobs.localstack.api_command``): with ``LOG_FORMAT=json`` gunicorn's own lines are JSON too,
like the app's (``jobs.logs``).

It lives outside ``api`` on purpose: gunicorn's master process imports it before forking its
workers, and the workers must import the app only after gevent has patched them (the app's pools
and locks made before the patch block a gevent worker).
"""
from jobs import logs
from jobs.settings import Settings

logconfig_dict = logs.gunicorn_logconfig(Settings.from_env().log_json)
