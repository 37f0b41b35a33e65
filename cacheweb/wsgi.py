import os

from django.core.wsgi import get_wsgi_application

from cacheweb.chunked import ChunkedBodyMiddleware
from cacheweb.early import RefuseBeforeReading

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")

# Outermost first: refusals are decided from headers and URL before any body is read.
application = RefuseBeforeReading(ChunkedBodyMiddleware(get_wsgi_application()))
