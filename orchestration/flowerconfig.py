"""Flower's configuration file, wherever Flower starts: orchestration.celery points FLOWER_CONF
here (Flower would otherwise read ./flowerconfig.py from its working directory, and start
without this check when there is none). Flower reads it after FLOWER_* variables and before its
command line."""

from tornado.options import options as _flower

from orchestration.celery import check_flower_auth as _check_flower_auth

# Names without a leading underscore here would be taken as Flower options.
_check_flower_auth(list(_flower.basic_auth or []), _flower.auth or None)
