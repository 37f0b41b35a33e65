import os

from django.core.wsgi import get_wsgi_application

from cacheweb.chunked import ChunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")

application = ChunkedBodyMiddleware(get_wsgi_application())
